//! The `imo` command.

use clap::{Args, Parser, Subcommand};
use imo::{Error, Imo, Summary};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "imo",
    version,
    about = "Move only the difference between container images across an air gap"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    global: Global,
}

#[derive(Subcommand)]
enum Command {
    /// Write an archive of FINAL holding only the blobs BASE lacks (BASE may be `scratch`)
    Pull {
        base: String,
        #[arg(value_name = "FINAL")]
        final_: String,
        /// Where to write the archive; `-` for stdout
        #[arg(short, long, value_name = "FILE")]
        output: String,
    },
    /// Check that DESTINATION holds every blob ARCHIVE leaves out
    Vet {
        /// The archive; `-` for stdin
        archive: String,
        destination: String,
    },
    /// Upload what DESTINATION lacks from ARCHIVE, then tag the image there
    Push {
        /// The archive; `-` for stdin
        archive: String,
        destination: String,
    },
    /// Write the embedded WebAssembly component, to run under any WASI 0.2 host
    Component {
        #[arg(short, long, value_name = "FILE")]
        output: PathBuf,
    },
}

#[derive(Args)]
struct Global {
    /// Reach this registry (HOST[:PORT]) over plain HTTP (repeatable)
    #[arg(long, global = true, value_name = "HOST[:PORT]")]
    insecure: Vec<String>,
    /// At push, mount blobs from this repository of the destination registry (repeatable)
    #[arg(long, global = true, value_name = "REPOSITORY")]
    mount_from: Vec<String>,
    /// Let the component reach this HOST[:PORT] too (repeatable)
    #[arg(long, global = true, value_name = "HOST[:PORT]")]
    allow_host: Vec<String>,
    /// Credentials for every registry
    #[arg(long, global = true, value_name = "USER:PASSWORD")]
    creds: Option<String>,
    /// Credentials for the base image's registry
    #[arg(long, global = true, value_name = "USER:PASSWORD")]
    base_creds: Option<String>,
    /// Credentials for the final image's registry
    #[arg(long, global = true, value_name = "USER:PASSWORD")]
    final_creds: Option<String>,
    /// Credentials for the destination registry
    #[arg(long, global = true, value_name = "USER:PASSWORD")]
    dest_creds: Option<String>,
    /// Print no progress and no summary
    #[arg(short, long, global = true)]
    quiet: bool,
}

fn split_creds(flag: &str, value: &str) -> Result<(String, String), Error> {
    match value.split_once(':') {
        Some((u, p)) if !u.is_empty() => Ok((u.into(), p.into())),
        _ => Err(Error::InvalidReference(format!(
            "--{flag} wants USER:PASSWORD"
        ))),
    }
}

fn builder(g: &Global) -> Result<imo::Builder, Error> {
    let mut b = Imo::builder().progress(!g.quiet);
    let all = g
        .creds
        .as_deref()
        .map(|c| split_creds("creds", c))
        .transpose()?;
    let pick = |flag: &str, v: &Option<String>| -> Result<Option<(String, String)>, Error> {
        Ok(v.as_deref()
            .map(|c| split_creds(flag, c))
            .transpose()?
            .or_else(|| all.clone()))
    };
    if let Some((u, p)) = pick("base-creds", &g.base_creds)? {
        b = b.base_credentials(&u, &p);
    }
    if let Some((u, p)) = pick("final-creds", &g.final_creds)? {
        b = b.final_credentials(&u, &p);
    }
    if let Some((u, p)) = pick("dest-creds", &g.dest_creds)? {
        b = b.push_credentials(&u, &p);
    }
    for h in &g.insecure {
        b = b.insecure_registry(h);
    }
    for r in &g.mount_from {
        b = b.mount_from(r);
    }
    for h in &g.allow_host {
        b = b.allow_host(h);
    }
    Ok(b)
}

fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

fn print_summary(headline: &str, s: &Summary) {
    eprintln!("{headline} ({})", s.manifest_digest);
    eprintln!(
        "  archive carries {} blob(s), {}; leaves {} blob(s), {} to the base ({})",
        s.blobs_in_archive,
        human(s.bytes_in_archive),
        s.blobs_omitted,
        human(s.bytes_omitted),
        s.base_reference,
    );
    if s.blobs_uploaded > 0 || s.blobs_skipped > 0 || headline.starts_with("pushed") {
        eprintln!(
            "  uploaded {} blob(s), {}; {} already at the destination; {} mounted from other repositories",
            s.blobs_uploaded,
            human(s.bytes_uploaded),
            s.blobs_skipped,
            s.blobs_mounted
        );
    }
    if headline.starts_with("pulled") {
        eprintln!("  archive size {}", human(s.archive_bytes));
    }
}

async fn open_archive(path: &str) -> Result<Box<dyn tokio::io::AsyncRead + Send + Unpin>, Error> {
    if path == "-" {
        return Ok(Box::new(tokio::io::stdin()));
    }
    let f = tokio::fs::File::open(path)
        .await
        .map_err(|e| Error::Io(format!("{path}: {e}")))?;
    Ok(Box::new(f))
}

async fn run(cli: Cli) -> Result<(), Error> {
    let quiet = cli.global.quiet;
    let (headline, summary) = match cli.command {
        Command::Component { output } => {
            return std::fs::write(&output, imo::COMPONENT)
                .map_err(|e| Error::Io(format!("{}: {e}", output.display())));
        }
        Command::Pull {
            base,
            final_,
            output,
        } => {
            let imo = builder(&cli.global)?.build()?;
            let s = if output == "-" {
                imo.pull_to_writer(&base, &final_, tokio::io::stdout())
                    .await?
            } else {
                imo.pull_to_file(&base, &final_, output.as_ref()).await?
            };
            (format!("pulled {}", s.final_reference), s)
        }
        Command::Vet {
            archive,
            destination,
        } => {
            let imo = builder(&cli.global)?.build()?;
            let s = imo
                .push_vet(open_archive(&archive).await?, &destination)
                .await?;
            (
                format!("vetted {destination}: holds every blob the archive leaves out"),
                s,
            )
        }
        Command::Push {
            archive,
            destination,
        } => {
            let imo = builder(&cli.global)?.build()?;
            let s = imo
                .push(open_archive(&archive).await?, &destination)
                .await?;
            (format!("pushed {} to {destination}", s.final_reference), s)
        }
    };
    if !quiet {
        print_summary(&headline, &summary);
    }
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("imo: error: {e}");
            ExitCode::FAILURE
        }
    }
}
