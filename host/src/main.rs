//! The `imo` command.

mod progress;

use clap::{Args, Parser, Subcommand};
use imo::volumes::{self, Archive};
use imo::{Error, Imo, Summary};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

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
    /// Write an archive of the FINAL images holding only the blobs BASE lacks (BASE may be
    /// `scratch`); with --base or --have, every argument is a final image
    #[command(override_usage = "imo pull BASE FINAL... -o FILE\n       \
                                imo pull [--base BASE]... [--have INVENTORY]... FINAL... -o FILE")]
    Pull {
        /// BASE then FINAL..., or FINAL... alone with --base or --have
        #[arg(value_name = "IMAGE", required = true)]
        images: Vec<String>,
        /// A base image: blobs it holds are left out (repeatable)
        #[arg(long = "base", value_name = "REF")]
        bases: Vec<String>,
        /// An inventory of the site (`imo inventory`): blobs it lists are left out (repeatable)
        #[arg(long = "have", value_name = "INVENTORY")]
        haves: Vec<PathBuf>,
        /// Where to write the archive; `-` for stdout
        #[arg(short, long, value_name = "FILE")]
        output: String,
        /// Write FILE through `.FILE.imo-resume.partial`, which a failure or a stop leaves in
        /// place: the same pull run again keeps the blobs it holds whole (a pull into FILE
        /// resumes such a partial when it finds one, --resume or not)
        #[arg(long)]
        resume: bool,
        /// Carry a layer the bases lack as a delta against their layers where that is under
        /// half its size (push rebuilds the exact blob); layers no rebuilder reproduces
        /// byte for byte go whole
        #[arg(long)]
        deltas: bool,
        /// Write FILE as volumes FILE.001, FILE.002, … of at most SIZE bytes each (K, M, G,
        /// T: binary multiples), for media with a size limit; each volume checks alone, and
        /// vet, push, verify and ls read the set
        #[arg(long, value_name = "SIZE", value_parser = imo_guest::cli::parse_size)]
        volume_size: Option<u64>,
    },
    /// Write an inventory of what a site holds: every blob and manifest of the SOURCE
    /// repositories (all tags, or the tag named) and of archives already shipped there
    Inventory {
        /// A repository (REGISTRY/PATH for all its tags, or REGISTRY/PATH:TAG) or oci:DIR
        #[arg(value_name = "SOURCE")]
        sources: Vec<String>,
        /// An archive already pushed to the site (repeatable)
        #[arg(long = "archive", value_name = "FILE")]
        archives: Vec<PathBuf>,
        /// Where to write the inventory; `-` for stdout
        #[arg(short, long, value_name = "FILE")]
        output: String,
    },
    /// Check that DESTINATION holds every blob ARCHIVE leaves out
    Vet {
        /// The archive; `-` for stdin; or its volumes: the first, all, or their directory
        #[arg(required = true, num_args = 1..)]
        archive: Vec<String>,
        /// A repository; for an archive of several images, a prefix REGISTRY[/PATH]
        destination: String,
        /// Where one image of the archive goes, overriding DESTINATION (repeatable)
        #[arg(long = "map", value_name = "FINAL=DESTINATION")]
        map: Vec<String>,
    },
    /// Upload what DESTINATION lacks from ARCHIVE, then tag the image there
    Push {
        /// The archive; `-` for stdin; or its volumes: the first, all, or their directory
        #[arg(required = true, num_args = 1..)]
        archive: Vec<String>,
        /// A repository; for an archive of several images, a prefix REGISTRY[/PATH] under
        /// which each image keeps its repository path and tag
        destination: String,
        /// Where one image of the archive goes, overriding DESTINATION (repeatable)
        #[arg(long = "map", value_name = "FINAL=DESTINATION")]
        map: Vec<String>,
        /// Upload blobs in PATCH chunks of SIZE bytes (K, M, G, T: binary multiples; the
        /// registry's minimum chunk length if larger) instead of one PUT each; without it,
        /// chunks of 8M only once a registry refuses a whole-body upload
        #[arg(long, value_name = "SIZE", value_parser = imo_guest::cli::parse_size)]
        chunk_size: Option<u64>,
    },
    /// Check every blob of ARCHIVE (size and digest) and every reference of its manifests,
    /// with no registry; print what the destination must already hold; exit 1 naming each
    /// problem
    Verify {
        /// The archive; `-` for stdin; or its volumes: the first, all, or their directory
        /// (a volume whose set is not all here is checked alone)
        #[arg(required = true, num_args = 1..)]
        archive: Vec<String>,
    },
    /// List what ARCHIVE holds, from its head alone: images, tags, platforms, attached
    /// signatures, what is carried and what is left to the destination (--json for JSON)
    #[command(alias = "inspect")]
    Ls {
        /// The archive; `-` for stdin; or its volumes: the first, all, or their directory
        #[arg(required = true, num_args = 1..)]
        archive: Vec<String>,
    },
    /// Write the embedded WebAssembly component, to run under any WASI 0.2 host (-o FILE);
    /// or store it in a registry as a Wasm OCI artifact, or fetch it from one
    Component {
        #[command(subcommand)]
        action: Option<ComponentAction>,
        /// Where to write the component
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum ComponentAction {
    /// Store the component in DESTINATION as a Wasm OCI artifact (config
    /// application/vnd.wasm.config.v0+json, one application/wasm layer)
    Push {
        /// A repository reference, REGISTRY/PATH[:TAG], or oci:DIR[:TAG]
        destination: String,
    },
    /// Fetch the component of a Wasm OCI artifact into FILE
    Pull {
        /// A reference, REGISTRY/PATH:TAG or @DIGEST, or oci:DIR:TAG
        reference: String,
        /// Where to write the component
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
    /// At vet and push, also look for and mount blobs in the repositories the archive
    /// names (its bases, where its inventories placed blobs): trusts the archive
    #[arg(long, global = true)]
    mount_from_archive: bool,
    /// Carry only this platform (OS/ARCH[/VARIANT]) of a multi-platform image (repeatable)
    #[arg(long, global = true, value_name = "OS/ARCH[/VARIANT]")]
    platform: Vec<String>,
    /// Leave signatures, attestations and SBOMs behind
    #[arg(long, global = true)]
    no_referrers: bool,
    /// Retries of a failed request, and resumes of a cut download or upload (0 for none)
    #[arg(long, global = true, value_name = "N", default_value_t = 4)]
    retries: u32,
    /// Give up on a request (and retry it) when a registry sends nothing, or takes nothing
    /// more of an upload, for SECS seconds
    #[arg(long, global = true, value_name = "SECS", default_value_t = 60,
          value_parser = clap::value_parser!(u64).range(1..))]
    timeout: u64,
    /// Let the component reach this HOST[:PORT] too (repeatable)
    #[arg(long, global = true, value_name = "HOST[:PORT]")]
    allow_host: Vec<String>,
    /// Credentials for every registry (USER alone with --password-stdin)
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
    /// Read the password of every credential given as USER alone from stdin
    #[arg(long, global = true)]
    password_stdin: bool,
    /// Trust every *.crt in DIR, for every registry and token service: as a CA, or as a
    /// server's own (self-signed) certificate when the server presents exactly it, names
    /// the server and is valid now (besides the system's roots and
    /// /etc/{containers,docker}/certs.d/HOST:PORT/)
    #[arg(long, global = true, value_name = "DIR")]
    cert_dir: Option<PathBuf>,
    /// Verify registries' TLS certificates; `--tls-verify=false` accepts any, from the
    /// registries the command names and the token services they send imo to only
    #[arg(long, global = true, value_name = "BOOL", default_value_t = true, action = clap::ArgAction::Set)]
    tls_verify: bool,
    /// The most memory the component may use (K, M, G: binary multiples); a registry or
    /// archive that would make it hold more fails the command with an error saying so
    #[arg(long, global = true, value_name = "SIZE", default_value = "256M",
          value_parser = imo_guest::cli::parse_size)]
    memory_limit: u64,
    /// Spread a pull into a file, or a push from one, over N instances of the component,
    /// each hashing on its own core (default: one per core; 1 for a single instance)
    #[arg(long, global = true, value_name = "N",
          value_parser = clap::value_parser!(u64).range(1..))]
    instances: Option<u64>,
    /// Print no progress and no summary
    #[arg(short, long, global = true)]
    quiet: bool,
    /// Print the summary as JSON (on stdout, or on stderr when stdout is the archive)
    #[arg(long, global = true)]
    json: bool,
}

