//! [`Imo`] and its operations: pull, vet, push and inventory, each in a fresh sandbox.

use crate::api::{Bundle, Error, Inspection, Summary, Verification, runtime_error, trap_error};
use crate::atomic_file::AtomicFile;
use crate::builder::Builder;
use crate::runtime::Runtime;
use crate::runtime::bindings::exports::imo::overlay::overlay::{PushShareSummary, ShareSummary};
use crate::sandbox::{destination_references, finish, finish_with, layout_grant};
use crate::streams;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncWrite};
use wasmtime::component::Resource;
use wasmtime_wasi::filesystem::{Descriptor, File as FsFile};
use wasmtime_wasi::p2::pipe::AsyncWriteStream;
use wasmtime_wasi::p2::{DynInputStream, DynOutputStream};
use wasmtime_wasi::{FsPerms, OpenMode};

/// Pulls, vets and pushes difference archives. Made by [`Imo::builder`]; cheap to clone,
/// and each operation runs in a fresh instance of the component that may reach only the
/// registries (or `oci:` layouts) it names and the archive stream it is given.
///
/// The whole job, with local OCI layouts standing in for the registries:
///
/// ```rust
/// # include!(concat!(env!("CARGO_MANIFEST_DIR"), "/doctest/layouts.rs"));
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let work = scratch("imo");
/// # let v1 = layout(&work.join("build"), "v1", &["os"]);
/// # let v2 = layout(&work.join("build"), "v2", &["os", "app"]);
/// # let site = work.join("site");
/// # layout(&site, "v1", &["os"]);
/// # let archive = work.join("app-v2.tar");
/// // `v1` and `v2` are `oci:DIR:TAG` references; the layout `site` holds v1 already.
/// let imo = imo::Imo::builder().build()?;
/// let pulled = imo.pull_to_file(&v1, &v2, &archive).await?;
///
/// let destination = format!("oci:{}:v2", site.display());
/// imo.push_vet(tokio::fs::File::open(&archive).await?, &destination).await?;
/// let pushed = imo.push(tokio::fs::File::open(&archive).await?, &destination).await?;
/// assert_eq!(pushed.manifest_digest, pulled.manifest_digest);
/// # std::fs::remove_dir_all(&work)?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Imo {
    pub(crate) runtime: Arc<Runtime>,
    pub(crate) settings: Builder,
}

impl Imo {
    /// The settings for a new `Imo`, at their defaults (see [`Builder`]).
    ///
    /// ```rust
    /// let imo = imo::Imo::builder().progress(true).build()?;
    /// # Ok::<(), imo::Error>(())
    /// ```
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// Runs the component's own command line (`imo.wasm ARGS…`) inside the same sandbox as
    /// every operation: no files, no environment, and the network of `references` only.
    /// For proving the sandbox; whether the command succeeded.
    #[doc(hidden)]
    pub async fn run_sandboxed_cli(
        &self,
        args: &[&str],
        references: &[&str],
    ) -> Result<bool, Error> {
        let policy = self.policy(references)?;
        let connector = self.connector(references);
        let mut argv = vec!["imo"];
        argv.extend_from_slice(args);
        let mut store = self
            .runtime
            .store(
                policy,
                connector,
                self.reporter(),
                &argv,
                &[],
                self.settings.memory_limit,
            )
            .map_err(runtime_error)?;
        self.runtime.run_cli(&mut store).await.map_err(trap_error)
    }

    /// Starts pulling and returns the archive as a stream while it is produced, as the Go
    /// library's `Pull` returns an `io.ReadCloser`. A failure surfaces as a read error; the
    /// summary comes from [`PullStream::finish`]. Must be called within a tokio runtime.
    ///
    /// ```rust
    /// # include!(concat!(env!("CARGO_MANIFEST_DIR"), "/doctest/layouts.rs"));
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let work = scratch("pull");
    /// # let v1 = layout(&work, "v1", &["os"]);
    /// # let v2 = layout(&work, "v2", &["os", "app"]);
    /// use tokio::io::AsyncReadExt as _;
    ///
    /// // `v1` and `v2` are `oci:DIR:TAG` references to local layouts.
    /// let imo = imo::Imo::builder().build()?;
    /// let mut stream = imo.pull(&v1, &v2);
    /// let mut archive = Vec::new();
    /// stream.read_to_end(&mut archive).await?;
    /// let summary = stream.finish().await?;
    /// assert_eq!(summary.archive_bytes, archive.len() as u64);
    /// assert!(archive.starts_with(b"oci-layout"), "a tar whose first entry is oci-layout");
    /// # std::fs::remove_dir_all(&work)?;
    /// # Ok(()) }
    /// ```
    pub fn pull(&self, base: &str, final_: &str) -> PullStream {
        let (writer, reader) = tokio::io::duplex(1 << 20);
        let imo = self.clone();
        let (base, final_) = (base.to_owned(), final_.to_owned());
        let task = tokio::spawn(async move { imo.pull_to_writer(&base, &final_, writer).await });
        PullStream {
            reader,
            task: Some(task),
            result: None,
        }
    }

    /// Writes the difference archive of `final_` over `base` (or `"scratch"`) to `out`.
    /// On error, what was written is not an archive and must be discarded.
    ///
    /// ```rust
    /// # include!(concat!(env!("CARGO_MANIFEST_DIR"), "/doctest/layouts.rs"));
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let work = scratch("pull-to-writer");
    /// # let v1 = layout(&work, "v1", &["os"]);
    /// # let v2 = layout(&work, "v2", &["os", "app"]);
    /// // `v1` and `v2` are `oci:DIR:TAG` references to local layouts.
    /// let imo = imo::Imo::builder().build()?;
    /// let out = tokio::fs::File::create(work.join("app-v2.tar")).await?;
    /// let summary = imo.pull_to_writer(&v1, &v2, out).await?;
    /// assert_eq!(summary.base_reference, v1);
    /// assert_eq!(std::fs::metadata(work.join("app-v2.tar"))?.len(), summary.archive_bytes);
    ///
    /// // With no base, the archive carries every blob.
    /// let full = imo.pull_to_writer("scratch", &v2, tokio::io::sink()).await?;
    /// assert_eq!(full.blobs_omitted, 0);
    /// # std::fs::remove_dir_all(&work)?;
    /// # Ok(()) }
    /// ```
    pub async fn pull_to_writer<W>(
        &self,
        base: &str,
        final_: &str,
        out: W,
    ) -> Result<Summary, Error>
    where
        W: AsyncWrite + Send + Unpin + 'static,
    {
        self.pull_bundle_to_writer(&Bundle::new(base, final_), out)
            .await
    }

