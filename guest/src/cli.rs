//! The component's own command line, for running it under any WASI 0.2 runner
//! (`wasmtime run -S http --dir . imo.wasm pull BASE FINAL -o out.tar`). Parsing is pure.

use crate::ops::Options;
use crate::registry::Credentials;

pub const USAGE: &str = "\
usage: imo <command> [options]

commands:
  pull BASE FINAL... -o FILE|-
                              write the archive of the FINAL images' blobs that BASE
                              lacks (BASE may be `scratch`: carry every blob)
  pull --base BASE|--have INVENTORY ... FINAL... -o FILE|-
                              the same against several bases and inventories: every
                              argument is then a final image
  inventory SOURCE... [--archive FILE]... -o FILE|-
                              write what SOURCE repositories (all tags, or the tag
                              named) and shipped archives hold, for pull --have
  verify ARCHIVE|-            check every blob's size and digest and every reference,
                              with no registry; list what the destination must hold
  ls ARCHIVE|- [--json]       list the images, tags, platforms, what is carried and
                              what is left to the destination
  vet ARCHIVE|- DESTINATION   check that DESTINATION holds every blob ARCHIVE leaves out
  push ARCHIVE|- DESTINATION  upload what DESTINATION lacks, then tag the image there;
                              for an archive of several images DESTINATION is a
                              prefix REGISTRY[/PATH] each image's repository goes under

options:
  -o, --output FILE|-         where pull and inventory write (`-` for stdout)
  --base REF                  pull: a base image (repeatable)
  --have FILE                 pull: an inventory of what the site holds (repeatable)
  --deltas                    pull: carry a layer the bases lack as a delta against
                              their layers where that is under half its size
  --archive FILE              inventory: an archive already shipped (repeatable)
  --map FINAL=DESTINATION     vet, push: where one image of the archive goes (repeatable)
  --insecure HOST[:PORT]      reach this registry over plain HTTP (repeatable)
  --mount-from REPOSITORY     at push, mount blobs from this repository of the
                              destination registry (repeatable)
  --mount-from-archive        vet, push: also look for and mount blobs in the
                              repositories the archive names (trusts the archive)
  --creds USER:PASSWORD       credentials for every registry
  --base-creds USER:PASSWORD  credentials for the base image's registry
  --final-creds USER:PASSWORD credentials for the final image's registry
  --dest-creds USER:PASSWORD  credentials for the destination registry
  --platform OS/ARCH[/VARIANT] carry only this platform of an index (repeatable)
  --no-referrers              leave signatures, attestations and SBOMs behind
  --retries N                 retries of a failed request or cut transfer (default 4)
  --chunk-size SIZE           push: upload blobs in PATCH chunks of SIZE bytes (K, M,
                              G: binary multiples) instead of one PUT each
  --timeout SECS              seconds a registry may stay silent, before the answer
                              or between bytes of it, before the request fails and
                              is retried (default 60)
  -q, --quiet                 print no progress
  -h, --help                  print this help";

#[derive(Debug, PartialEq, Eq)]
pub enum Operation {
    Pull {
        bases: Vec<String>,
        /// Inventory files.
        haves: Vec<String>,
        finals: Vec<String>,
        output: String,
    },
    Inventory {
        sources: Vec<String>,
        archives: Vec<String>,
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
    /// Check every blob of an archive, offline.
    Verify {
        archive: String,
    },
    /// Describe an archive's head, as a table or as JSON.
    Ls {
        archive: String,
        json: bool,
    },
    Help,
}

#[derive(Debug)]
pub struct Command {
    pub operation: Operation,
    pub options: Options,
    pub timeouts: Timeouts,
}

/// How long, in seconds, a request may wait; set on every wasi-http request, so a runner
/// that honours them never waits for ever on a silent registry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// To connect.
    pub connect_s: u64,
    /// From the request sent to the first byte of the answer.
    pub first_byte_s: u64,
    /// Between two pieces of the answer.
    pub between_bytes_s: u64,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect_s: 30,
            first_byte_s: 60,
            between_bytes_s: 60,
        }
    }
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

