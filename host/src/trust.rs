//! Whom the TLS client trusts: the WebPKI verification against the system's roots and the
//! user's certificates, a certificate the user trusted presented as the server's own (the
//! self-signed recipe skopeo and curl accept), or, for `--tls-verify=false`, anyone.

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The certificates in every `*.crt` file of `dir` (none if it does not exist).
pub(crate) fn crt_files(dir: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(vec![]);
    };
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "crt") {
            use rustls::pki_types::pem::PemObject as _;
            let certs = CertificateDer::pem_file_iter(&path)
                .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                .map_err(|e| format!("reading CA certificates from {}: {e}", path.display()))?;
            out.extend(certs);
        }
    }
    Ok(out)
}

/// The usual WebPKI verification against the system's roots and the user's certificates,
/// and besides it, a server presenting exactly one of the user's certificates as its own
/// (see [`TlsSettings`]).
#[derive(Debug)]
pub(crate) struct Trusted {
    /// `None` when nothing is trusted at all (no system roots, no user certificates): every
    /// certificate then has an unknown issuer.
    webpki: Option<Arc<WebPkiServerVerifier>>,
    /// The user's certificates, as they may be presented by a server.
    own: Vec<CertificateDer<'static>>,
    /// `--tls-verify=false`: any certificate is accepted (the handshake's signatures are
    /// still checked, against whatever key the server presents).
    any: bool,
    provider: Arc<CryptoProvider>,
}