    /// Writes one archive holding every final image of `bundle`, leaving out what any of
    /// its bases or inventories holds; blobs the final images share are carried once. On
    /// error, what was written must be discarded.
    ///
    /// ```rust
    /// # include!(concat!(env!("CARGO_MANIFEST_DIR"), "/doctest/layouts.rs"));
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let work = scratch("pull-bundle-to-writer");
    /// # let base = layout(&work, "base", &["os"]);
    /// # let app = layout(&work, "app", &["os", "runtime", "app"]);
    /// # let tools = layout(&work, "tools", &["os", "runtime", "tools"]);
    /// // `oci:DIR:TAG` references to local layouts: two images over one base.
    /// let bundle = imo::Bundle {
    ///     bases: vec![base],
    ///     inventories: vec![],
    ///     finals: vec![app, tools],
    /// };
    /// let imo = imo::Imo::builder().build()?;
    /// let summary = imo.pull_bundle_to_writer(&bundle, tokio::io::sink()).await?;
    /// assert_eq!(summary.images.len(), 2);
    /// // Two configs, `runtime` once, `app` and `tools`.
    /// assert_eq!(summary.blobs_in_archive, 5);
    /// # std::fs::remove_dir_all(&work)?;
    /// # Ok(()) }
    /// ```
    pub async fn pull_bundle_to_writer<W>(&self, bundle: &Bundle, out: W) -> Result<Summary, Error>
    where
        W: AsyncWrite + Send + Unpin + 'static,
    {
        let (request, witness, mut store, imo) = self.pull_sandbox(bundle).await?;
        if self.instances() > 1 && !self.settings.deltas {
            let instance = (store, imo);
            return self
                .pull_to_writer_pooled(request, witness, instance, out)
                .await;
        }
        let stream: DynOutputStream = Box::new(AsyncWriteStream::new(1 << 20, out));
        let own = store.data_mut().table.push(stream).map_err(runtime_error)?;
        let result = imo
            .imo_overlay_overlay()
            .call_pull_bundle(
                &mut store,
                &request,
                Resource::new_borrow(own.rep()),
                &self.options(),
            )
            .await;
        let _ = store.data_mut().table.delete(own);
        finish(result, &witness)
    }

    /// Writes the difference archive to `path`, under a temporary name until it is complete
    /// and verified, so a failed pull never leaves a file that looks like an archive.
    ///
    /// ```rust
    /// # include!(concat!(env!("CARGO_MANIFEST_DIR"), "/doctest/layouts.rs"));
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let work = scratch("pull-to-file");
    /// # let v1 = layout(&work, "v1", &["os"]);
    /// # let v2 = layout(&work, "v2", &["os", "app"]);
    /// // `v1` and `v2` are `oci:DIR:TAG` references to local layouts.
    /// let imo = imo::Imo::builder().build()?;
    /// let archive = work.join("app-v2.tar");
    /// let summary = imo.pull_to_file(&v1, &v2, &archive).await?;
    /// assert_eq!(std::fs::metadata(&archive)?.len(), summary.archive_bytes);
    ///
    /// let missing = format!("oci:{}:v3", work.join("no-such-layout").display());
    /// let failed = work.join("app-v3.tar");
    /// assert!(imo.pull_to_file(&v1, &missing, &failed).await.is_err());
    /// assert!(!failed.exists());
    /// # std::fs::remove_dir_all(&work)?;
    /// # Ok(()) }
    /// ```
    pub async fn pull_to_file(
        &self,
        base: &str,
        final_: &str,
        path: &Path,
    ) -> Result<Summary, Error> {
        self.pull_bundle_to_file(&Bundle::new(base, final_), path)
            .await
    }

    /// [`Imo::pull_bundle_to_writer`] into `path`, written under a temporary name until it
    /// is complete and verified.
    /// The blobs are spread over [`Builder::instances`](crate::Builder::instances) instances of
    /// the component (one per core by default), each hashing on its own core; the bytes are
    /// the same whatever their number.
    ///
    /// Here the site's holdings come from an inventory rather than a base image:
    ///
    /// ```rust
    /// # include!(concat!(env!("CARGO_MANIFEST_DIR"), "/doctest/layouts.rs"));
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let work = scratch("pull-bundle-to-file");
    /// # let site = layout(&work.join("site"), "v1", &["os"]);
    /// # let v2 = layout(&work.join("build"), "v2", &["os", "app"]);
    /// // `site` and `v2` are `oci:DIR:TAG` references to local layouts.
    /// let imo = imo::Imo::builder().build()?;
    /// let inventory = work.join("site.json");
    /// std::fs::write(&inventory, imo.inventory(&[&site], &[]).await?)?;
    ///
    /// let bundle = imo::Bundle {
    ///     bases: vec![],
    ///     inventories: vec![inventory],
    ///     finals: vec![v2],
    /// };
    /// let summary = imo.pull_bundle_to_file(&bundle, &work.join("app-v2.tar")).await?;
    /// assert_eq!(summary.blobs_omitted, 1, "the `os` layer, which the site holds");
    /// # std::fs::remove_dir_all(&work)?;
    /// # Ok(()) }
    /// ```
    pub async fn pull_bundle_to_file(
        &self,
        bundle: &Bundle,
        path: &Path,
    ) -> Result<Summary, Error> {
        let io = |e: std::io::Error| Error::Io(format!("{}: {e}", path.display()));
        let out = AtomicFile::create(path).map_err(io)?;
        let writer = out.file().try_clone().map_err(io)?;
        let summary = self.pull_into(bundle, writer, OpenMode::WRITE).await?;
        out.commit().map_err(io)?;
        Ok(summary)
    }

