//! Credentials the way skopeo and docker find them: auth files, then credential helpers.
//! Only the registries a command names are looked up, so no other secret reaches the
//! component, and each entry stays keyed by what it names, so it reaches only that
//! registry (or namespace, or repository) of it.
//!
//! What the `imo` command does for each registry it names (not run here: the answer depends
//! on this machine's files):
//!
//! ```rust,no_run
//! # fn main() -> Result<(), String> {
//! let mut builder = imo::Imo::builder();
//! for (key, c) in imo::credentials::lookup_keyed("quay.io")? {
//!     builder = builder.registry_credentials(&key, &c.username, &c.password);
//! }
//! # Ok(()) }
//! ```

use crate::Credentials;
use imo_guest::credentials::Key;
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// The user name docker stores with an identity token; the guest then asks the token
/// service with `grant_type=refresh_token`.
const IDENTITY_TOKEN_USER: &str = "<token>";

/// The auth files searched, in order: `$REGISTRY_AUTH_FILE`,
/// `$XDG_RUNTIME_DIR/containers/auth.json`, `~/.config/containers/auth.json`,
/// `$DOCKER_CONFIG/config.json` or `~/.docker/config.json`. Files that do not exist are
/// listed too; [`lookup`] skips them.
///
/// ```rust
/// for file in imo::credentials::auth_files() {
///     let name = file.file_name().and_then(|n| n.to_str()).unwrap_or_default();
///     println!("{} ({name})", file.display());
/// }
/// ```
pub fn auth_files() -> Vec<PathBuf> {
    let env = |k: &str| std::env::var_os(k).map(PathBuf::from);
    let home = env("HOME");
    let mut files = Vec::new();
    files.extend(env("REGISTRY_AUTH_FILE"));
    files.extend(env("XDG_RUNTIME_DIR").map(|d| d.join("containers/auth.json")));
    files.extend(
        home.as_ref()
            .map(|h| h.join(".config/containers/auth.json")),
    );
    match env("DOCKER_CONFIG") {
        Some(d) => files.push(d.join("config.json")),
        None => files.extend(home.map(|h| h.join(".docker/config.json"))),
    }
    files
}

/// What one auth file says about a registry; see [`entry`].
///
/// ```rust
/// use imo::credentials::{Entry, entry};
///
/// let json = serde_json::json!({"credsStore": "pass"});
/// assert_eq!(entry(&json, "quay.io")?, Entry::Helper("pass".into()));
/// assert_eq!(entry(&serde_json::json!({}), "quay.io")?, Entry::None);
/// # Ok::<(), String>(())
/// ```
#[derive(Debug, PartialEq, Eq)]
pub enum Entry {
    /// Credentials written in the file itself (`auth`, or `identitytoken` with the user
    /// name `<token>`).
    Found(Credentials),
    /// Ask `docker-credential-<helper>`.
    Helper(String),
    /// The file says nothing about the registry.
    None,
}

/// Looks `registry` (`host[:port]`, `docker.io` for Docker Hub) up in the auth files, then in
/// their credential helpers. The first file that names the registry decides. `Ok(None)`:
/// no file names it, so it is reached anonymously. Errors name the file or helper and never
/// include a secret.
///
/// ```rust
/// match imo::credentials::lookup("registry.example.invalid") {
///     Ok(Some(c)) => println!("found credentials for {}", c.username),
///     Ok(None) => println!("anonymous"),
///     Err(e) => println!("the auth files are broken: {e}"),
/// }
/// ```
pub fn lookup(registry: &str) -> Result<Option<Credentials>, String> {
    for (file, json) in files() {
        match entry(&json?, registry).map_err(|e| format!("{}: {e}", file.display()))? {
            Entry::Found(c) => return Ok(Some(c)),
            Entry::Helper(h) => return helper(&h, registry),
            Entry::None => {}
        }
    }
    Ok(None)
}