/// A size in bytes: a number, optionally followed by `K`, `M` or `G` (binary multiples,
/// with or without `i`/`iB`/`B`), as `--chunk-size` takes it. At least 1.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let bad = || format!("a size is a number of bytes, optionally with K, M, G or T, not {s:?}");
    let t = s.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(digits);
    let shift = match unit.to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "K" | "KB" | "KI" | "KIB" => 10,
        "M" | "MB" | "MI" | "MIB" => 20,
        "G" | "GB" | "GI" | "GIB" => 30,
        "T" | "TB" | "TI" | "TIB" => 40,
        _ => return Err(bad()),
    };
    let n: u64 = number.parse().map_err(|_| bad())?;
    n.checked_mul(1 << shift).filter(|n| *n > 0).ok_or_else(bad)
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
    let (mut bases, mut haves, mut archives) = (Vec::new(), Vec::new(), Vec::new());
    let mut all_creds = None;
    let mut timeouts = Timeouts::default();
    let mut json = false;
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
                    timeouts,
                });
            }
            "-q" | "--quiet" => options.progress = false,
            "--json" => json = true,
            "-o" | "--output" => output = Some(value(flag)?),
            "--insecure" => options.insecure_registries.push(value(flag)?),
            "--mount-from" => options.mount_from.push(value(flag)?),
            "--mount-from-archive" => options.mount_from_archive = true,
            "--deltas" => options.deltas = true,
            "--platform" => options.platforms.push(value(flag)?),
            "--no-referrers" => options.referrers = false,
            "--base" => bases.push(value(flag)?),
            "--have" => haves.push(value(flag)?),
            "--archive" => archives.push(value(flag)?),
            "--map" => {
                let v = value(flag)?;
                let (from, to) = v
                    .split_once('=')
                    .filter(|(f, t)| !f.is_empty() && !t.is_empty())
                    .ok_or_else(|| format!("--map wants FINAL=DESTINATION, not {v:?}"))?;
                options.destination_map.push((from.into(), to.into()));
            }
            "--retries" => {
                let v = value(flag)?;
                options.max_retries = v
                    .parse()
                    .map_err(|_| format!("--retries wants a number, not {v:?}"))?;
            }
            "--chunk-size" => options.chunk_size = parse_size(&value(flag)?)?,
            "--timeout" => {
                let v = value(flag)?;
                let secs = v
                    .parse()
                    .ok()
                    .filter(|s| *s > 0)
                    .ok_or_else(|| format!("--timeout wants a number of seconds, not {v:?}"))?;
                timeouts.first_byte_s = secs;
                timeouts.between_bytes_s = secs;
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
    let pulls_against_flags = !bases.is_empty() || !haves.is_empty();
    let operation = match positional.as_slice() {
        [] => return Err(USAGE.into()),
        [cmd, finals @ ..] if cmd == "pull" && pulls_against_flags && !finals.is_empty() => {
            Operation::Pull {
                bases,
                haves,
                finals: finals.to_vec(),
                output: output.ok_or("pull needs -o FILE (or -o - for stdout)")?,
            }
        }
        [cmd, base, finals @ ..] if cmd == "pull" && !pulls_against_flags && !finals.is_empty() => {
            Operation::Pull {
                bases: vec![base.clone()],
                haves,
                finals: finals.to_vec(),
                output: output.ok_or("pull needs -o FILE (or -o - for stdout)")?,
            }
        }
        [cmd, ..] if cmd == "pull" => {
            return Err(format!(
                "pull takes BASE FINAL..., or --base/--have and FINAL...\n\n{USAGE}"
            ));
        }
        [cmd, sources @ ..] if cmd == "inventory" => {
            if sources.is_empty() && archives.is_empty() {
                return Err("inventory needs a SOURCE repository or an --archive".into());
            }
            Operation::Inventory {
                sources: sources.to_vec(),
                archives: std::mem::take(&mut archives),
                output: output.ok_or("inventory needs -o FILE (or -o - for stdout)")?,
            }
        }
        [cmd, archive, dest] if cmd == "vet" => Operation::Vet {
            archive: archive.clone(),
            destination: dest.clone(),
        },
        [cmd, archive, dest] if cmd == "push" => Operation::Push {
            archive: archive.clone(),
            destination: dest.clone(),
        },
        [cmd, archive] if cmd == "verify" => Operation::Verify {
            archive: archive.clone(),
        },
        [cmd, archive] if cmd == "ls" || cmd == "inspect" => Operation::Ls {
            archive: archive.clone(),
            json,
        },
        [cmd, ..] if matches!(cmd.as_str(), "verify" | "ls" | "inspect") => {
            return Err(format!("{cmd} takes one argument, the archive\n\n{USAGE}"));
        }
        [cmd, ..] if matches!(cmd.as_str(), "pull" | "vet" | "push") => {
            return Err(format!("{cmd} takes two arguments\n\n{USAGE}"));
        }
        [cmd, ..] => return Err(format!("unknown command {cmd:?}\n\n{USAGE}")),
    };
    if has_output
        && !matches!(
            operation,
            Operation::Pull { .. } | Operation::Inventory { .. }
        )
    {
        return Err("-o applies only to pull and inventory".into());
    }
    if json && !matches!(operation, Operation::Ls { .. }) {
        return Err("--json applies only to ls".into());
    }
    if !archives.is_empty() {
        return Err("--archive applies only to inventory".into());
    }
    if options.deltas && !matches!(operation, Operation::Pull { .. }) {
        return Err("--deltas applies only to pull".into());
    }
    if options.chunk_size > 0 && !matches!(operation, Operation::Push { .. }) {
        return Err("--chunk-size applies only to push".into());
    }
    Ok(Command {
        operation,
        options,
        timeouts,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn sizes_take_binary_suffixes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("16M"), Ok(16 << 20));
        assert_eq!(parse_size("64k"), Ok(64 << 10));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("4T"), Ok(4 << 40));
        assert_eq!(parse_size("5MB"), Ok(5 << 20));
        for bad in ["", "0", "M", "1.5M", "-1", "12P", "99999999999999G"] {
            assert!(parse_size(bad).is_err(), "{bad:?}");
        }
        assert!(
            parse(&args("pull --deltas a b -o x"))
                .unwrap()
                .options
                .deltas
        );
        assert_eq!(
            parse(&args("push --deltas a.tar r.io/x")).unwrap_err(),
            "--deltas applies only to pull"
        );
        let c = parse(&args("push --chunk-size 16M a.tar r.io/x")).unwrap();
        assert_eq!(c.options.chunk_size, 16 << 20);
        assert_eq!(
            parse(&args("pull --chunk-size=1M a b -o x")).unwrap_err(),
            "--chunk-size applies only to push"
        );
    }

    #[test]
    fn the_archive_names_mount_sources_only_when_told() {
        let c = parse(&args("push --mount-from org/base a.tar r.io/x")).unwrap();
        assert_eq!(c.options.mount_from, ["org/base"]);
        assert!(!c.options.mount_from_archive);
        let c = parse(&args("vet --mount-from-archive a.tar r.io/x")).unwrap();
        assert!(c.options.mount_from_archive && c.options.mount_from.is_empty());
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
                bases: vec!["a".into()],
                haves: vec![],
                finals: vec!["b".into()],
                output: "out.tar".into()
            }
        );
        assert_eq!(c.options.insecure_registries, vec!["h:5000"]);
        assert!(!c.options.progress);
        assert_eq!(c.options.base_credentials.unwrap().username, "u");
        assert_eq!(c.options.push_credentials.unwrap().username, "d");
    }

    #[test]
    fn bundles_bases_inventories_and_maps() {
        assert_eq!(
            parse(&args("pull scratch a b -o x")).unwrap().operation,
            Operation::Pull {
                bases: vec!["scratch".into()],
                haves: vec![],
                finals: vec!["a".into(), "b".into()],
                output: "x".into()
            }
        );
        assert_eq!(
            parse(&args("pull --base b1 --have i.json --base b2 f1 f2 -o -"))
                .unwrap()
                .operation,
            Operation::Pull {
                bases: vec!["b1".into(), "b2".into()],
                haves: vec!["i.json".into()],
                finals: vec!["f1".into(), "f2".into()],
                output: "-".into()
            }
        );
        assert_eq!(
            parse(&args("inventory r/a r/b --archive x.tar -o inv.json"))
                .unwrap()
                .operation,
            Operation::Inventory {
                sources: vec!["r/a".into(), "r/b".into()],
                archives: vec!["x.tar".into()],
                output: "inv.json".into()
            }
        );
        let c = parse(&args("push a.tar r:5000 --map q.io/a:v2=r:5000/x/a:v2")).unwrap();
        assert_eq!(
            c.options.destination_map,
            vec![("q.io/a:v2".to_owned(), "r:5000/x/a:v2".to_owned())]
        );
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
            ("pull a", "BASE FINAL..."),
            ("pull --have i.json -o x", "BASE FINAL..."),
            ("inventory -o x", "needs a SOURCE"),
            ("inventory r/a", "needs -o"),
            ("push a r --map nope", "FINAL=DESTINATION"),
            ("push a r --archive x", "only to inventory"),
            ("frob a b", "unknown command"),
            ("vet a b --bogus", "unknown option --bogus"),
            ("vet a b -o x", "only to pull and inventory"),
            ("pull a b -o", "needs a value"),
            ("pull a b -o x --creds nopass", "USER:PASSWORD"),
        ] {
            let err = parse(&args(line)).unwrap_err();
            assert!(err.contains(expected), "{line:?}: {err}");
        }
        assert_eq!(parse(&args("--help")).unwrap().operation, Operation::Help);
    }

    #[test]
    fn timeout_sets_the_idle_limits_only() {
        let defaults = parse(&args("vet a r/x")).unwrap().timeouts;
        assert_eq!(
            defaults,
            Timeouts {
                connect_s: 30,
                first_byte_s: 60,
                between_bytes_s: 60
            }
        );
        for line in ["vet a r/x --timeout 5", "vet --timeout=5 a r/x"] {
            let c = parse(&args(line)).unwrap();
            assert_eq!(
                c.timeouts,
                Timeouts {
                    connect_s: 30,
                    first_byte_s: 5,
                    between_bytes_s: 5
                },
                "{line}"
            );
            assert_eq!(
                c.operation,
                Operation::Vet {
                    archive: "a".into(),
                    destination: "r/x".into()
                }
            );
        }
        for bad in ["0", "-1", "1.5", "soon"] {
            let err = parse(&args(&format!("vet a r/x --timeout={bad}"))).unwrap_err();
            assert!(
                err.contains("--timeout wants a number of seconds"),
                "{bad}: {err}"
            );
        }
        assert!(
            parse(&args("vet a r/x --timeout"))
                .unwrap_err()
                .contains("needs a value")
        );
    }

    #[test]
    fn verify_and_ls_take_the_archive_and_only_ls_takes_json() {
        let op = |line: &str| parse(&args(line)).map(|c| c.operation);
        assert_eq!(
            op("verify a.tar").unwrap(),
            Operation::Verify {
                archive: "a.tar".into()
            }
        );
        assert_eq!(
            op("ls - --json").unwrap(),
            Operation::Ls {
                archive: "-".into(),
                json: true
            }
        );
        assert!(
            op("verify a.tar --json")
                .unwrap_err()
                .contains("only to ls")
        );
        assert!(op("ls").unwrap_err().contains("takes one argument"));
    }
}