    /// [`Imo::pull_bundle_to_file`], resumable: written into `.NAME.imo-resume.partial` beside
    /// `path`, which a failure or a stop leaves in place. Called again with the same bundle,
    /// it keeps the blobs that partial already holds whole and fetches only the rest; if the
    /// source changed since (other manifests, blobs or bases), it starts over, saying so in
    /// the progress lines. The partial is renamed onto `path` when complete.
    pub async fn pull_bundle_to_file_resumable(
        &self,
        bundle: &Bundle,
        path: &Path,
    ) -> Result<Summary, Error> {
        let out = crate::atomic_file::ResumableFile::open(path)
            .map_err(|e| Error::Io(format!("{}: {e}", path.display())))?;
        let io = |e: std::io::Error| Error::Io(format!("{}: {e}", out.partial().display()));
        let file = out.file().try_clone().map_err(io)?;
        let summary = self
            .pull_into(bundle, file, OpenMode::READ | OpenMode::WRITE)
            .await?;
        out.commit()
            .map_err(|e| Error::Io(format!("{}: {e}", path.display())))?;
        Ok(summary)
    }

    /// Pulls into `file`, which the component may write at any offset (and nothing else), so
    /// that it fetches several blobs at once, spread over [`Builder::instances`] instances.
    /// `mode` lets it read the file too, for a resumed pull.
    async fn pull_into(
        &self,
        bundle: &Bundle,
        file: std::fs::File,
        mode: OpenMode,
    ) -> Result<Summary, Error> {
        // The archive goes to disk as it comes in, not all in the final `fsync`.
        let _writeback = Writeback::start(&file);
        let (request, witness, mut store, imo) = self.pull_sandbox(bundle).await?;
        let instances = self.instances();
        let options = self.options();
        if instances == 1 {
            let own = push_file(&mut store, file, mode)?;
            let result = imo
                .imo_overlay_overlay()
                .call_pull_bundle_to_file(
                    &mut store,
                    &request,
                    Resource::new_borrow(own.rep()),
                    &options,
                )
                .await;
            let _ = store.data_mut().table.delete(own);
            return finish(result, &witness);
        }

        // Every instance checks the plan against the file, so each may read it.
        let mode = mode | OpenMode::READ;
        let io = |e: std::io::Error| Error::Io(format!("the archive file: {e}"));
        let own = push_file(&mut store, file.try_clone().map_err(io)?, mode)?;
        let result = imo
            .imo_overlay_overlay()
            .call_pull_bundle_to_file_plan(
                &mut store,
                &request,
                Resource::new_borrow(own.rep()),
                &options,
            )
            .await;
        let _ = store.data_mut().table.delete(own);
        let plan = finish_with(result, &witness)?;
        let sizes: Vec<u64> = plan.blobs.iter().map(|b| b.size).collect();
        let plan = Arc::new(plan);
        let request = Arc::new(request);
        let options = Arc::new(options);
        let mut works: Vec<ShareWork<ShareSummary>> = Vec::new();
        for share in shares(&sizes, instances) {
            let (plan, request, options) = (plan.clone(), request.clone(), options.clone());
            let (witness, file) = (witness.clone(), file.try_clone().map_err(io)?);
            works.push(Box::new(move |(mut store, imo)| {
                Box::pin(async move {
                    let own = push_file(&mut store, file, mode)?;
                    let result = imo
                        .imo_overlay_overlay()
                        .call_pull_bundle_to_file_share(
                            &mut store,
                            &request,
                            &plan,
                            &share,
                            Resource::new_borrow(own.rep()),
                            &options,
                        )
                        .await;
                    let _ = store.data_mut().table.delete(own);
                    finish_with(result, &witness).map(|done| (done, (store, imo)))
                })
            }));
        }
        let what = format!("fetching {} blob(s)", plan.blobs.len());
        let mut planner = Some((store, imo));
        let done = self
            .in_instances(&witness, &mut planner, &what, works)
            .await?;
        let (mut blobs, mut bytes) = (0u64, 0u64);
        for (d, _) in done {
            blobs += u64::from(d.blobs_fetched);
            bytes += d.bytes_fetched;
        }
        let planned: u64 = sizes.iter().sum();
        if (blobs, bytes) != (plan.blobs.len() as u64, planned) {
            return Err(Error::Runtime(format!(
                "the instances fetched {blobs} blob(s), {bytes} bytes of the {} blob(s), \
                 {planned} bytes planned",
                plan.blobs.len()
            )));
        }
        Ok(plan.summary.clone().into())
    }

