//! The wasmtime embedding: one engine and compiled component per process, one store per
//! operation, granting the component only what the operation needs.

use crate::http_client::Connector;
use crate::policy::NetworkPolicy;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use wasmtime::Result;
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Config, Engine, Store};
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::p2::bindings::http::types::ErrorCode;
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView};

/// The component's `.wasm` bytes, built from `guest/` by build.rs: what `imo component`
/// writes, for running under other WASI 0.2 hosts (docs/embedding.md).
///
/// ```rust
/// // The wasm magic number, then the version and layer of a component (not a core module).
/// assert_eq!(imo::COMPONENT[..8], *b"\0asm\x0d\0\x01\0");
/// ```
pub const COMPONENT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/imo.wasm"));

pub mod bindings {
    wasmtime::component::bindgen!({
        world: "imo",
        path: "../wit",
        exports: { default: async },
        with: {
            "wasi:io": wasmtime_wasi::p2::bindings::io,
            "wasi:filesystem": wasmtime_wasi::p2::bindings::filesystem,
        },
    });
}

/// A compiled component, ready to instantiate many times.
pub struct Runtime {
    engine: Engine,
    linker: Linker<State>,
    component: Component,
}

impl Runtime {
    /// Compiles the embedded component, or loads it from the on-disk cache (milliseconds
    /// instead of the quarter second Cranelift takes).
    pub fn new() -> Result<Self> {
        let mut config = Config::new();
        config.wasm_component_model(true);
        let engine = Engine::new(&config)?;
        let component = load_component(&engine)?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
        Ok(Self {
            engine,
            linker,
            component,
        })
    }

    /// The names of the component's imports and exports, as its world has them.
    pub fn world(&self) -> (Vec<String>, Vec<String>) {
        let ty = self.component.component_type();
        let names = |items: &mut dyn Iterator<Item = &str>| items.map(str::to_owned).collect();
        let imports = names(&mut ty.imports(&self.engine).map(|(n, _)| n));
        let exports = names(&mut ty.exports(&self.engine).map(|(n, _)| n));
        (imports, exports)
    }

    /// A store for one operation: network limited by `policy`, each linear memory of the
    /// component to `memory_limit` bytes, the component's stderr lines handed to `report`
    /// (if any), and no files, environment or sockets. `args` only matter to the
    /// component's own command line.
    pub fn store(
        &self,
        policy: Arc<NetworkPolicy>,
        connector: Arc<Connector>,
        report: Option<Reporter>,
        args: &[&str],
        layouts: &[crate::LayoutGrant],
        memory_limit: u64,
    ) -> Result<Store<State>> {
        let mut wasi = WasiCtx::builder();
        wasi.allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .args(args);
        for g in layouts {
            let perms = if g.writable {
                FsPerms::ReadWrite
            } else {
                FsPerms::ReadOnly
            };
            wasi.preopened_dir(&g.dir, g.dir.to_string_lossy(), perms)?;
        }
        if let Some(report) = report {
            wasi.stderr(ReportLines(report));
        }
        let last_host = Arc::new(Mutex::new(None));
        let state = State {
            wasi: wasi.build(),
            http: WasiHttpCtx::new(),
            table: ResourceTable::new(),
            hooks: Hooks {
                policy,
                connector,
                last_host: last_host.clone(),
            },
            memory: MemoryLimiter {
                limit: usize::try_from(memory_limit).unwrap_or(usize::MAX),
                last_host,
            },
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.memory);
        Ok(store)
    }

    /// Runs the component's own command line (`wasi:cli/run`) in a store; whether it exited
    /// successfully.
    pub async fn run_cli(&self, store: &mut Store<State>) -> Result<bool> {
        let imo = self.instantiate(store).await?;
        Ok(imo.wasi_cli_run().call_run(store).await?.is_ok())
    }

    pub async fn instantiate(&self, store: &mut Store<State>) -> Result<bindings::Imo> {
        bindings::Imo::instantiate_async(store, &self.component, &self.linker).await
    }
}

/// Where compiled components are kept: `$IMO_CACHE_DIR`, else the user's cache directory.
fn cache_dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("IMO_CACHE_DIR") {
        return Some(d.into());
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("imo"))
}

/// Why the cache was not used, said once per process: taken by the first
/// [`Builder::build`](crate::Builder::build) for its reporter.
static CACHE_NOTICE: std::sync::Mutex<Option<String>> = std::sync::Mutex::new(None);

