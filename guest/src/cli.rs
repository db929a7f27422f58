//! The component's own command line, for running it under any WASI 0.2 runner
//! (`wasmtime run -S http --dir . imo.wasm pull BASE FINAL -o out.tar`). Parsing is pure.

use crate::ops::Options;
use crate::registry::Credentials;

pub const USAGE: &str = "\
usage: imo <command> [options]

commands:
  pull BASE FINAL -o FILE|-   write the archive of FINAL's blobs that BASE lacks
                              (BASE may be `scratch`: carry every blob)
  vet ARCHIVE|- DESTINATION   check that DESTINATION holds every blob ARCHIVE leaves out
  push ARCHIVE|- DESTINATION  upload what DESTINATION lacks, then tag the image there

options:
  -o, --output FILE|-         where pull writes the archive (`-` for stdout)
  --insecure HOST[:PORT]      reach this registry over plain HTTP (repeatable)
  --mount-from REPOSITORY     at push, mount blobs from this repository of the
                              destination registry (repeatable)
  --creds USER:PASSWORD       credentials for every registry
  --base-creds USER:PASSWORD  credentials for the base image's registry
  --final-creds USER:PASSWORD credentials for the final image's registry
  --dest-creds USER:PASSWORD  credentials for the destination registry
  --platform OS/ARCH[/VARIANT] carry only this platform of an index (repeatable)
  --no-referrers              leave signatures, attestations and SBOMs behind
  --retries N                 retries of a failed request or cut download (default 4)
  -q, --quiet                 print no progress
  -h, --help                  print this help";

#[derive(Debug, PartialEq, Eq)]
pub enum Operation {
    Pull {
        base: String,
        final_ref: String,
        output: String,
    },
    Vet {
        archive: String,
        destination: String,
    },
    Push {
        archive: String,
        destination: String,
    },
    Help,
}

#[derive(Debug)]
pub struct Command {
    pub operation: Operation,
    pub options: Options,
}

fn credentials(flag: &str, value: &str) -> Result<Credentials, String> {
    match value.split_once(':') {
        Some((u, p)) if !u.is_empty() => Ok(Credentials {
            username: u.into(),
            password: p.into(),
        }),
        _ => Err(format!("{flag} wants USER:PASSWORD")),
    }
}

/// Parses arguments after the program name.
pub fn parse(args: &[String]) -> Result<Command, String> {
    let mut options = Options {
        progress: true,
        referrers: true,
        max_retries: crate::registry::Retry::default().attempts,
        ..Options::default()
    };
    let mut positional = Vec::new();
    let mut output = None;
    let mut all_creds = None;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f, Some(v.to_owned())),
            _ => (arg.as_str(), None),
        };
        let mut value = |name: &str| -> Result<String, String> {
            inline
                .clone()
                .or_else(|| it.next().cloned())
                .ok_or_else(|| format!("{name} needs a value"))
        };
        match flag {
            "-h" | "--help" => {
                return Ok(Command {
                    operation: Operation::Help,
                    options,
                });
            }
            "-q" | "--quiet" => options.progress = false,
            "-o" | "--output" => output = Some(value(flag)?),
            "--insecure" => options.insecure_registries.push(value(flag)?),
            "--mount-from" => options.mount_from.push(value(flag)?),
            "--platform" => options.platforms.push(value(flag)?),
            "--no-referrers" => options.referrers = false,
            "--retries" => {
                let v = value(flag)?;
                options.max_retries = v
                    .parse()
                    .map_err(|_| format!("--retries wants a number, not {v:?}"))?;
            }
            "--creds" => all_creds = Some(credentials(flag, &value(flag)?)?),
            "--base-creds" => options.base_credentials = Some(credentials(flag, &value(flag)?)?),
            "--final-creds" => options.final_credentials = Some(credentials(flag, &value(flag)?)?),
            "--dest-creds" => options.push_credentials = Some(credentials(flag, &value(flag)?)?),
            f if f.starts_with('-') && f != "-" => {
                return Err(format!("unknown option {f}\n\n{USAGE}"));
            }
            _ => positional.push(arg.clone()),
        }
    }
    if let Some(c) = all_creds {
        for slot in [
            &mut options.base_credentials,
            &mut options.final_credentials,
            &mut options.push_credentials,
        ] {
            slot.get_or_insert_with(|| c.clone());
        }
    }
    let has_output = output.is_some();
    let operation = match positional.as_slice() {
        [] => return Err(USAGE.into()),
        [cmd, base, fin] if cmd == "pull" => Operation::Pull {
            base: base.clone(),
            final_ref: fin.clone(),
            output: output.ok_or("pull needs -o FILE (or -o - for stdout)")?,
        },
        [cmd, archive, dest] if cmd == "vet" => Operation::Vet {
            archive: archive.clone(),
            destination: dest.clone(),
        },
        [cmd, archive, dest] if cmd == "push" => Operation::Push {
            archive: archive.clone(),
            destination: dest.clone(),
        },
        [cmd, ..] if matches!(cmd.as_str(), "pull" | "vet" | "push") => {
            return Err(format!("{cmd} takes two arguments\n\n{USAGE}"));
        }
        [cmd, ..] => return Err(format!("unknown command {cmd:?}\n\n{USAGE}")),
    };
    if has_output && !matches!(operation, Operation::Pull { .. }) {
        return Err("-o applies only to pull".into());
    }
    Ok(Command { operation, options })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn pull_with_options() {
        let c = parse(&args(
            "pull --insecure h:5000 a b -o out.tar --creds u:p --dest-creds=d:q -q",
        ))
        .unwrap();
        assert_eq!(
            c.operation,
            Operation::Pull {
                base: "a".into(),
                final_ref: "b".into(),
                output: "out.tar".into()
            }
        );
        assert_eq!(c.options.insecure_registries, vec!["h:5000"]);
        assert!(!c.options.progress);
        assert_eq!(c.options.base_credentials.unwrap().username, "u");
        assert_eq!(c.options.push_credentials.unwrap().username, "d");
    }

    #[test]
    fn vet_and_push_read_stdin_with_dash() {
        assert_eq!(
            parse(&args("vet - r/x")).unwrap().operation,
            Operation::Vet {
                archive: "-".into(),
                destination: "r/x".into()
            }
        );
        assert!(matches!(
            parse(&args("push a.tar r/x")).unwrap().operation,
            Operation::Push { .. }
        ));
    }

    #[test]
    fn mistakes_are_explained() {
        for (line, expected) in [
            ("", "usage"),
            ("pull a b", "needs -o"),
            ("pull a", "two arguments"),
            ("frob a b", "unknown command"),
            ("vet a b --bogus", "unknown option --bogus"),
            ("vet a b -o x", "only to pull"),
            ("pull a b -o", "needs a value"),
            ("pull a b -o x --creds nopass", "USER:PASSWORD"),
        ] {
            let err = parse(&args(line)).unwrap_err();
            assert!(err.contains(expected), "{line:?}: {err}");
        }
        assert_eq!(parse(&args("--help")).unwrap().operation, Operation::Help);
    }
}