    /// [`Imo::pull_bundle_to_writer`] over a pool of instances: one plans; each fetches a
    /// share of the blobs, in archive order, each blob into its own pipe; this task writes the
    /// head, then each blob framed, read from its pipe when its turn comes. A pipe holds at
    /// most [`STREAM_AHEAD`] bytes, so an instance fetches that far ahead of the writer at
    /// most, and a failed instance's pipe ends short, which stops the writing.
    async fn pull_to_writer_pooled<W>(
        &self,
        request: crate::runtime::bindings::exports::imo::overlay::overlay::Bundle,
        witness: crate::sandbox::Witness,
        (mut store, imo): (
            wasmtime::Store<crate::runtime::State>,
            crate::runtime::bindings::Imo,
        ),
        mut out: W,
    ) -> Result<Summary, Error>
    where
        W: AsyncWrite + Send + Unpin + 'static,
    {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let options = self.options();
        let result = imo
            .imo_overlay_overlay()
            .call_pull_bundle_to_stream_plan(&mut store, &request, &options)
            .await;
        let planned = finish_with(result, &witness)?;
        let (head, plan) = (planned.head, Arc::new(planned.plan));
        let sizes: Vec<u64> = plan.blobs.iter().map(|b| b.size).collect();
        let mut pipes: Vec<Option<tokio::io::DuplexStream>> = Vec::new();
        let mut readers = Vec::new();
        for _ in &plan.blobs {
            let (w, r) = tokio::io::duplex(STREAM_AHEAD);
            pipes.push(Some(w));
            readers.push(r);
        }
        let (request, options) = (Arc::new(request), Arc::new(options));
        let mut works: Vec<ShareWork<ShareSummary>> = Vec::new();
        for mut share in shares(&sizes, self.instances()) {
            // The writer reads in archive order: so must each instance write.
            share.sort_unstable();
            let writers: Vec<_> = (share.iter())
                .map(|&i| pipes[i as usize].take().expect("each blob in one share"))
                .collect();
            let (plan, request, options) = (plan.clone(), request.clone(), options.clone());
            let witness = witness.clone();
            works.push(Box::new(move |(mut store, imo)| {
                Box::pin(async move {
                    let mut streams = Vec::new();
                    for w in writers {
                        let stream: DynOutputStream = Box::new(AsyncWriteStream::new(1 << 20, w));
                        streams.push(store.data_mut().table.push(stream).map_err(runtime_error)?);
                    }
                    let result = imo
                        .imo_overlay_overlay()
                        .call_pull_bundle_to_stream_share(
                            &mut store, &request, &plan, &share, &streams, &options,
                        )
                        .await;
                    finish_with(result, &witness).map(|done| (done, (store, imo)))
                })
            }));
        }
        let written = async {
            let io = |e: std::io::Error| Error::Io(format!("writing the archive: {e}"));
            out.write_all(&head).await.map_err(io)?;
            let mut before = None;
            for (b, reader) in plan.blobs.iter().zip(readers) {
                let digest =
                    imo_guest::digest::Digest::parse(&b.digest).map_err(Error::InvalidManifest)?;
                let frame = imo_guest::ops::between_blobs(before, Some((&digest, b.size)));
                out.write_all(&frame).await.map_err(io)?;
                // Through a buffer of a megabyte: `tokio::io::copy`'s 8 KiB made a write, and
                // for stdout a trip to a blocking thread, every few KiB (108 000 writes for
                // 350 MB, 0.6-0.9 s of system time).
                let mut blob =
                    tokio::io::BufReader::with_capacity(COPY_BUFFER, reader.take(b.size));
                let copied = tokio::io::copy_buf(&mut blob, &mut out).await.map_err(io)?;
                if copied != b.size {
                    // Its instance stopped: its own error says why.
                    return Ok(false);
                }
                before = Some(b.size);
            }
            out.write_all(&imo_guest::ops::between_blobs(before, None))
                .await
                .map_err(io)?;
            out.flush().await.map_err(io)?;
            Ok::<bool, Error>(true)
        };
        let what = format!("fetching {} blob(s)", plan.blobs.len());
        let mut planner = Some((store, imo));
        let (outcome, ran) = tokio::join!(
            written,
            self.in_instances(&witness, &mut planner, &what, works)
        );
        // Whatever the writer saw, an instance's failure is the cause to report.
        match (ran.err(), outcome) {
            (Some(e), _) | (None, Err(e)) => Err(e),
            (None, Ok(false)) => Err(Error::Runtime(
                "an instance ended a blob short without an error".into(),
            )),
            (None, Ok(true)) => Ok(plan.summary.clone().into()),
        }
    }