/// The line explaining why the compiled-code cache was passed over, if it was (once).
pub(crate) fn take_cache_notice() -> Option<String> {
    CACHE_NOTICE.lock().ok()?.take()
}

fn cache_notice(line: String) {
    if let Ok(mut n) = CACHE_NOTICE.lock() {
        n.get_or_insert(line);
    }
}

/// What a cache entry must be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Entry {
    Dir,
    File,
}

/// Whether a cache entry of `owner` and `mode` (`st_mode`, type bits included) may be
/// trusted by a process of effective uid `euid`; else why not. A compiled component is
/// native code run outside the sandbox, so, as ssh treats its keys, only the user may have
/// written it: owned by them, writable by no group or other, never a symbolic link.
fn untrusted(entry: Entry, owner: u32, mode: u32, euid: u32) -> Option<String> {
    let kind = mode & libc::S_IFMT;
    let expected = match entry {
        Entry::Dir => libc::S_IFDIR,
        Entry::File => libc::S_IFREG,
    };
    if kind == libc::S_IFLNK {
        return Some("it is a symbolic link".into());
    }
    if kind != expected {
        return Some(match entry {
            Entry::Dir => "it is not a directory".into(),
            Entry::File => "it is not a regular file".into(),
        });
    }
    if owner != euid {
        return Some(format!(
            "it belongs to uid {owner}, not to uid {euid} that imo runs as"
        ));
    }
    match (mode & 0o020 != 0, mode & 0o002 != 0) {
        (true, true) => Some("it is writable by its group and by others".into()),
        (true, false) => Some("it is writable by its group".into()),
        (false, true) => Some("it is writable by others".into()),
        (false, false) => None,
    }
}

/// The cache directory, created private (0700) if missing; `Err(Some(why))` if it exists
/// but may not be trusted, `Err(None)` if it cannot be had (a read-only home: only
/// start-up time is lost, as before).
fn trusted_dir(dir: &std::path::Path, euid: u32) -> std::result::Result<(), Option<String>> {
    use std::os::unix::fs::{DirBuilderExt as _, MetadataExt as _};
    let meta = match std::fs::symlink_metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|_| None)?;
            std::fs::symlink_metadata(dir).map_err(|_| None)?
        }
        m => m.map_err(|_| None)?,
    };
    match untrusted(Entry::Dir, meta.uid(), meta.mode(), euid) {
        Some(why) => Err(Some(why)),
        None => Ok(()),
    }
}

/// The bytes of the cache file `path`: `Ok(None)` if there is none, `Err(why)` if it may
/// not be trusted. Opened without following a symbolic link and checked on the open file,
/// so what is checked is what is read.
fn read_trusted(path: &std::path::Path, euid: u32) -> std::result::Result<Option<Vec<u8>>, String> {
    use std::io::Read as _;
    use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _};
    // O_NONBLOCK: a FIFO planted here must not hang the open; it is refused below.
    let open = std::fs::File::options()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path);
    let mut file = match open {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err("it is a symbolic link".into());
        }
        Err(e) => return Err(format!("it cannot be read ({e})")),
    };
    let meta = file.metadata().map_err(|e| e.to_string())?;
    if let Some(why) = untrusted(Entry::File, meta.uid(), meta.mode(), euid) {
        return Err(why);
    }
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)
        .map_err(|e| format!("it cannot be read ({e})"))?;
    Ok(Some(bytes))
}

/// A cache file starts with this and the SHA-256 of the compiled code after it.
const SEAL: &[u8] = b"imo compiled component sha256:";

/// The cache file's bytes for `code`: a line naming its digest, then the code. One file,
/// so the digest and the code are replaced together.
fn seal(code: &[u8]) -> Vec<u8> {
    let digest = imo_guest::digest::Digest::of(code);
    let mut out = Vec::with_capacity(SEAL.len() + 65 + code.len());
    out.extend_from_slice(SEAL);
    out.extend_from_slice(digest.hex().as_bytes());
    out.push(b'\n');
    out.extend_from_slice(code);
    out
}

/// The compiled code in a cache file, if it matches the digest it carries.
fn unseal(file: &[u8]) -> Option<&[u8]> {
    let rest = file.strip_prefix(SEAL)?;
    let (hex, code) = (rest.get(..64)?, rest.get(64..)?.strip_prefix(b"\n")?);
    (imo_guest::digest::Digest::of(code).hex().as_bytes() == hex).then_some(code)
}