/// Every credential the auth files hold for `registry` (`host[:port]`, `docker.io` for
/// Docker Hub), keyed by what it names: `host[:port]` for the whole registry (from `auths`
/// or a credential helper, as [`lookup`] finds it), or `host[:port]/path` for a namespace or
/// repository (`auths` keys such as `quay.io/org`). Keys are normalised: no scheme, Docker
/// Hub as `docker.io`. Files are read in [`auth_files`] order up to the first that names
/// the registry itself; of two entries with the same key, the first file's is kept.
/// Entries for other registries are never decoded.
///
/// ```rust
/// match imo::credentials::lookup_keyed("quay.io") {
///     Ok(found) => {
///         for (key, c) in found {
///             println!("{key}: {}", c.username);
///         }
///     }
///     Err(e) => println!("the auth files are broken: {e}"),
/// }
/// ```
pub fn lookup_keyed(registry: &str) -> Result<Vec<(String, Credentials)>, String> {
    let mut out: Vec<(String, Credentials)> = Vec::new();
    for (file, json) in files() {
        let json = json?;
        let named = |e: String| format!("{}: {e}", file.display());
        for (key, c) in namespaced(&json, registry).map_err(named)? {
            if !out.iter().any(|(k, _)| *k == key) {
                out.push((key, c));
            }
        }
        let found = match entry(&json, registry).map_err(named)? {
            Entry::Found(c) => Some(c),
            Entry::Helper(h) => helper(&h, registry)?,
            Entry::None => continue,
        };
        out.extend(found.map(|c| (host_key(registry), c)));
        break;
    }
    Ok(out)
}

/// The auth files that exist, each with its JSON or why it is not JSON.
fn files() -> impl Iterator<Item = (PathBuf, Result<serde_json::Value, String>)> {
    auth_files().into_iter().filter_map(|file| {
        let text = std::fs::read_to_string(&file).ok()?;
        let json = serde_json::from_str(&text)
            .map_err(|e| format!("{} is not valid JSON: {e}", file.display()));
        Some((file, json))
    })
}

/// `registry` as a normalised key: lower case, `docker.io` for Docker Hub.
fn host_key(registry: &str) -> String {
    Key::parse(registry).map_or_else(|| registry.to_owned(), |k| k.host)
}

/// The `auths` entries of one file for a namespace or repository of `registry`, keyed
/// `host[:port]/path`; entries without credentials are skipped.
fn namespaced(
    json: &serde_json::Value,
    registry: &str,
) -> Result<Vec<(String, Credentials)>, String> {
    let host = host_key(registry);
    let mut out = Vec::new();
    for (key, value) in auths(json) {
        if let Some(Key {
            host: h,
            path: Some(path),
        }) = Key::parse(key)
            && h == host
            && let Some(c) = decode(key, value)?
        {
            out.push((format!("{h}/{path}"), c));
        }
    }
    Ok(out)
}

fn auths(json: &serde_json::Value) -> impl Iterator<Item = (&String, &serde_json::Value)> {
    json.get("auths")
        .and_then(|a| a.as_object())
        .into_iter()
        .flatten()
}

/// Whether an auth-file key names the whole of `registry` (not one namespace of it).
fn key_matches(key: &str, registry: &str) -> bool {
    Key::parse(key).is_some_and(|k| k.path.is_none() && k.host == host_key(registry))
}