    /// Runs each of `works` at once in an instance of its own: the first in `planner`'s (taken
    /// from it), each other in a twin with the same grants, saying so in one progress line
    /// after `what`. The first failure stops the others, each at its next wait, and is
    /// returned; else each result with its instance, in the order they ended.
    async fn in_instances<T: Send + 'static>(
        &self,
        witness: &crate::sandbox::Witness,
        planner: &mut Option<Instance>,
        what: &str,
        works: Vec<ShareWork<T>>,
    ) -> Result<Vec<(T, Instance)>, Error> {
        if works.len() > 1 {
            self.report(&format!("{what} in {} instances", works.len()));
        }
        let mut tasks = tokio::task::JoinSet::new();
        for work in works {
            let (this, witness, instance) = (self.clone(), witness.clone(), planner.take());
            tasks.spawn(async move {
                let instance = match instance {
                    Some(i) => i,
                    None => this.twin(&witness).await?,
                };
                work(instance).await
            });
        }
        let mut done = Vec::new();
        while let Some(joined) = tasks.join_next().await {
            match joined.map_err(runtime_error).and_then(|r| r) {
                Ok(d) => done.push(d),
                Err(e) => {
                    tasks.abort_all();
                    while tasks.join_next().await.is_some() {}
                    return Err(e);
                }
            }
        }
        Ok(done)
    }

    /// The instances a pull into a file uses: as set, else one per core.
    fn instances(&self) -> usize {
        match self.settings.instances {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        }
    }

    /// A line for the reporter, among the component's.
    fn report(&self, line: &str) {
        if let Some(report) = self.reporter() {
            report(line);
        }
    }

    /// Checks, before anything is uploaded, that `destination` holds every blob the archive
    /// read from `archive` leaves out, with one `HEAD` per blob. It works before the
    /// destination tag exists and changes nothing there. An `oci:DIR` destination must exist.
    ///
    /// Fails with [`Error::MissingBlobs`], naming every digest the destination lacks.
    ///
    /// ```rust
    /// # include!(concat!(env!("CARGO_MANIFEST_DIR"), "/doctest/layouts.rs"));
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let work = scratch("push-vet");
    /// # let v1 = layout(&work.join("build"), "v1", &["os"]);
    /// # let v2 = layout(&work.join("build"), "v2", &["os", "app"]);
    /// # let site = work.join("site");
    /// # layout(&site, "v1", &["os"]);
    /// # let empty = work.join("empty");
    /// # std::fs::create_dir(&empty)?;
    /// # let archive = work.join("app-v2.tar");
    /// // `v1` and `v2` are images in local OCI layouts; `site` holds v1, `empty` nothing.
    /// let imo = imo::Imo::builder().build()?;
    /// imo.pull_to_file(&v1, &v2, &archive).await?;
    ///
    /// let file = tokio::fs::File::open(&archive).await?;
    /// let summary = imo.push_vet(file, &format!("oci:{}:v2", site.display())).await?;
    /// assert_eq!(summary.blobs_omitted, 1, "the `os` layer, which the site holds");
    ///
    /// let file = tokio::fs::File::open(&archive).await?;
    /// let err = imo.push_vet(file, &format!("oci:{}:v2", empty.display())).await;
    /// assert!(matches!(err, Err(imo::Error::MissingBlobs(digests)) if digests.len() == 1));
    /// # std::fs::remove_dir_all(&work)?;
    /// # Ok(()) }
    /// ```
    pub async fn push_vet<R>(&self, archive: R, destination: &str) -> Result<Summary, Error>
    where
        R: AsyncRead + Send + Unpin + 'static,
    {
        self.with_archive(archive, destination, false).await
    }

    /// Vets, uploads the blobs `destination` lacks (each verified as it streams), then puts
    /// the manifest, so the destination tag holds the final image with exactly the source's
    /// digests. Nothing is tagged unless every blob is in place. With no tag in
    /// `destination`, the final image's own tag is used; an `oci:DIR` destination is created
    /// if need be.
    ///
    /// ```rust
    /// # include!(concat!(env!("CARGO_MANIFEST_DIR"), "/doctest/layouts.rs"));
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let work = scratch("push");
    /// # let v2 = layout(&work.join("build"), "v2", &["os", "app"]);
    /// # let archive = work.join("app-v2-full.tar");
    /// // `v2` is an `oci:DIR:TAG` reference to a local layout.
    /// let imo = imo::Imo::builder().build()?;
    /// imo.pull_to_file("scratch", &v2, &archive).await?;
    ///
    /// let mirror = format!("oci:{}", work.join("mirror").display());
    /// let summary = imo.push(tokio::fs::File::open(&archive).await?, &mirror).await?;
    /// assert_eq!(summary.blobs_uploaded, summary.blobs_in_archive);
    /// let index = std::fs::read_to_string(work.join("mirror/index.json"))?;
    /// assert!(index.contains(&summary.manifest_digest));
    /// # std::fs::remove_dir_all(&work)?;
    /// # Ok(()) }
    /// ```
    pub async fn push<R>(&self, archive: R, destination: &str) -> Result<Summary, Error>
    where
        R: AsyncRead + Send + Unpin + 'static,
    {
        self.with_archive(archive, destination, true).await
    }

    /// [`push`](Imo::push) from the archive file at `path`, spread over
    /// [`Builder::instances`] instances so that each hashes on its own core: one instance
    /// reads the head, vets and plans (finding where each blob lies in the file from its tar
    /// headers), each uploads a share of the blobs, read from the file at their offsets and
    /// verified as they stream, and once every share is done one puts the manifests. A
    /// failure in any stops them all, and nothing is tagged. With one instance, a file that
    /// is not a regular file (a pipe), or an archive carrying layer deltas, the archive is
    /// pushed as one stream, as [`push`](Imo::push) does. Every instance gets the same
    /// sandbox, and the file read-only.
    ///
    /// ```rust
    /// # include!(concat!(env!("CARGO_MANIFEST_DIR"), "/doctest/layouts.rs"));
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let work = scratch("push-from-file");
    /// # let v2 = layout(&work.join("build"), "v2", &["os", "app"]);
    /// # let archive = work.join("app-v2-full.tar");
    /// let imo = imo::Imo::builder().instances(2).build()?;
    /// imo.pull_to_file("scratch", &v2, &archive).await?;
    ///
    /// let mirror = format!("oci:{}", work.join("mirror").display());
    /// let summary = imo.push_from_file(&archive, &mirror).await?;
    /// assert_eq!(summary.blobs_uploaded, summary.blobs_in_archive);
    /// # std::fs::remove_dir_all(&work)?;
    /// # Ok(()) }
    /// ```
    pub async fn push_from_file(&self, path: &Path, destination: &str) -> Result<Summary, Error> {
        let io = |e: std::io::Error| Error::Io(format!("{}: {e}", path.display()));
        // Opened off the runtime's threads: a named pipe waits for its writer.
        let file = tokio::fs::File::open(path).await.map_err(io)?;
        let file = file.into_std().await;
        let regular = file.metadata().map_err(io)?.is_file();
        let instances = self.instances();
        if instances == 1 || !regular {
            return self
                .push(tokio::fs::File::from_std(file), destination)
                .await;
        }
        let (destination, grants) = layout_grant(destination, true)?;
        let destination = Arc::new(destination);
        let grants: Vec<_> = grants.into_iter().collect();
        let references = destination_references(&destination, &self.settings.destination_map);
        let references: Vec<&str> = references.iter().map(String::as_str).collect();
        let (witness, mut store, imo) = self.sandbox(&references, &grants).await?;
        let options = self.options();
        let own = read_only(&mut store, file.try_clone().map_err(io)?)?;
        let result = imo
            .imo_overlay_overlay()
            .call_push_file_plan(
                &mut store,
                Resource::new_borrow(own.rep()),
                &destination,
                &options,
            )
            .await;
        let _ = store.data_mut().table.delete(own);
        let Some(plan) = finish_with(result, &witness)? else {
            // Layer deltas are rebuilt as the archive streams past: one instance, as ever.
            let stream: DynInputStream =
                Box::new(streams::ReadAhead::new(tokio::fs::File::from_std(file)));
            let own = store.data_mut().table.push(stream).map_err(runtime_error)?;
            let result = imo
                .imo_overlay_overlay()
                .call_push(
                    &mut store,
                    Resource::new_borrow(own.rep()),
                    &destination,
                    &options,
                )
                .await;
            let _ = store.data_mut().table.delete(own);
            return finish(result, &witness);
        };
        let sizes: Vec<u64> = plan.uploads.iter().map(|u| u.size).collect();
        let plan = Arc::new(plan);
        let options = Arc::new(options);
        let mut works: Vec<ShareWork<PushShareSummary>> = Vec::new();
        for share in shares(&sizes, instances) {
            let (plan, options, destination) = (plan.clone(), options.clone(), destination.clone());
            let (witness, file) = (witness.clone(), file.try_clone().map_err(io)?);
            works.push(Box::new(move |(mut store, imo)| {
                Box::pin(async move {
                    let own = read_only(&mut store, file)?;
                    let result = imo
                        .imo_overlay_overlay()
                        .call_push_file_share(
                            &mut store,
                            Resource::new_borrow(own.rep()),
                            &destination,
                            &plan,
                            &share,
                            &options,
                        )
                        .await;
                    let _ = store.data_mut().table.delete(own);
                    finish_with(result, &witness).map(|done| (done, (store, imo)))
                })
            }));
        }
        // One failure stops every instance, each at its next wait: no manifest is put.
        let what = format!("uploading {} blob(s)", plan.uploads.len());
        let mut first = Some((store, imo));
        let done = self
            .in_instances(&witness, &mut first, &what, works)
            .await?;
        let (mut blobs, mut bytes) = (0u64, 0u64);
        let mut last = None;
        for (d, instance) in done {
            blobs += u64::from(d.blobs_uploaded);
            bytes += d.bytes_uploaded;
            last = Some(instance);
        }
        let planned: u64 = sizes.iter().sum();
        if (blobs, bytes) != (plan.uploads.len() as u64, planned) {
            return Err(Error::Runtime(format!(
                "the instances uploaded {blobs} blob(s), {bytes} bytes of the {} blob(s), \
                 {planned} bytes planned",
                plan.uploads.len()
            )));
        }
        // Every upload is answered: an instance that uploaded (or, with nothing to upload,
        // the planner) puts the manifests.
        let (mut store, imo) = match last.or_else(|| first.take()) {
            Some(i) => i,
            None => self.twin(&witness).await?,
        };
        let own = read_only(&mut store, file)?;
        let result = imo
            .imo_overlay_overlay()
            .call_push_file_finish(
                &mut store,
                Resource::new_borrow(own.rep()),
                &destination,
                &plan,
                &options,
            )
            .await;
        let _ = store.data_mut().table.delete(own);
        let finished = finish(result, &witness)?;
        // One summary: what the plan found and placed, every share's uploads, the finish's
        // mounts and copies.
        let mut summary: Summary = plan.summary.clone().into();
        summary.blobs_uploaded += blobs as u32 + finished.blobs_uploaded;
        summary.bytes_uploaded += bytes + finished.bytes_uploaded;
        summary.blobs_mounted += finished.blobs_mounted;
        Ok(summary)
    }

    /// Describes what `sources` (repositories: all tags, or the tag named; `oci:` layouts)
    /// and the `archives` already shipped hold, as an inventory's JSON text for
    /// [`Bundle::inventories`]. Registries are read with the push credentials.
    ///
    /// ```rust
    /// # include!(concat!(env!("CARGO_MANIFEST_DIR"), "/doctest/layouts.rs"));
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let work = scratch("inventory");
    /// # let site = layout(&work, "v1", &["os"]);
    /// // `site` is an `oci:DIR:TAG` reference to a local layout.
    /// let imo = imo::Imo::builder().build()?;
    /// let json: serde_json::Value = serde_json::from_str(&imo.inventory(&[&site], &[]).await?)?;
    /// assert_eq!(json["imoInventoryVersion"], 1);
    /// # std::fs::remove_dir_all(&work)?;
    /// # Ok(()) }
    /// ```
    pub async fn inventory(&self, sources: &[&str], archives: &[PathBuf]) -> Result<String, Error> {
        let mut grants = Vec::new();
        let sources = sources
            .iter()
            .map(|s| {
                let (s, g) = layout_grant(s, false)?;
                grants.extend(g);
                Ok(s)
            })
            .collect::<Result<Vec<_>, Error>>()?;
        let references: Vec<&str> = sources.iter().map(String::as_str).collect();
        let (witness, mut store, imo) = self.sandbox(&references, &grants).await?;
        let api = imo.imo_overlay_overlay();
        let options = self.options();
        let mut json = String::new();
        if !sources.is_empty() || archives.is_empty() {
            json = finish_with(
                api.call_inventory(&mut store, &sources, &options).await,
                &witness,
            )?;
        }
        for path in archives {
            let file = tokio::fs::File::open(path)
                .await
                .map_err(|e| Error::Io(format!("{}: {e}", path.display())))?;
            let stream: DynInputStream = Box::new(streams::ReadAhead::new(file));
            let own = store.data_mut().table.push(stream).map_err(runtime_error)?;
            let result = api
                .call_inventory_add_archive(
                    &mut store,
                    &json,
                    &path.display().to_string(),
                    Resource::new_borrow(own.rep()),
                    &options,
                )
                .await;
            let _ = store.data_mut().table.delete(own);
            json = finish_with(result, &witness)?;
        }
        Ok(json)
    }

    /// Reads the whole archive with no registry (the sandbox is granted nothing but the
    /// stream) and checks every blob's size and digest as it streams, and that every
    /// reference of the manifests is carried or declared omitted. The archive is good when
    /// [`Verification::problems`] is empty; otherwise each problem names the blob or entry.
    ///
    /// ```rust
    /// # include!(concat!(env!("CARGO_MANIFEST_DIR"), "/doctest/layouts.rs"));
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let work = scratch("verify");
    /// # let v1 = layout(&work.join("build"), "v1", &["os"]);
    /// # let v2 = layout(&work.join("build"), "v2", &["os", "app"]);
    /// # let archive = work.join("app-v2.tar");
    /// let imo = imo::Imo::builder().build()?;
    /// imo.pull_to_file(&v1, &v2, &archive).await?;
    /// let report = imo.verify(tokio::fs::File::open(&archive).await?).await?;
    /// assert!(report.problems.is_empty());
    /// let omitted = report.inspection.unwrap().must_hold;
    /// assert_eq!(omitted.len(), 1, "the `os` layer, which the destination must hold");
    /// # std::fs::remove_dir_all(&work)?;
    /// # Ok(()) }
    /// ```
    pub async fn verify<R>(&self, archive: R) -> Result<Verification, Error>
    where
        R: AsyncRead + Send + Unpin + 'static,
    {
        let json = self.offline(archive, true).await?;
        serde_json::from_str(&json)
            .map_err(|e| Error::Runtime(format!("the component's verify report: {e}")))
    }

    /// Reads only the head of the archive (`imo.json`, `index.json`, the manifests), with no
    /// registry, and describes it: images, tags, platforms, attached artifacts, what is
    /// carried and what is left to the destination.
    pub async fn inspect<R>(&self, archive: R) -> Result<Inspection, Error>
    where
        R: AsyncRead + Send + Unpin + 'static,
    {
        let json = self.offline(archive, false).await?;
        serde_json::from_str(&json)
            .map_err(|e| Error::Runtime(format!("the component's inspect report: {e}")))
    }

    /// Runs `verify` (or `inspect`) in a sandbox that may reach no registry and no file.
    async fn offline<R>(&self, archive: R, verify: bool) -> Result<String, Error>
    where
        R: AsyncRead + Send + Unpin + 'static,
    {
        let (witness, mut store, imo) = self.sandbox(&[], &[]).await?;
        let stream: DynInputStream = Box::new(streams::ReadAhead::new(archive));
        let own = store.data_mut().table.push(stream).map_err(runtime_error)?;
        let borrowed = Resource::new_borrow(own.rep());
        let api = imo.imo_overlay_overlay();
        let result = if verify {
            api.call_verify(&mut store, borrowed).await
        } else {
            api.call_inspect(&mut store, borrowed).await
        };
        let _ = store.data_mut().table.delete(own);
        finish_with(result, &witness)
    }

    /// Vets (or, with `push`, pushes) `archive` to `destination`.
    async fn with_archive<R>(
        &self,
        archive: R,
        destination: &str,
        push: bool,
    ) -> Result<Summary, Error>
    where
        R: AsyncRead + Send + Unpin + 'static,
    {
        let (destination, grants) = layout_grant(destination, push)?;
        let destination = destination.as_str();
        let grants: Vec<_> = grants.into_iter().collect();
        let references = destination_references(destination, &self.settings.destination_map);
        let references: Vec<&str> = references.iter().map(String::as_str).collect();
        let (witness, mut store, imo) = self.sandbox(&references, &grants).await?;
        let stream: DynInputStream = Box::new(streams::ReadAhead::new(archive));
        let own = store.data_mut().table.push(stream).map_err(runtime_error)?;
        let borrowed = Resource::new_borrow(own.rep());
        let options = self.options();
        let api = imo.imo_overlay_overlay();
        let result = if push {
            api.call_push(&mut store, borrowed, destination, &options)
                .await
        } else {
            api.call_push_vet(&mut store, borrowed, destination, &options)
                .await
        };
        let _ = store.data_mut().table.delete(own);
        finish(result, &witness)
    }
}