/// What each role of a command names: references, or for the destination also prefixes
/// (`REGISTRY[/PATH]`). Auth files are read for their registries only.
#[derive(Default)]
struct Roles<'a> {
    base: Vec<&'a str>,
    final_: Vec<&'a str>,
    dest: Vec<&'a str>,
}

/// The registry a reference or destination prefix names; `None` for `scratch`, `oci:`
/// layouts and malformed names (the operation reports those).
fn registry_of(name: &str) -> Option<String> {
    use imo_guest::reference::{Prefix, Reference};
    if name == "scratch" || name.starts_with("oci:") {
        return None;
    }
    // A prefix first: `host:5000` alone is a registry, not the image `host` tagged `5000`.
    Prefix::parse(name)
        .map(|p| p.registry)
        .or_else(|_| Reference::parse(name).map(|r| r.registry))
        .ok()
}

fn builder(g: &Global, roles: Roles<'_>) -> Result<imo::Builder, Error> {
    let mut b = Imo::builder().tls_verify(g.tls_verify);
    if !g.quiet && !g.json {
        // Bars on a terminal; the component's own lines where output is logged.
        b = if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
            let bars = std::sync::Arc::new(progress::Bars::new());
            b.reporter(move |line| bars.line(line))
        } else {
            b.progress(true)
        };
    }
    let mut stdin_password: Option<String> = None;
    let mut split = |flag: &str, value: &str| -> Result<(String, String), Error> {
        let usage = || {
            Error::InvalidReference(format!(
                "--{flag} wants USER:PASSWORD, or USER with --password-stdin"
            ))
        };
        match value.split_once(':') {
            Some((u, p)) if !u.is_empty() => Ok((u.into(), p.into())),
            None if !value.is_empty() && g.password_stdin => {
                if stdin_password.is_none() {
                    let mut line = String::new();
                    std::io::stdin()
                        .read_line(&mut line)
                        .map_err(|e| Error::Io(format!("reading the password from stdin: {e}")))?;
                    stdin_password = Some(line.trim_end_matches(['\n', '\r']).to_owned());
                }
                Ok((value.into(), stdin_password.clone().unwrap_or_default()))
            }
            _ => Err(usage()),
        }
    };
    let all = g.creds.as_deref().map(|c| split("creds", c)).transpose()?;
    // A role's flag, else --creds; these go to that role's registries only.
    let mut pick = |flag: &str, v: &Option<String>| -> Result<Option<(String, String)>, Error> {
        Ok(v.as_deref()
            .map(|c| split(flag, c))
            .transpose()?
            .or_else(|| all.clone()))
    };
    let base = pick("base-creds", &g.base_creds)?;
    let final_ = pick("final-creds", &g.final_creds)?;
    let dest = pick("dest-creds", &g.dest_creds)?;
    // Registries some reference reaches without role credentials: their auth-file entries go
    // to the component keyed by what each names, so each reaches only its own registry.
    let mut lookup = std::collections::BTreeSet::new();
    for (given, names) in [
        (&base, &roles.base),
        (&final_, &roles.final_),
        (&dest, &roles.dest),
    ] {
        if given.is_none() {
            lookup.extend(names.iter().filter_map(|n| registry_of(n)));
        }
    }
    for registry in lookup {
        for (key, c) in imo::credentials::lookup_keyed(&registry).map_err(Error::Unauthorized)? {
            b = b.registry_credentials(&key, &c.username, &c.password);
        }
    }
    if let Some((u, p)) = base {
        b = b.base_credentials(&u, &p);
    }
    if let Some((u, p)) = final_ {
        b = b.final_credentials(&u, &p);
    }
    if let Some((u, p)) = dest {
        b = b.push_credentials(&u, &p);
    }
    for h in &g.insecure {
        b = b.insecure_registry(h);
    }
    for r in &g.mount_from {
        b = b.mount_from(r);
    }
    b = b.mount_from_archive(g.mount_from_archive);
    for p in &g.platform {
        b = b.platform(p);
    }
    b = b
        .referrers(!g.no_referrers)
        .max_retries(g.retries)
        .timeout(std::time::Duration::from_secs(g.timeout))
        .memory_limit(g.memory_limit);
    if let Some(n) = g.instances {
        b = b.instances(usize::try_from(n).unwrap_or(usize::MAX));
    }
    for h in &g.allow_host {
        b = b.allow_host(h);
    }
    if let Some(d) = &g.cert_dir {
        b = b.cert_dir(d);
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
    for l in &s.layers {
        if l.delta_size > 0 {
            eprintln!(
                "  layer {}: a delta of {} for {} ({:.2} %)",
                &l.layer[..19.min(l.layer.len())],
                human(l.delta_size),
                human(l.size),
                l.delta_size as f64 * 100.0 / l.size.max(1) as f64
            );
        } else {
            eprintln!(
                "  layer {}: whole, {} ({})",
                &l.layer[..19.min(l.layer.len())],
                human(l.size),
                l.whole_because
            );
        }
    }
    if s.layers_rebuilt > 0 {
        eprintln!("  rebuilt {} layer(s) from deltas", s.layers_rebuilt);
    }
    if s.blobs_kept > 0 {
        eprintln!(
            "  resumed: {} blob(s), {} kept from the partial archive, not fetched",
            s.blobs_kept,
            human(s.bytes_kept)
        );
    }
}