fn load_component(engine: &Engine) -> Result<Component> {
    use std::hash::{Hash, Hasher};
    // The key covers the component's bytes, the cache file's format and everything about
    // the engine that makes compiled code incompatible, so a stale entry is never loaded.
    let mut h = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut h);
    SEAL.hash(&mut h);
    let key = format!(
        "{}-{:016x}",
        imo_guest::digest::Digest::of(COMPONENT).hex(),
        h.finish()
    );
    let Some(dir) = cache_dir() else {
        return Component::new(engine, COMPONENT);
    };
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    match trusted_dir(&dir, euid) {
        Ok(()) => {}
        Err(None) => return Component::new(engine, COMPONENT),
        Err(Some(why)) => {
            cache_notice(format!(
                "not using the compiled-code cache {}: {why}; compiling in memory (make it \
                 the user's own and private, e.g. `chmod go-w`, or set IMO_CACHE_DIR)",
                dir.display()
            ));
            return Component::new(engine, COMPONENT);
        }
    }
    let path = dir.join(format!("imo-{}.cwasm", &key[..32]));
    let refused = |why: &str| {
        cache_notice(format!(
            "not using the compiled-code cache file {}: {why}; compiling it again",
            path.display()
        ));
    };
    match read_trusted(&path, euid) {
        Ok(None) => {}
        Ok(Some(file)) => match unseal(&file) {
            // SAFETY: the code was written by `serialize` below for this exact engine
            // configuration and component (the name carries both), into a file and a
            // directory that only this user can have written, and it matches its digest.
            // The digest catches damage (a truncated write, a bad disk); it is no defence
            // against someone who can write the directory, who could rewrite it too: the
            // ownership and permission checks are the security boundary.
            Some(code) => {
                if let Ok(c) = unsafe { Component::deserialize(engine, code) } {
                    return Ok(c);
                }
            }
            None => refused("its contents do not match the digest it carries"),
        },
        Err(why) => refused(&why),
    }
    let component = Component::new(engine, COMPONENT)?;
    // A cache that cannot be written only costs start-up time. Written exclusively under a
    // fresh name and renamed into place: a planted file or symlink is replaced, not reused.
    if let Ok(code) = component.serialize() {
        let _ = crate::atomic_file::write_private(&path, &seal(&code));
    }
    Ok(component)
}

/// Receives the component's progress lines.
pub type Reporter = Arc<dyn Fn(&str) + Send + Sync>;

/// The component's stderr, each line handed to a [`Reporter`] as the component writes it:
/// synchronously, so that no line is still on its way when the call that wrote it returns
/// (a pipe read by a task lost the last lines of a failing command to its exit).
struct ReportLines(Reporter);

impl wasmtime_wasi::cli::IsTerminal for ReportLines {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl wasmtime_wasi::cli::StdoutStream for ReportLines {
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(LineSplitter::new(self.0.clone()))
    }

    fn p2_stream(&self) -> Box<dyn wasmtime_wasi::p2::OutputStream> {
        Box::new(LineSplitter::new(self.0.clone()))
    }
}

/// Bytes in, whole lines out to the reporter; what is left of a line when dropped, too.
struct LineSplitter {
    report: Reporter,
    partial: Vec<u8>,
}

/// The most of one line held before it is reported anyway.
const MAX_LINE: usize = 64 * 1024;

impl LineSplitter {
    fn new(report: Reporter) -> Self {
        LineSplitter {
            report,
            partial: Vec::new(),
        }
    }

    fn take(&mut self, bytes: &[u8]) {
        for piece in bytes.split_inclusive(|&b| b == b'\n') {
            self.partial.extend_from_slice(piece);
            if piece.ends_with(b"\n") || self.partial.len() >= MAX_LINE {
                self.emit();
            }
        }
    }

    fn emit(&mut self) {
        let text = String::from_utf8_lossy(&self.partial);
        let line = text.trim_end_matches(['\n', '\r']);
        (self.report)(line.strip_prefix("imo: ").unwrap_or(line));
        self.partial.clear();
    }
}

impl Drop for LineSplitter {
    fn drop(&mut self) {
        if !self.partial.is_empty() {
            self.emit();
        }
    }
}