/// An archive being pulled, readable (as a tokio [`AsyncRead`]) while it is produced. Made
/// by [`Imo::pull`]. If the pull fails, reading ends with an error rather than a short
/// archive; [`finish`](PullStream::finish) then returns the [`Error`].
///
/// ```rust
/// # include!(concat!(env!("CARGO_MANIFEST_DIR"), "/doctest/layouts.rs"));
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let work = scratch("pull-stream");
/// # let v2 = layout(&work, "v2", &["os", "app"]);
/// // `v2` is an `oci:DIR:TAG` reference to a local layout.
/// let imo = imo::Imo::builder().build()?;
/// let mut stream = imo.pull("scratch", &v2);
/// let mut file = tokio::fs::File::create(work.join("app-v2.tar")).await?;
/// let copied = tokio::io::copy(&mut stream, &mut file).await?;
/// assert_eq!(stream.finish().await?.archive_bytes, copied);
/// # std::fs::remove_dir_all(&work)?;
/// # Ok(()) }
/// ```
pub struct PullStream {
    reader: tokio::io::DuplexStream,
    task: Option<tokio::task::JoinHandle<Result<Summary, Error>>>,
    result: Option<Result<Summary, Error>>,
}

impl PullStream {
    /// Waits for the pull to end and returns its summary. Read the stream to its end first:
    /// the component waits for the reader when the buffer is full.
    ///
    /// ```rust
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use tokio::io::AsyncReadExt as _;
    ///
    /// let imo = imo::Imo::builder().build()?;
    /// let missing = std::env::temp_dir().join("imo-doc-no-such-layout");
    /// let mut stream = imo.pull("scratch", &format!("oci:{}:v2", missing.display()));
    /// let mut archive = Vec::new();
    /// assert!(stream.read_to_end(&mut archive).await.is_err());
    /// assert!(matches!(stream.finish().await, Err(imo::Error::Io(_))));
    /// # Ok(()) }
    /// ```
    pub async fn finish(mut self) -> Result<Summary, Error> {
        if let Some(r) = self.result.take() {
            return r;
        }
        let task = self
            .task
            .take()
            .expect("the task is taken only here and at the end of reading");
        task.await.map_err(runtime_error)?
    }
}

