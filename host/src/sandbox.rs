//! What one operation may reach: its grants (layouts), the network policy assembled from
//! the references it names, the TLS connector, and the store and component instance built
//! from them; and the translation of the component's answer back to the host's.

use crate::Imo;
use crate::api::{Bundle, Credentials, Error, LayoutGrant, Summary, runtime_error, trap_error};
use crate::http_client::{Connector, Timeouts, TlsSettings};
use crate::policy::NetworkPolicy;
use crate::runtime::{self, bindings::exports::imo::overlay::overlay as wit};
use std::sync::Arc;

impl Imo {
    /// The settings handed to the component with every call.
    pub(crate) fn options(&self) -> wit::Options {
        let wit = |c: &Credentials| wit::Credentials {
            username: c.username.clone(),
            password: c.password.clone(),
        };
        wit::Options {
            base_credentials: self.settings.base.as_ref().map(wit),
            final_credentials: self.settings.final_.as_ref().map(wit),
            push_credentials: self.settings.push.as_ref().map(wit),
            registry_credentials: (self.settings.registry_credentials.iter())
                .map(|(key, c)| (key.clone(), wit(c)))
                .collect(),
            insecure_registries: self.settings.insecure.clone(),
            mount_from: self.settings.mount_from.clone(),
            platforms: self.settings.platforms.clone(),
            referrers: self.settings.referrers,
            max_retries: self.settings.max_retries,
            chunk_size: self.settings.chunk_size,
            progress: self.settings.reporter.is_some(),
            destination_map: self.settings.destination_map.clone(),
            mount_from_archive: self.settings.mount_from_archive,
            deltas: self.settings.deltas,
        }
    }

    /// TLS for an operation on `references`: unverified only for those (and the token
    /// services they name), and only if asked.
    pub(crate) fn connector(&self, references: &[&str]) -> Arc<Connector> {
        let mut settings = TlsSettings::system();
        if let Some(dirs) = &self.settings.certs_d {
            settings.certs_d = dirs.clone();
        }
        settings.cert_dir = self.settings.cert_dir.clone();
        if !self.settings.tls_verify {
            settings.skip_verify = references
                .iter()
                .filter_map(|r| imo_guest::reference::Reference::parse(r).ok())
                .map(|r| r.api_host().to_owned())
                .collect();
        }
        let timeouts = Timeouts {
            idle: self.settings.timeout,
            ..Timeouts::default()
        };
        Arc::new(Connector::new(settings).with_timeouts(timeouts))
    }

    pub(crate) fn reporter(&self) -> Option<runtime::Reporter> {
        self.settings.reporter.as_ref().map(|r| r.0.clone())
    }

    pub(crate) fn policy(&self, references: &[&str]) -> Result<Arc<NetworkPolicy>, Error> {
        NetworkPolicy::for_references(
            references.iter().copied(),
            &self.settings.insecure,
            &self.settings.allow_hosts,
        )
        .map_err(Error::InvalidReference)
        .map(|p| {
            if self.settings.learn_hosts {
                p
            } else {
                p.without_learning()
            }
        })
    }