/// Reads one auth file's `auths`, `credHelpers` and `credsStore` for the whole of
/// `registry`, in that order, as [`lookup`] does. Keys may be URLs (`https://quay.io/v1/`);
/// `docker.io`, `index.docker.io` and `registry-1.docker.io` all name Docker Hub. A key
/// with a path (`quay.io/org`) names one namespace, not the registry: see
/// [`lookup_keyed`]. Errors (a malformed `auth`) name the key and never include the secret.
///
/// ```rust
/// use imo::credentials::{Entry, entry};
///
/// // `auth` is base64 of `user:password`.
/// let json = serde_json::json!({
///     "auths": {"https://index.docker.io/v1/": {"auth": "aHViOnMzY3JldA=="}},
///     "credHelpers": {"gcr.io": "gcloud"},
/// });
/// let Entry::Found(c) = entry(&json, "docker.io")? else { panic!() };
/// assert_eq!((c.username.as_str(), c.password.as_str()), ("hub", "s3cret"));
/// assert_eq!(entry(&json, "gcr.io")?, Entry::Helper("gcloud".into()));
/// assert_eq!(entry(&json, "quay.io")?, Entry::None);
/// # Ok::<(), String>(())
/// ```
pub fn entry(json: &serde_json::Value, registry: &str) -> Result<Entry, String> {
    for (key, value) in auths(json) {
        if key_matches(key, registry)
            && let Some(c) = decode(key, value)?
        {
            return Ok(Entry::Found(c));
        }
    }
    if let Some(helpers) = json.get("credHelpers").and_then(|h| h.as_object()) {
        for (key, name) in helpers {
            if key_matches(key, registry)
                && let Some(name) = name.as_str()
            {
                return Ok(Entry::Helper(name.into()));
            }
        }
    }
    if let Some(store) = json
        .get("credsStore")
        .and_then(|s| s.as_str())
        .filter(|s| !s.is_empty())
    {
        return Ok(Entry::Helper(store.into()));
    }
    Ok(Entry::None)
}

/// The credentials of one `auths` entry (`identitytoken` first, then `auth`), or `None`
/// when it holds neither (docker writes such entries for registries kept in a helper).
/// Errors name the key, never the secret.
fn decode(key: &str, value: &serde_json::Value) -> Result<Option<Credentials>, String> {
    let text = |field: &str| {
        value
            .get(field)
            .and_then(|t| t.as_str())
            .filter(|t| !t.is_empty())
    };
    if let Some(token) = text("identitytoken") {
        return Ok(Some(Credentials {
            username: IDENTITY_TOKEN_USER.into(),
            password: token.into(),
        }));
    }
    let Some(auth) = text("auth") else {
        return Ok(None);
    };
    let decoded = imo_guest::base64::decode(auth)
        .ok_or_else(|| format!("the auth entry for {key} is not base64"))?;
    let decoded =
        String::from_utf8(decoded).map_err(|_| format!("the auth entry for {key} is not UTF-8"))?;
    let (u, p) = decoded
        .split_once(':')
        .ok_or_else(|| format!("the auth entry for {key} is not user:password"))?;
    Ok(Some(Credentials {
        username: u.into(),
        password: p.into(),
    }))
}