#[async_trait::async_trait]
impl wasmtime_wasi::p2::Pollable for LineSplitter {
    async fn ready(&mut self) {}
}

impl wasmtime_wasi::p2::OutputStream for LineSplitter {
    fn write(&mut self, bytes: bytes::Bytes) -> wasmtime_wasi::p2::StreamResult<()> {
        self.take(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> wasmtime_wasi::p2::StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> wasmtime_wasi::p2::StreamResult<usize> {
        Ok(MAX_LINE)
    }
}

impl tokio::io::AsyncWrite for LineSplitter {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.take(buf);
        std::task::Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

pub struct State {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    pub table: ResourceTable,
    hooks: Hooks,
    memory: MemoryLimiter,
}

/// Refuses to grow a linear memory of the component beyond `limit` bytes, with a trap
/// carrying [`MemoryExceeded`] rather than a failed `memory.grow`, which Rust's allocator
/// answers with an abort that says nothing useful.
struct MemoryLimiter {
    limit: usize,
    /// The host of the component's last request (shared with [`Hooks`]), to say whose
    /// answer was too large.
    last_host: Arc<Mutex<Option<String>>>,
}

impl wasmtime::ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> Result<bool> {
        if desired > self.limit {
            let last_host = self.last_host.lock().expect("last host lock").clone();
            return Err(wasmtime::Error::new(MemoryExceeded {
                limit: self.limit as u64,
                wanted: desired as u64,
                last_host,
            }));
        }
        Ok(maximum.is_none_or(|m| desired <= m))
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> Result<bool> {
        // Tables hold function references: a few thousand at most, never registry data.
        Ok(desired <= 1 << 20 && maximum.is_none_or(|m| desired <= m))
    }
}

/// The component wanted more memory than its limit: the trap a [`MemoryLimiter`] raises,
/// turned into an [`Error::Runtime`](crate::Error::Runtime) naming the limit.
#[derive(Debug)]
pub(crate) struct MemoryExceeded {
    pub limit: u64,
    pub wanted: u64,
    pub last_host: Option<String>,
}

impl std::fmt::Display for MemoryExceeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mib = |b: u64| b.div_ceil(1 << 20);
        write!(
            f,
            "the imo component needed more than its memory limit of {} MiB (it asked for {} \
             MiB)",
            mib(self.limit),
            mib(self.wanted)
        )?;
        if let Some(host) = &self.last_host {
            write!(f, " after its last request to {host}")?;
        }
        write!(
            f,
            ": something it was given (a tag list, manifest, token answer, inventory or \
             archive entry) is larger than imo holds in memory; if it is legitimate, raise \
             the limit with --memory-limit SIZE (such as 1G; `Builder::memory_limit` in the \
             library)"
        )
    }
}

impl std::error::Error for MemoryExceeded {}

impl WasiView for State {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for State {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.hooks,
        }
    }
}

/// Every outgoing request passes the policy here, and nowhere else.
struct Hooks {
    policy: Arc<NetworkPolicy>,
    connector: Arc<Connector>,
    /// The host of the last request, for [`MemoryExceeded`].
    last_host: Arc<Mutex<Option<String>>>,
}

type SendFuture = Box<
    dyn Future<
            Output = wasmtime_wasi_http::Result<(
                http::Response<wasmtime_wasi_http::WasiBody>,
                Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
            )>,
        > + Send,
>;

impl WasiHttpHooks for Hooks {
    // The guest's error then says why the handshake failed (unknown issuer, expired,
    // wrong name), not only that it did.
    fn p2_error_from_tls(&mut self, err: &std::io::Error) -> ErrorCode {
        ErrorCode::InternalError(Some(format!("TLS handshake failed: {err}")))
    }

    fn p2_error_from_connect(&mut self, err: &std::io::Error) -> ErrorCode {
        ErrorCode::InternalError(Some(format!("cannot connect: {err}")))
    }

    // A few chunks of request body in flight, so the guest hashes the next megabyte of an
    // upload while the host sends the last ones (the default is one).
    fn p2_outgoing_body_buffer_chunks(&mut self) -> usize {
        4
    }