    /// The component instance for a pull of `bundle`, and the bundle as it is handed to it.
    pub(crate) async fn pull_sandbox(
        &self,
        bundle: &Bundle,
    ) -> Result<
        (
            wit::Bundle,
            Witness,
            wasmtime::Store<runtime::State>,
            runtime::bindings::Imo,
        ),
        Error,
    > {
        let mut grants = Vec::new();
        let mut grant = |r: &String| -> Result<String, Error> {
            let (r, g) = layout_grant(r, false)?;
            grants.extend(g);
            Ok(r)
        };
        let bases = bundle
            .bases
            .iter()
            .map(&mut grant)
            .collect::<Result<Vec<_>, _>>()?;
        let finals = bundle
            .finals
            .iter()
            .map(&mut grant)
            .collect::<Result<Vec<_>, _>>()?;
        // The host reads the inventories, so the component needs no file access for them.
        let inventories = bundle
            .inventories
            .iter()
            .map(|p| {
                std::fs::read_to_string(p)
                    .map(|text| (p.display().to_string(), text))
                    .map_err(|e| Error::Io(format!("inventory {}: {e}", p.display())))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let references: Vec<&str> = bases.iter().chain(&finals).map(String::as_str).collect();
        let (witness, store, imo) = self.sandbox(&references, &grants).await?;
        let request = wit::Bundle {
            bases,
            inventories,
            finals,
        };
        Ok((request, witness, store, imo))
    }

    /// A fresh component instance that may reach the registries of `references` (and the
    /// hosts they point to) and the `grants` directories, and nothing else.
    pub(crate) async fn sandbox(
        &self,
        references: &[&str],
        grants: &[LayoutGrant],
    ) -> Result<
        (
            Witness,
            wasmtime::Store<runtime::State>,
            runtime::bindings::Imo,
        ),
        Error,
    > {
        let witness = Witness {
            policy: self.policy(references)?,
            connector: self.connector(references),
            grants: grants.to_vec(),
        };
        // The first instance is made as every other of the same sandbox is.
        let (store, imo) = self.twin(&witness).await?;
        Ok((witness, store, imo))
    }

    /// An instance in the sandbox `witness` watches (another, for work spread over several):
    /// the same policy (and what it has learned), TLS, files and memory limit, nothing wider.
    pub(crate) async fn twin(
        &self,
        witness: &Witness,
    ) -> Result<(wasmtime::Store<runtime::State>, runtime::bindings::Imo), Error> {
        let mut store = self
            .runtime
            .store(
                witness.policy.clone(),
                witness.connector.clone(),
                self.reporter(),
                &[],
                &witness.grants,
                self.settings.memory_limit,
            )
            .map_err(runtime_error)?;
        let imo = self
            .runtime
            .instantiate(&mut store)
            .await
            .map_err(trap_error)?;
        Ok((store, imo))
    }
}

/// For an `oci:DIR[:TAG]` reference, the directory to grant (created first if it is to be
/// written) and the reference rewritten with its absolute path; other references pass as
/// they are.
pub(crate) fn layout_grant(
    reference: &str,
    writable: bool,
) -> Result<(String, Option<LayoutGrant>), Error> {
    let Ok(imo_guest::reference::Location::OciDir { dir, tag }) =
        imo_guest::reference::Location::parse(reference)
    else {
        return Ok((reference.to_owned(), None));
    };
    if writable {
        std::fs::create_dir_all(&dir).map_err(|e| Error::Io(format!("{dir}: {e}")))?;
    }
    let abs = std::fs::canonicalize(&dir).map_err(|e| Error::Io(format!("{dir}: {e}")))?;
    let rewritten = match tag {
        Some(t) => format!("oci:{}:{t}", abs.display()),
        None => format!("oci:{}", abs.display()),
    };
    Ok((rewritten, Some(LayoutGrant { dir: abs, writable })))
}

/// The references a push or vet to `destination` may reach: the destination read as a
/// reference (one image) and as a prefix (`registry[/path]`, several images), and every
/// mapped destination. Both readings are what the user named.
pub(crate) fn destination_references(destination: &str, map: &[(String, String)]) -> Vec<String> {
    use imo_guest::reference::{Prefix, Reference};
    let mut out = Vec::new();
    if destination.starts_with("oci:") || Reference::parse(destination).is_ok() {
        out.push(destination.to_owned());
    }
    if let Ok(prefix) = Prefix::parse(destination) {
        // Any image under the prefix: the policy needs only its registry.
        let any = Reference::parse("localhost/x").expect("a valid name");
        out.push(prefix.join(&any).to_string());
    }
    if out.is_empty() {
        // Let the policy report the malformed reference.
        out.push(destination.to_owned());
    }
    out.extend(map.iter().map(|(_, to)| to.clone()));
    out
}

/// What watched an operation's traffic, to explain its failure: the requests the policy
/// refused and the registries that stopped answering; and what it was granted, for twins.
#[derive(Clone)]
pub(crate) struct Witness {
    policy: Arc<NetworkPolicy>,
    connector: Arc<Connector>,
    grants: Vec<LayoutGrant>,
}

/// Turns the component's answer into the host's, adding what the policy refused and which
/// registry stopped answering.
pub(crate) fn finish(
    result: wasmtime::Result<Result<wit::Summary, wit::Error>>,
    witness: &Witness,
) -> Result<Summary, Error> {
    finish_with(result, witness).map(Into::into)
}

pub(crate) fn finish_with<T>(
    result: wasmtime::Result<Result<T, wit::Error>>,
    witness: &Witness,
) -> Result<T, Error> {
    match result {
        Ok(Ok(s)) => Ok(s),
        Ok(Err(e)) => {
            let mut e = Error::from(e);
            if let Error::Unreachable(m) | Error::Denied(m) = &mut e {
                let denied = witness.policy.denied.lock().expect("policy lock");
                if let Some(d) = denied.last() {
                    m.push_str(&format!(" (the host {d})"));
                }
                if let Some(stall) = witness.connector.last_stall() {
                    m.push_str(&format!(" ({stall})"));
                }
            }
            Err(e)
        }
        Err(trap) => Err(trap_error(trap)),
    }
}