impl AsyncRead for PullStream {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        use std::task::Poll;
        let before = buf.filled().len();
        match std::pin::Pin::new(&mut self.reader).poll_read(cx, buf) {
            Poll::Ready(Ok(())) if buf.filled().len() == before => {}
            other => return other,
        }
        // The writer is gone: the archive ended, completely or not. Say which.
        if self.result.is_none() {
            let Some(task) = self.task.as_mut() else {
                return Poll::Ready(Ok(()));
            };
            let outcome = std::task::ready!(std::pin::Pin::new(task).poll(cx));
            self.task = None;
            self.result = Some(outcome.map_err(runtime_error).and_then(|r| r));
        }
        match &self.result {
            Some(Err(e)) => Poll::Ready(Err(std::io::Error::other(e.clone()))),
            _ => Poll::Ready(Ok(())),
        }
    }
}

/// Keeps the kernel writing a file being pulled into out to disk while the pull runs, so that
/// the `fsync` completing the archive waits only for the last moments' pages. Left to the
/// kernel's own schedule (nothing written before dirty pages reach a share of memory), the
/// whole archive was written by that `fsync` after the last byte came in: 150-200 ms of a
/// 1.05 s pull of 350 MB here, with the cores idle; started as the pull goes, the `fsync`
/// takes about 10 ms and the pull 0.85-0.9 s. Starting writeback does not wait for it. The
/// thread stops when this is dropped (its channel closes).
struct Writeback {
    _stop: Option<std::sync::mpsc::Sender<()>>,
}