    fn send_request(
        &mut self,
        request: http::Request<wasmtime_wasi_http::WasiBody>,
        options: Option<wasmtime_wasi_http::RequestOptions>,
        _fut: Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
    ) -> SendFuture {
        let policy = self.policy.clone();
        let connector = self.connector.clone();
        let uri = request.uri();
        let authority = uri
            .authority()
            .map(|a| a.as_str().to_owned())
            .unwrap_or_default();
        *self.last_host.lock().expect("last host lock") = Some(authority.clone());
        Box::new(async move {
            let uri = request.uri();
            let scheme = uri.scheme_str().unwrap_or("https").to_owned();
            if let Err(denied) = policy.check(&scheme, &authority) {
                policy.record(denied);
                return Err(wasmtime_wasi_http::Error::HttpRequestDenied);
            }
            let response = connector.send(request, options).await?;
            policy.learn_from_response(&scheme, &authority, response.headers());
            Ok((
                response,
                Box::new(async { Ok(()) })
                    as Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ME: u32 = 1000;

    #[test]
    fn each_line_reaches_the_reporter_as_it_is_written() {
        let seen = Arc::new(Mutex::new(Vec::<String>::new()));
        let sink = seen.clone();
        let report: Reporter = Arc::new(move |l: &str| sink.lock().unwrap().push(l.to_owned()));
        let mut s = LineSplitter::new(report);
        s.take(b"imo: vet a: 0 of 1 pres");
        assert!(seen.lock().unwrap().is_empty(), "half a line waits");
        s.take(b"ent\nimo: vet a: sha256:x is missing\r\nlast");
        assert_eq!(
            *seen.lock().unwrap(),
            ["vet a: 0 of 1 present", "vet a: sha256:x is missing"]
        );
        drop(s);
        assert_eq!(
            seen.lock().unwrap().last().unwrap(),
            "last",
            "the rest, when dropped"
        );
    }

    #[test]
    fn only_the_users_own_private_directory_and_regular_file_are_trusted() {
        assert_eq!(untrusted(Entry::Dir, ME, 0o040700, ME), None);
        assert_eq!(untrusted(Entry::Dir, ME, 0o040755, ME), None);
        assert_eq!(untrusted(Entry::File, ME, 0o100600, ME), None);
        assert_eq!(untrusted(Entry::File, ME, 0o100644, ME), None);
        // root's own cache is root's.
        assert_eq!(untrusted(Entry::Dir, 0, 0o040755, 0), None);
    }

    #[test]
    fn a_cache_others_could_have_written_is_refused() {
        let why = |e, uid, mode| untrusted(e, uid, mode, ME).unwrap_or_default();
        assert_eq!(
            why(Entry::Dir, ME, 0o040777),
            "it is writable by its group and by others"
        );
        assert_eq!(why(Entry::Dir, ME, 0o040775), "it is writable by its group");
        assert_eq!(why(Entry::File, ME, 0o100602), "it is writable by others");
        // Sticky /tmp-like directories are still writable by others.
        assert_eq!(
            why(Entry::Dir, ME, 0o041777),
            "it is writable by its group and by others"
        );
        // `sudo` keeping HOME: the user's cache is not root's to run.
        assert_eq!(
            untrusted(Entry::Dir, ME, 0o040700, 0).unwrap_or_default(),
            "it belongs to uid 1000, not to uid 0 that imo runs as"
        );
        assert!(why(Entry::File, 1001, 0o100600).contains("belongs to uid 1001"));
        assert_eq!(why(Entry::File, ME, 0o120777), "it is a symbolic link");
        assert_eq!(why(Entry::Dir, ME, 0o120777), "it is a symbolic link");
        assert_eq!(why(Entry::File, ME, 0o010600), "it is not a regular file");
        assert_eq!(why(Entry::File, ME, 0o040700), "it is not a regular file");
        assert_eq!(why(Entry::Dir, ME, 0o100700), "it is not a directory");
    }

    #[test]
    fn a_cache_file_is_used_only_if_it_matches_its_digest() {
        let file = seal(b"\x7fELF compiled code");
        assert_eq!(unseal(&file), Some(&b"\x7fELF compiled code"[..]));
        let mut flipped = file.clone();
        let last = flipped.len() - 3;
        flipped[last] ^= 0x40;
        assert_eq!(unseal(&flipped), None);
        assert_eq!(unseal(&file[..file.len() - 1]), None, "truncated");
        assert_eq!(unseal(b"\x7fELF compiled code"), None, "no seal");
        assert_eq!(unseal(&file[..SEAL.len() + 10]), None);
        assert_eq!(unseal(b""), None);
    }
}
