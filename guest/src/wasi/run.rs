//! `wasi:cli/run`: the component as a command, running a parsed `cli::Command`.

use super::http::WasiHttp;
use super::streams::{StreamReader, StreamWriter};
use super::{Component, exports, reporter};
use crate::cli::{self, Operation};
use crate::error::Error;
use crate::ops;
use std::io::{self, Read, Write};

impl exports::wasi::cli::run::Guest for Component {
    fn run() -> Result<(), ()> {
        let args: Vec<String> = std::env::args().skip(1).collect();
        let command = match cli::parse(&args) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("{e}");
                return Err(());
            }
        };
        match run_command(command) {
            Ok(()) => Ok(()),
            Err(e) => {
                // Registries, archives and layouts are untrusted: no control character of
                // theirs reaches the terminal.
                eprintln!("error: {}", crate::text::printable(&e.to_string()));
                Err(())
            }
        }
    }
}

fn run_command(command: cli::Command) -> Result<(), Error> {
    let options = command.options;
    let http = WasiHttp {
        limits: command.timeouts,
    };
    let report = reporter(&options);
    let io = |what: &str, e: io::Error| Error::Io(format!("{what}: {e}"));
    let vet_or_push = |op: super::FromArchive, archive: &str, destination: &str| {
        with_input(archive, |r| op(&http, &options, &report, r, destination))
    };
    let summary = match command.operation {
        Operation::Help => {
            println!("{}", cli::USAGE);
            return Ok(());
        }
        Operation::Pull {
            bases,
            haves,
            finals,
            output,
        } => {
            let inventories = haves
                .iter()
                .map(|h| {
                    std::fs::read(h)
                        .map(|b| (h.clone(), b))
                        .map_err(|e| io(h, e))
                })
                .collect::<Result<Vec<_>, _>>()?;
            let request = ops::PullRequest {
                bases,
                inventories,
                finals,
            };
            write_output(&output, &mut |out| {
                ops::pull_bundle(&http, &options, &report, &request, out)
            })?
        }
        Operation::Inventory {
            sources,
            archives,
            output,
        } => {
            let mut files = archives
                .iter()
                .map(|a| {
                    std::fs::File::open(a)
                        .map(|f| (a.clone(), f))
                        .map_err(|e| io(a, e))
                })
                .collect::<Result<Vec<_>, _>>()?;
            let readers = files
                .iter_mut()
                .map(|(name, f)| (name.clone(), f as &mut dyn Read))
                .collect();
            let inventory = ops::inventory(&http, &options, &report, &sources, readers)?;
            write_output(&output, &mut |out| {
                out.write_all(&inventory.to_json())
                    .map_err(|e| io(&output, e))
            })?;
            if options.progress {
                eprintln!(
                    "inventory: {} blob(s) and {} manifest(s) from {}",
                    inventory.blobs.len(),
                    inventory.manifests.len(),
                    inventory.sources.join(", ")
                );
            }
            return Ok(());
        }
        Operation::Vet {
            archive,
            destination,
        } => vet_or_push(ops::push_vet, &archive, &destination)?,
        Operation::Push {
            archive,
            destination,
        } => vet_or_push(ops::push, &archive, &destination)?,
        Operation::Verify { archive } => {
            let report = with_input(&archive, |r| Ok(crate::archive::verify(r)))?;
            print_lines(&report.text());
            if report.is_good() {
                return Ok(());
            }
            return Err(Error::InvalidArchive(format!(
                "{} problem(s) found",
                report.problems.len()
            )));
        }
        Operation::Ls { archive, json } => {
            let report = with_input(&archive, |r| {
                crate::archive::inspect(r).map_err(Error::InvalidArchive)
            })?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string(&report).expect("a report serialises")
                );
            } else {
                print_lines(&report.table());
            }
            return Ok(());
        }
    };
    if options.progress {
        eprintln!(
            "{}: {} blob(s), {} bytes in the archive; {} blob(s), {} bytes omitted; {} uploaded, {} skipped",
            summary.manifest_digest,
            summary.blobs_in_archive,
            summary.bytes_in_archive,
            summary.blobs_omitted,
            summary.bytes_omitted,
            summary.blobs_uploaded,
            summary.blobs_skipped
        );
        if summary.blobs_mounted > 0 {
            eprintln!(
                "{} blob(s) mounted from other repositories",
                summary.blobs_mounted
            );
        }
    }
    Ok(())
}

/// Writes to stdout (`-`), or to a file under a fresh temporary name (created exclusively,
/// never a planted file or symlink) renamed only once complete, so a failed run never leaves a
/// file that looks whole. A day-old temporary file a killed run left for it is removed first.
fn write_output<T>(
    output: &str,
    write: &mut dyn FnMut(&mut dyn Write) -> Result<T, Error>,
) -> Result<T, Error> {
    use crate::store::tempfile;
    let io = |what: &str, e: io::Error| Error::Io(format!("{what}: {e}"));
    if output == "-" {
        let stdout = wasip2::cli::stdout::get_stdout();
        return write(&mut StreamWriter(&stdout));
    }
    let path = std::path::Path::new(output);
    if let (Some(dir), Some(name)) = (path.parent(), path.file_name()) {
        let dir = if dir.as_os_str().is_empty() {
            std::path::Path::new(".")
        } else {
            dir
        };
        tempfile::remove_stale(dir, name.to_str());
    }
    let (mut file, partial) = tempfile::create(path).map_err(|e| io(output, e))?;
    let partial_name = partial.display().to_string();
    let result = write(&mut file).and_then(|s| {
        file.sync_all()
            .map(|()| s)
            .map_err(|e| io(&partial_name, e))
    });
    drop(file);
    match result {
        Ok(s) => {
            std::fs::rename(&partial, output).map_err(|e| io(output, e))?;
            Ok(s)
        }
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            Err(e)
        }
    }
}

fn with_input<T>(
    path: &str,
    f: impl FnOnce(&mut dyn Read) -> Result<T, Error>,
) -> Result<T, Error> {
    if path == "-" {
        let stdin = wasip2::cli::stdin::get_stdin();
        return f(&mut StreamReader(&stdin));
    }
    let mut file = std::fs::File::open(path).map_err(|e| Error::Io(format!("{path}: {e}")))?;
    f(&mut file)
}

/// Prints a report line by line, each made safe: an archive's names are untrusted.
fn print_lines(text: &str) {
    for line in text.lines() {
        println!("{}", crate::text::printable(line));
    }
}