impl Trusted {
    /// Trusts `system` roots and the user's `certificates` (each with the directory it came
    /// from, for errors).
    pub(crate) fn new(
        provider: Arc<CryptoProvider>,
        system: &[CertificateDer<'static>],
        certificates: Vec<(PathBuf, CertificateDer<'static>)>,
    ) -> Result<Self, String> {
        let mut roots = RootCertStore::empty();
        roots.add_parsable_certificates(system.iter().cloned());
        let mut own = Vec::new();
        for (dir, cert) in certificates {
            roots
                .add(cert.clone())
                .map_err(|e| format!("{}: {e}", dir.display()))?;
            own.push(cert);
        }
        let webpki = if roots.is_empty() {
            None
        } else {
            let builder =
                WebPkiServerVerifier::builder_with_provider(roots.into(), provider.clone());
            Some(builder.build().map_err(|e| e.to_string())?)
        };
        Ok(Trusted {
            webpki,
            own,
            any: false,
            provider,
        })
    }

    /// Accepts any certificate: only for registries named with `--tls-verify=false`.
    pub(crate) fn any(provider: Arc<CryptoProvider>) -> Self {
        Trusted {
            webpki: None,
            own: vec![],
            any: true,
            provider,
        }
    }
}

impl ServerCertVerifier for Trusted {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if self.any {
            return Ok(ServerCertVerified::assertion());
        }
        let webpki = match &self.webpki {
            Some(v) => v.verify_server_cert(end_entity, intermediates, server_name, ocsp, now),
            None => Err(rustls::CertificateError::UnknownIssuer.into()),
        };
        let Err(refused) = webpki else {
            return webpki;
        };
        if !self.own.iter().any(|c| c.as_ref() == end_entity.as_ref()) {
            return Err(refused);
        }
        // The user trusted this very certificate, so no CA has to vouch for it; what every
        // server certificate must meet remains: the name, the validity period, and (in the
        // handshake, by the signature checks below) proof that the server holds its key.
        let parsed = rustls::server::ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_name(&parsed, server_name)?;
        let (not_before, not_after) =
            validity(end_entity.as_ref()).ok_or(rustls::CertificateError::BadEncoding)?;
        if now.as_secs() < not_before {
            return Err(rustls::CertificateError::NotValidYet.into());
        }
        if now.as_secs() > not_after {
            return Err(rustls::CertificateError::Expired.into());
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.provider.signature_verification_algorithms;
        rustls::crypto::verify_tls12_signature(message, cert, dss, algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.provider.signature_verification_algorithms;
        rustls::crypto::verify_tls13_signature(message, cert, dss, algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A certificate's validity period (`notBefore`, `notAfter`) in seconds since the Unix
/// epoch, read from its DER: Certificate, then TBSCertificate's version (optional), serial
/// number, signature algorithm, issuer, and validity.
fn validity(cert: &[u8]) -> Option<(u64, u64)> {
    let (0x30, cert, _) = der(cert)? else {
        return None;
    };
    let (0x30, mut tbs, _) = der(cert)? else {
        return None;
    };
    if let (0xa0, _, rest) = der(tbs)? {
        tbs = rest;
    }
    for tag in [0x02, 0x30, 0x30] {
        let (t, _, rest) = der(tbs)?;
        if t != tag {
            return None;
        }
        tbs = rest;
    }
    let (0x30, period, _) = der(tbs)? else {
        return None;
    };
    let (tag, not_before, rest) = der(period)?;
    let not_before = der_time(tag, not_before)?;
    let (tag, not_after, _) = der(rest)?;
    Some((not_before, der_time(tag, not_after)?))
}

/// One DER element: its tag, its contents, and what follows it.
fn der(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, mut rest) = rest.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 {
            return None;
        }
        let (bytes, after) = rest.split_at_checked(n)?;
        rest = after;
        bytes.iter().fold(0, |len, b| len << 8 | usize::from(*b))
    };
    let (contents, rest) = rest.split_at_checked(len)?;
    Some((tag, contents, rest))
}

/// A UTCTime (`YYMMDDHHMMSSZ`, years 1950–2049) or GeneralizedTime (`YYYYMMDDHHMMSSZ`), as
/// RFC 5280 has certificates write them, in seconds since the Unix epoch.
fn der_time(tag: u8, contents: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(contents).ok()?.strip_suffix('Z')?;
    if !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (year, rest) = match (tag, text.len()) {
        (0x17, 12) => {
            let yy: i64 = text[..2].parse().ok()?;
            (if yy < 50 { 2000 + yy } else { 1900 + yy }, &text[2..])
        }
        (0x18, 14) => (text[..4].parse().ok()?, &text[4..]),
        _ => return None,
    };
    let field = |i: usize| rest[i..i + 2].parse::<i64>().ok();
    let (month, day) = (field(0)?, field(2)?);
    let (hour, minute, second) = (field(4)?, field(6)?, field(8)?);
    // Days from 1970-01-01 to the date (Howard Hinnant's days_from_civil).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (month + if month > 2 { -3 } else { 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from(days * 86_400 + hour * 3600 + minute * 60 + second).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Made by `openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes
    /// -days 3650 -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1`: `CA:TRUE`,
    /// valid from 1796173972 to 2111533972 (seconds since the epoch).
    const SELF_SIGNED: &str = "-----BEGIN CERTIFICATE-----
MIIBjjCCATSgAwIBAgIUfjYsWwpQbyiLmEbbhD9BsFXY9PQwCgYIKoZIzj0EAwIw
FDESMBAGA1UEAwwJMTI3LjAuMC4xMB4XDTI2MTIwMjAxMTI1MloXDTM2MTEyOTAx
MTI1MlowFDESMBAGA1UEAwwJMTI3LjAuMC4xMFkwEwYHKoZIzj0CAQYIKoZIzj0D
AQcDQgAE851J04F+DBBwR7y8kCYqK1+3eXy1nw5pqxk3ekHWFtVvoSwl+CDTcDA4
wD6fF7I8PQ5s2DSQqwcxJbPuUby9+aNkMGIwHQYDVR0OBBYEFKUtx6qnjvuuQe+6
Jm3u/vx44FxmMB8GA1UdIwQYMBaAFKUtx6qnjvuuQe+6Jm3u/vx44FxmMA8GA1Ud
EwEB/wQFMAMBAf8wDwYDVR0RBAgwBocEfwAAATAKBggqhkjOPQQDAgNIADBFAiEA
vrnnklIbyx3iPr34OkxYcQxfK3dh1Oro65E6hEygaeMCIGNyTwhu7fDhMm6abRz2
kDGdUwdnaTCgBysFj36iEA1L
-----END CERTIFICATE-----
";
    const NOT_BEFORE: u64 = 1_796_173_972;
    const NOT_AFTER: u64 = 2_111_533_972;

    fn self_signed() -> CertificateDer<'static> {
        use rustls::pki_types::pem::PemObject as _;
        CertificateDer::from_pem_slice(SELF_SIGNED.as_bytes()).unwrap()
    }

    fn at(secs: u64) -> UnixTime {
        UnixTime::since_unix_epoch(Duration::from_secs(secs))
    }

    #[test]
    fn a_validity_period_is_read_from_the_der() {
        assert_eq!(validity(&self_signed()), Some((NOT_BEFORE, NOT_AFTER)));
        assert_eq!(der_time(0x17, b"700101000000Z"), Some(0));
        assert_eq!(der_time(0x17, b"000229120000Z"), Some(951_825_600));
        assert_eq!(der_time(0x18, b"20500101000000Z"), Some(2_524_608_000));
        assert_eq!(der_time(0x17, b"700101000000"), None);
        assert_eq!(der_time(0x18, b"2050010100000Z"), None);
        assert_eq!(validity(&[0x30, 0x81]), None);
        assert_eq!(validity(&[0x30, 0x02, 0x30, 0x00]), None);
    }

    #[test]
    fn a_trusted_certificate_presented_as_the_servers_own_is_accepted_if_it_fits() {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let dir = PathBuf::from("cert-dir");
        let trusted = Trusted::new(provider.clone(), &[], vec![(dir, self_signed())]).unwrap();
        let ip = |s: &str| ServerName::try_from(s.to_owned()).unwrap();
        let verify = |v: &Trusted, name: &str, now: u64| {
            v.verify_server_cert(&self_signed(), &[], &ip(name), &[], at(now))
                .map(|_| ())
                .map_err(|e| format!("{e:?}"))
        };
        let now = NOT_BEFORE + 1000;
        assert_eq!(verify(&trusted, "127.0.0.1", now), Ok(()));
        // Its name, its validity period.
        let e = verify(&trusted, "127.0.0.2", now).unwrap_err();
        assert!(e.contains("NotValidForName"), "{e}");
        let e = verify(&trusted, "127.0.0.1", NOT_BEFORE - 1).unwrap_err();
        assert!(e.contains("NotValidYet"), "{e}");
        let e = verify(&trusted, "127.0.0.1", NOT_AFTER + 1).unwrap_err();
        assert!(e.contains("Expired"), "{e}");
        // Not trusted: refused as before, as a CA used as a server's certificate.
        let system = [self_signed()];
        let untrusted = Trusted::new(provider.clone(), &system, vec![]).unwrap();
        let e = verify(&untrusted, "127.0.0.1", now).unwrap_err();
        assert!(e.contains("CaUsedAsEndEntity"), "{e}");
        let nothing = Trusted::new(provider, &[], vec![]).unwrap();
        let e = verify(&nothing, "127.0.0.1", now).unwrap_err();
        assert!(e.contains("UnknownIssuer"), "{e}");
    }

    #[test]
    fn crt_files_of_a_missing_dir_are_none_and_bad_ones_are_named() {
        assert!(crt_files(Path::new("/nonexistent/imo")).unwrap().is_empty());
        let dir = std::env::temp_dir().join(format!("imo-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("bad.crt"),
            "-----BEGIN CERTIFICATE-----\n!!\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let err = crt_files(&dir).unwrap_err();
        assert!(err.contains("bad.crt"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