/// Runs `docker-credential-NAME get` with the registry on stdin (the component cannot run
/// programs, so the host does).
fn helper(name: &str, registry: &str) -> Result<Option<Credentials>, String> {
    use std::io::Write as _;
    let program = format!("docker-credential-{name}");
    let server = if registry == "docker.io" {
        "https://index.docker.io/v1/"
    } else {
        registry
    };
    let mut child = Command::new(&program)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("running the credential helper {program}: {e}"))?;
    child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(server.as_bytes())
        .map_err(|e| format!("writing to {program}: {e}"))?;
    let out = child
        .wait_with_output()
        .map_err(|e| format!("running {program}: {e}"))?;
    if !out.status.success() {
        let said = String::from_utf8_lossy(&out.stdout) + String::from_utf8_lossy(&out.stderr);
        if said.contains("credentials not found") {
            return Ok(None);
        }
        return Err(format!("{program} get {server} failed ({})", out.status));
    }
    #[derive(serde::Deserialize)]
    struct Answer {
        #[serde(rename = "Username")]
        username: String,
        #[serde(rename = "Secret")]
        secret: String,
    }
    let a: Answer = serde_json::from_slice(&out.stdout)
        .map_err(|e| format!("{program} answered malformed JSON: {e}"))?;
    Ok(Some(Credentials {
        username: a.username,
        password: a.secret,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds(u: &str, p: &str) -> Entry {
        Entry::Found(Credentials {
            username: u.into(),
            password: p.into(),
        })
    }

    #[test]
    fn auths_entries() {
        let json = serde_json::json!({
            "auths": {
                "127.0.0.1:5000": {"auth": "dXNlcjpwYTpzcw=="},
                "https://index.docker.io/v1/": {"auth": "aHViOnNlY3JldA=="},
                "quay.io": {"identitytoken": "refresh"},
            },
            "credHelpers": {"gcr.io": "gcloud"},
        });
        assert_eq!(
            entry(&json, "127.0.0.1:5000").unwrap(),
            creds("user", "pa:ss")
        );
        assert_eq!(entry(&json, "docker.io").unwrap(), creds("hub", "secret"));
        assert_eq!(
            entry(&json, "quay.io").unwrap(),
            creds("<token>", "refresh")
        );
        assert_eq!(
            entry(&json, "gcr.io").unwrap(),
            Entry::Helper("gcloud".into())
        );
        assert_eq!(entry(&json, "127.0.0.1:5001").unwrap(), Entry::None);
        let store = serde_json::json!({"auths": {}, "credsStore": "pass"});
        assert_eq!(
            entry(&store, "r.example").unwrap(),
            Entry::Helper("pass".into())
        );
    }

    #[test]
    fn namespace_keys_name_only_their_namespace() {
        // dXNlcjpwdw== is user:pw, b3JnOnB3 org:pw, YXBwOnB3 app:pw.
        let json = serde_json::json!({"auths": {
            "quay.io/org": {"auth": "b3JnOnB3"},
            "Quay.io/org/app/": {"auth": "YXBwOnB3"},
            "https://quay.io/v1/": {"auth": "dXNlcjpwdw=="},
            "quay.io/empty": {},
            "index.docker.io/library": {"auth": "dXNlcjpwdw=="},
            "other.example/org": {"auth": "!! never decoded"},
        }});
        assert_eq!(entry(&json, "quay.io").unwrap(), creds("user", "pw"));
        let mut keys: Vec<(String, String)> = namespaced(&json, "quay.io")
            .unwrap()
            .into_iter()
            .map(|(k, c)| (k, c.username))
            .collect();
        keys.sort();
        let want = |k: &str, u: &str| (k.to_owned(), u.to_owned());
        assert_eq!(
            keys,
            [want("quay.io/org", "org"), want("quay.io/org/app", "app")]
        );
        let hub = namespaced(&json, "docker.io").unwrap();
        assert_eq!(hub.len(), 1);
        assert_eq!(hub[0].0, "docker.io/library");
        // A namespace key alone says nothing about the rest of the registry.
        let json = serde_json::json!({"auths": {"quay.io/org": {"auth": "b3JnOnB3"}}});
        assert_eq!(entry(&json, "quay.io").unwrap(), Entry::None);
        assert!(namespaced(&json, "quay.io:8443").unwrap().is_empty());
    }

    #[test]
    fn malformed_entries_are_named_without_secrets() {
        let json = serde_json::json!({"auths": {"r.example": {"auth": "bm9jb2xvbg=="}}});
        let err = entry(&json, "r.example").unwrap_err();
        assert!(
            err.contains("not user:password") && !err.contains("nocolon"),
            "{err}"
        );
        let json = serde_json::json!({"auths": {"r.example": {"auth": "!!"}}});
        assert!(
            entry(&json, "r.example")
                .unwrap_err()
                .contains("not base64")
        );
    }

    #[test]
    fn a_missing_helper_is_a_clear_error() {
        let err = helper("imo-test-none", "r.example").unwrap_err();
        assert!(err.contains("docker-credential-imo-test-none"), "{err}");
    }
}