/// The `Imo` for vet and push: credentials looked up for the destinations only.
fn for_destination(
    g: &Global,
    destination: &str,
    map: &[String],
    chunk_size: u64,
) -> Result<Imo, Error> {
    let map = map
        .iter()
        .map(|m| {
            m.split_once('=')
                .filter(|(f, t)| !f.is_empty() && !t.is_empty())
                .ok_or_else(|| {
                    Error::InvalidReference(format!("--map wants FINAL=DESTINATION, not {m:?}"))
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let roles = Roles {
        dest: std::iter::once(destination)
            .chain(map.iter().map(|(_, to)| *to))
            .collect(),
        ..Roles::default()
    };
    let mut b = builder(g, roles)?;
    for (from, to) in map {
        b = b.map_destination(from, to);
    }
    b.chunk_size(chunk_size).build()
}

/// Writes `bytes` to stdout (`-`) or to `path`, through a temporary file renamed when whole.
fn write_output(path: &str, bytes: &[u8]) -> Result<(), Error> {
    use std::io::Write;
    let io = |p: &str, e: std::io::Error| Error::Io(format!("{p}: {e}"));
    if path == "-" {
        return std::io::stdout()
            .write_all(bytes)
            .map_err(|e| io("stdout", e));
    }
    imo::atomic_file::write(path.as_ref(), bytes).map_err(|e| io(path, e))
}

/// The archive the arguments name, as one stream: a file, stdin, or a set of volumes, each
/// volume checked as it passes (`watch` says how far reading got and, if lenient, collects
/// damaged volumes rather than failing).
async fn open_archive(
    args: &[String],
    watch: &Arc<volumes::Watch>,
) -> Result<Box<dyn tokio::io::AsyncRead + Send + Unpin>, Error> {
    open(volumes::resolve(args).await.map_err(Error::Io)?, watch).await
}

/// [`open_archive`] of arguments already resolved.
async fn open(
    archive: Archive,
    watch: &Arc<volumes::Watch>,
) -> Result<Box<dyn tokio::io::AsyncRead + Send + Unpin>, Error> {
    let io = |what: &str, e: std::io::Error| Error::Io(format!("{what}: {e}"));
    Ok(match archive {
        Archive::Stdin => volumes::sniff(tokio::io::stdin())
            .await
            .map_err(|e| io("stdin", e))?,
        Archive::Pipe(path) => volumes::sniff(
            tokio::fs::File::open(&path)
                .await
                .map_err(|e| io(&path.display().to_string(), e))?,
        )
        .await
        .map_err(|e| io(&path.display().to_string(), e))?,
        Archive::Plain(path) => Box::new(
            tokio::fs::File::open(&path)
                .await
                .map_err(|e| io(&path.display().to_string(), e))?,
        ),
        Archive::Volumes(set) => {
            let names = set.iter().map(|(p, _)| p.clone()).collect();
            Box::new(volumes::deframe(
                volumes::concatenated(&set),
                names,
                watch.clone(),
            ))
        }
        Archive::Partial(_, why) => return Err(Error::InvalidArchive(why.0)),
    })
}

/// After a failed read of a set of volumes: the first volume read so far that is damaged,
/// which is the cause to name, whatever the component made of its bytes.
async fn damaged_volume(args: &[String], watch: &volumes::Watch) -> Option<String> {
    let Ok(Archive::Volumes(set)) = volumes::resolve(args).await else {
        return None;
    };
    let reached = watch.reached.load(std::sync::atomic::Ordering::Relaxed) as usize;
    for (path, _) in set.iter().take(reached) {
        if let Err(why) = volumes::check_alone(path).await {
            return Some(why);
        }
    }
    None
}

/// Prints a report line by line, each made safe: an archive's names are untrusted.
fn print_lines(text: &str) {
    for line in text.lines() {
        println!("{}", imo_guest::text::printable(line));
    }
}

/// `imo vet` (or, with `push`, `imo push`): the headline and the summary.
async fn vet_or_push(
    g: &Global,
    args: &[String],
    destination: &str,
    map: &[String],
    push: bool,
    chunk_size: u64,
) -> Result<(String, Summary), Error> {
    let imo = for_destination(g, destination, map, chunk_size)?;
    let watch = Arc::default();
    let resolved = volumes::resolve(args).await.map_err(Error::Io)?;
    let done = match resolved {
        // From one archive file, the uploads are spread over the instances.
        Archive::Plain(path) if push => imo.push_from_file(&path, destination).await,
        resolved if push => imo.push(open(resolved, &watch).await?, destination).await,
        resolved => {
            imo.push_vet(open(resolved, &watch).await?, destination)
                .await
        }
    };
    let s = match done {
        Ok(s) => s,
        // A damaged volume is the cause, whatever the component made of its bytes.
        Err(e @ (Error::DigestMismatch(_) | Error::InvalidArchive(_) | Error::Io(_))) => {
            return Err(match damaged_volume(args, &watch).await {
                // Said once, when the read itself already failed on it.
                Some(why) if e.to_string().contains(&why) => Error::InvalidArchive(why),
                Some(why) => Error::InvalidArchive(format!("{why} (what failed: {e})")),
                None => e,
            });
        }
        Err(e) => return Err(e),
    };
    let headline = if push {
        format!("pushed {} to {destination}", s.images.join(", "))
    } else {
        format!("vetted {destination}: holds every blob the archive leaves out")
    };
    Ok((headline, s))
}

/// `imo verify` of volumes whose set is not all at hand: each checked alone.
async fn verify_volumes_alone(
    present: &[(PathBuf, Result<volumes::Header, String>)],
    why: &str,
    json: bool,
) -> Result<(), Error> {
    let mut problems = vec![];
    let mut lines = vec![];
    for (path, _) in present {
        match volumes::check_alone(path).await {
            Ok(h) => lines.push(format!(
                "{}: volume {} of {} of set {}, bytes {}..{} of the archive: intact",
                path.display(),
                h.index,
                h.count,
                volumes::set_name(&h.set),
                h.offset,
                h.offset + h.size
            )),
            Err(e) => problems.push(e),
        }
    }
    if json {
        let v = serde_json::json!({ "volumes": lines, "problems": problems, "note": why });
        println!("{v}");
    } else {
        for line in &lines {
            print_lines(line);
        }
        for p in &problems {
            print_lines(&format!("problem: {p}"));
        }
        print_lines(&format!(
            "note: checked each volume alone, not the archive, because {why}"
        ));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(Error::InvalidArchive(format!(
            "{} damaged volume(s)",
            problems.len()
        )))
    }
}

async fn run(cli: Cli) -> Result<(), Error> {
    let quiet = cli.global.quiet;
    let archive_on_stdout = matches!(&cli.command, Command::Pull { output, .. } if output == "-");
    let (headline, summary) = match cli.command {
        Command::Component { action, output } => {
            let write = |output: &PathBuf, bytes: &[u8]| {
                imo::atomic_file::write(output, bytes)
                    .map_err(|e| Error::Io(format!("{}: {e}", output.display())))
            };
            match (action, output) {
                (None, Some(output)) => return write(&output, imo::COMPONENT),
                (Some(ComponentAction::Push { destination }), None) => {
                    let roles = Roles {
                        dest: vec![destination.as_str()],
                        ..Roles::default()
                    };
                    let s = builder(&cli.global, roles)?
                        .build()?
                        .push_component(&destination)
                        .await?;
                    (format!("pushed the component to {destination}"), s)
                }
                (Some(ComponentAction::Pull { reference, output }), None) => {
                    let roles = Roles {
                        final_: vec![reference.as_str()],
                        ..Roles::default()
                    };
                    let imo = builder(&cli.global, roles)?.build()?;
                    let wasm = imo.pull_component(&reference).await?;
                    write(&output, &wasm)?;
                    if !quiet {
                        eprintln!(
                            "imo: wrote the component of {reference} to {} ({} bytes)",
                            output.display(),
                            wasm.len()
                        );
                    }
                    return Ok(());
                }
                _ => {
                    return Err(Error::InvalidReference(
                        "component takes -o FILE, or push DESTINATION, or pull REFERENCE -o FILE"
                            .into(),
                    ));
                }
            }
        }
        Command::Pull {
            images,
            bases,
            haves,
            output,
            resume,
            deltas,
            volume_size,
        } => {
            if volume_size.is_some() && (resume || output == "-") {
                return Err(Error::InvalidReference(
                    "--volume-size writes volumes FILE.001, FILE.002, … of -o FILE: not to \
                     stdout, and not with --resume"
                        .into(),
                ));
            }
            if resume && output == "-" {
                return Err(Error::InvalidReference(
                    "--resume needs a file to write (-o FILE), not stdout".into(),
                ));
            }
            // A partial an earlier resumable pull left is what the user wants to go on with;
            // its plan is checked before anything in it is kept.
            let partial = imo::atomic_file::ResumableFile::partial_for(output.as_ref());
            let resume = resume
                || (output != "-" && volume_size.is_none() && {
                    let found = partial.symlink_metadata().is_ok();
                    if found && !quiet {
                        eprintln!(
                            "imo: found {} from an earlier pull: resuming it",
                            partial.display()
                        );
                    }
                    found
                });
            let bundle = if bases.is_empty() && haves.is_empty() {
                let Some((base, finals)) = images.split_first().filter(|(_, f)| !f.is_empty())
                else {
                    return Err(Error::InvalidReference(
                        "pull takes BASE FINAL... (BASE may be `scratch`), or FINAL... with \
                         --base or --have"
                            .into(),
                    ));
                };
                imo::Bundle {
                    bases: vec![base.clone()],
                    inventories: vec![],
                    finals: finals.to_vec(),
                }
            } else {
                imo::Bundle {
                    bases,
                    inventories: haves,
                    finals: images,
                }
            };
            let roles = Roles {
                base: bundle.bases.iter().map(String::as_str).collect(),
                final_: bundle.finals.iter().map(String::as_str).collect(),
                dest: vec![],
            };
            let imo = builder(&cli.global, roles)?.deltas(deltas).build()?;
            let s = if let Some(size) = volume_size {
                let (s, paths) = imo
                    .pull_bundle_to_volumes(&bundle, output.as_ref(), size)
                    .await?;
                if !quiet {
                    let first = paths.first().map(|p| p.display().to_string());
                    eprintln!(
                        "imo: wrote {} volume(s) of at most {size} bytes: {}{}",
                        paths.len(),
                        first.unwrap_or_default(),
                        if paths.len() > 1 { " …" } else { "" }
                    );
                }
                s
            } else if output == "-" {
                imo.pull_bundle_to_writer(&bundle, tokio::io::stdout())
                    .await?
            } else if resume {
                let pulled = imo
                    .pull_bundle_to_file_resumable(&bundle, output.as_ref())
                    .await;
                if pulled.is_err() && !quiet && partial.exists() {
                    eprintln!(
                        "imo: {} stays: run the same pull again with --resume to go on",
                        partial.display()
                    );
                }
                pulled?
            } else {
                imo.pull_bundle_to_file(&bundle, output.as_ref()).await?
            };
            (format!("pulled {}", s.images.join(", ")), s)
        }
        Command::Inventory {
            sources,
            archives,
            output,
        } => {
            if sources.is_empty() && archives.is_empty() {
                return Err(Error::InvalidReference(
                    "inventory needs a SOURCE repository or an --archive".into(),
                ));
            }
            let roles = Roles {
                dest: sources.iter().map(String::as_str).collect(),
                ..Roles::default()
            };
            let imo = builder(&cli.global, roles)?.build()?;
            let sources: Vec<&str> = sources.iter().map(String::as_str).collect();
            let json = imo.inventory(&sources, &archives).await?;
            write_output(&output, json.as_bytes())?;
            if !quiet {
                let v: serde_json::Value = serde_json::from_str(&json).unwrap_or_default();
                let count = |k: &str| v[k].as_array().map_or(0, Vec::len);
                let line = format!(
                    "inventory: {} blob(s) and {} manifest(s) from {}",
                    count("blobs"),
                    count("manifests"),
                    count("sources")
                );
                eprintln!("{line} source(s)");
            }
            return Ok(());
        }
        Command::Verify { archive } => {
            if let Ok(Archive::Partial(present, why)) = volumes::resolve(&archive).await {
                return verify_volumes_alone(&present, &why.0, cli.global.json).await;
            }
            let imo = builder(&cli.global, Roles::default())?.build()?;
            let watch = Arc::new(volumes::Watch {
                lenient: true,
                ..volumes::Watch::default()
            });
            let mut report = imo.verify(open_archive(&archive, &watch).await?).await?;
            // Damaged volumes first: they are the cause of what else is found.
            let mut problems = watch.damage();
            problems.append(&mut report.problems);
            report.problems = problems;
            if cli.global.json {
                println!(
                    "{}",
                    serde_json::to_string(&report).expect("a report serialises")
                );
            } else {
                print_lines(&report.text());
            }
            if report.problems.is_empty() {
                return Ok(());
            }
            return Err(Error::InvalidArchive(format!(
                "{} problem(s) found in {}",
                report.problems.len(),
                archive.join(" ")
            )));
        }
        Command::Ls { archive } => {
            let imo = builder(&cli.global, Roles::default())?.build()?;
            // Its head is in the first volume: that one is enough.
            let input = match volumes::resolve(&archive).await {
                Ok(Archive::Partial(present, why)) => {
                    let first = present
                        .iter()
                        .find(|(_, h)| h.as_ref().is_ok_and(|h| h.index == 1))
                        .ok_or(Error::InvalidArchive(why.0))?;
                    let file = tokio::fs::File::open(&first.0)
                        .await
                        .map_err(|e| Error::Io(format!("{}: {e}", first.0.display())))?;
                    let watch = volumes::Watch {
                        first_only: true,
                        ..volumes::Watch::default()
                    };
                    Box::new(volumes::deframe(
                        file,
                        vec![first.0.clone()],
                        Arc::new(watch),
                    ))
                }
                _ => open_archive(&archive, &Arc::default()).await?,
            };
            let report = imo.inspect(input).await?;
            if cli.global.json {
                println!(
                    "{}",
                    serde_json::to_string(&report).expect("a report serialises")
                );
            } else {
                print_lines(&report.table());
            }
            return Ok(());
        }
        Command::Vet {
            archive,
            destination,
            map,
        } => vet_or_push(&cli.global, &archive, &destination, &map, false, 0).await?,
        Command::Push {
            archive,
            destination,
            map,
            chunk_size,
        } => {
            let chunk_size = chunk_size.unwrap_or(0);
            vet_or_push(&cli.global, &archive, &destination, &map, true, chunk_size).await?
        }
    };
    if cli.global.json {
        let json = serde_json::to_string(&summary).expect("a summary serialises");
        if archive_on_stdout {
            eprintln!("{json}");
        } else {
            println!("{json}");
        }
    } else if !quiet {
        print_summary(&headline, &summary);
    }
    Ok(())
}

/// On SIGINT or SIGTERM, removes the run's unfinished temporary files (an archive being
/// pulled, blobs and locks in an `oci:` layout being pushed to), then exits as a shell reports
/// the signal: 130 or 143.
#[cfg(unix)]
fn remove_temporaries_on_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        return;
    };
    tokio::spawn(async move {
        let code = tokio::select! {
            _ = int.recv() => 130,
            _ = term.recv() => 143,
        };
        imo::atomic_file::remove_temporaries();
        for partial in imo::atomic_file::resumable_partials() {
            eprintln!(
                "imo: stopped; {} stays: run the same pull again with --resume to go on",
                partial.display()
            );
        }
        std::process::exit(code);
    });
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    #[cfg(unix)]
    remove_temporaries_on_signal();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // The component escapes what registries say; this also covers the host's own errors.
            eprintln!("imo: error: {}", imo_guest::text::printable(&e.to_string()));
            ExitCode::FAILURE
        }
    }
}