/// How often [`Writeback`] starts writing what the pull wrote since.
const WRITEBACK_EVERY: std::time::Duration = std::time::Duration::from_millis(100);

impl Writeback {
    fn start(file: &std::fs::File) -> Writeback {
        #[cfg(target_os = "linux")]
        if let Ok(file) = file.try_clone() {
            use std::os::fd::AsRawFd as _;
            use std::sync::mpsc::RecvTimeoutError;
            let (stop, stopped) = std::sync::mpsc::channel::<()>();
            let spawned = std::thread::Builder::new()
                .name("imo-writeback".into())
                .spawn(move || {
                    while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(WRITEBACK_EVERY)
                    {
                        // SAFETY: the descriptor is this thread's own (a clone), open while it
                        // runs; the call only starts writing pages already dirty. A failure
                        // (a file system without it) ends the writeback: errors are the
                        // final `fsync`'s to report.
                        let started = unsafe {
                            libc::sync_file_range(
                                file.as_raw_fd(),
                                0,
                                0,
                                libc::SYNC_FILE_RANGE_WRITE,
                            )
                        };
                        if started != 0 {
                            break;
                        }
                    }
                });
            if spawned.is_ok() {
                return Writeback { _stop: Some(stop) };
            }
        }
        let _ = file;
        Writeback { _stop: None }
    }
}

/// Hands `file` to the component as a descriptor it may use in `mode`, and nothing else.
fn push_file(
    store: &mut wasmtime::Store<crate::runtime::State>,
    file: std::fs::File,
    mode: OpenMode,
) -> Result<Resource<Descriptor>, Error> {
    // Its writes run on the calling thread: the component waits for each anyway.
    let descriptor = Descriptor::File(FsFile::new(file, FsPerms::ReadWrite, mode, true));
    store
        .data_mut()
        .table
        .push(descriptor)
        .map_err(runtime_error)
}

/// Hands `file` to the component as a descriptor it may only read.
fn read_only(
    store: &mut wasmtime::Store<crate::runtime::State>,
    file: std::fs::File,
) -> Result<Resource<Descriptor>, Error> {
    let descriptor = Descriptor::File(FsFile::new(file, FsPerms::ReadOnly, OpenMode::READ, true));
    store
        .data_mut()
        .table
        .push(descriptor)
        .map_err(runtime_error)
}

/// Splits blobs of `sizes` into at most `n` shares (indices, as a pull plan numbers its
/// blobs) of about equal bytes: largest first, each to the share with the fewest bytes so far
/// (the lowest on a tie), so the same plan always splits the same way. Empty shares are left
/// out; each share lists its blobs largest first, to start the longest early.
/// A store and the component instantiated in it.
type Instance = (
    wasmtime::Store<crate::runtime::State>,
    crate::runtime::bindings::Imo,
);

/// One share's work, run in the instance it is handed, which it hands back with its result.
type ShareWork<T> = Box<
    dyn FnOnce(
            Instance,
        ) -> std::pin::Pin<
            Box<dyn std::future::Future<Output = Result<(T, Instance), Error>> + Send>,
        > + Send,
>;

/// How far ahead of the writer each instance of a pull to a stream may fetch, in bytes.
const STREAM_AHEAD: usize = 32 << 20;

/// The most of a blob the writer of a pull to a stream takes from its pipe at once.
const COPY_BUFFER: usize = 1 << 20;

fn shares(sizes: &[u64], n: usize) -> Vec<Vec<u32>> {
    let mut order: Vec<u32> = (0..sizes.len() as u32).collect();
    order.sort_by_key(|&i| (std::cmp::Reverse(sizes[i as usize]), i));
    let mut shares: Vec<(u64, Vec<u32>)> = vec![(0, Vec::new()); n.clamp(1, sizes.len().max(1))];
    for i in order {
        let least = (0..shares.len())
            .min_by_key(|&k| (shares[k].0, k))
            .expect("at least one share");
        shares[least].0 += sizes[i as usize];
        shares[least].1.push(i);
    }
    shares
        .into_iter()
        .map(|(_, s)| s)
        .filter(|s| !s.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::shares;

    #[test]
    fn shares_go_largest_first_to_the_least_loaded() {
        // 100 alone; 60 and 30 and 10 together make 100 too.
        assert_eq!(shares(&[10, 100, 30, 60], 2), vec![vec![1], vec![3, 2, 0]]);
        // Ties: the lower index first, to the lower share.
        assert_eq!(shares(&[5, 5, 5], 2), vec![vec![0, 2], vec![1]]);
        // More instances than blobs: one blob each, no empty share.
        assert_eq!(shares(&[1, 2], 8), vec![vec![1], vec![0]]);
        assert_eq!(shares(&[7, 3], 1), vec![vec![0, 1]]);
        assert!(shares(&[], 4).is_empty());
    }
}
