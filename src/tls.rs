//! The TLS settings of the HTTP clients (Placement, Neutron, Glance), made once per
//! process for each distinct (`insecure`, `cafile`) pair.
//!
//! Building a TLS connector reads the system's whole CA bundle (some 40 ms here);
//! three clients each reading it cost a Nova host a tenth of its start-up. The
//! connector is built once and shared; [`warm`] builds the default one on a thread
//! of its own as soon as the daemon knows it serves Nova, alongside the rest of the
//! start-up.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

/// Why a TLS connector could not be made.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read cafile {path}: {reason}")]
    CaFile { path: PathBuf, reason: String },
    #[error("invalid certificate in cafile {path}: {reason}")]
    CaCert { path: PathBuf, reason: String },
    #[error("cannot set up TLS: {0}")]
    Connector(String),
}

type Key = (bool, Option<PathBuf>);
type Slot = Arc<OnceLock<Result<native_tls::TlsConnector, TlsError>>>;

fn slots() -> &'static Mutex<HashMap<Key, Slot>> {
    static SLOTS: OnceLock<Mutex<HashMap<Key, Slot>>> = OnceLock::new();
    SLOTS.get_or_init(Default::default)
}

/// The connector for these settings: the system's CA bundle plus `cafile`'s
/// certificates, and no verification at all with `insecure`. Built by the first
/// caller; the others (and callers that come while it is being built) share it.
pub fn connector(
    insecure: bool,
    cafile: Option<&Path>,
) -> Result<native_tls::TlsConnector, TlsError> {
    let key = (insecure, cafile.map(Path::to_path_buf));
    let slot = {
        let mut map = slots().lock().unwrap_or_else(|p| p.into_inner());
        Arc::clone(map.entry(key).or_default())
    };
    slot.get_or_init(|| build(insecure, cafile)).clone()
}

/// Builds the default connector (no `cafile`, verifying) in the background, so
/// the first client finds it ready.
pub fn warm() {
    let spawned = std::thread::Builder::new()
        .name("tls-warm".into())
        .spawn(|| {
            let _ = connector(false, None);
        });
    if let Err(e) = spawned {
        tracing::debug!(error = %e, "no thread to prepare TLS ahead: the first client will");
    }
}

fn build(insecure: bool, cafile: Option<&Path>) -> Result<native_tls::TlsConnector, TlsError> {
    let mut b = native_tls::TlsConnector::builder();
    b.danger_accept_invalid_certs(insecure);
    if let Some(path) = cafile {
        let pem = std::fs::read(path).map_err(|e| TlsError::CaFile {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        let bad = |reason: String| TlsError::CaCert {
            path: path.to_path_buf(),
            reason,
        };
        let certs = openssl::x509::X509::stack_from_pem(&pem).map_err(|e| bad(e.to_string()))?;
        if certs.is_empty() {
            return Err(bad("no PEM certificate in it".into()));
        }
        for cert in certs {
            let der = cert.to_der().map_err(|e| bad(e.to_string()))?;
            let cert = native_tls::Certificate::from_der(&der).map_err(|e| bad(e.to_string()))?;
            b.add_root_certificate(cert);
        }
    }
    b.build().map_err(|e| TlsError::Connector(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_connector_per_setting_and_a_bad_cafile_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        assert!(matches!(
            connector(false, Some(&missing)),
            Err(TlsError::CaFile { .. })
        ));
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not a certificate").unwrap();
        assert!(matches!(
            connector(false, Some(&junk)),
            Err(TlsError::CaCert { .. })
        ));
        // the same settings: one slot, built once
        connector(true, None).unwrap();
        connector(true, None).unwrap();
        let map = slots().lock().unwrap();
        assert_eq!(map.keys().filter(|k| k.0 && k.1.is_none()).count(), 1);
    }

    /// A self-signed certificate for 127.0.0.1 and an HTTPS server that answers
    /// every request on one thread; its CA file path and address.
    fn https_server(dir: &Path) -> (PathBuf, std::net::SocketAddr) {
        use openssl::asn1::Asn1Time;
        use openssl::hash::MessageDigest;
        use openssl::pkey::PKey;
        use openssl::ssl::{SslAcceptor, SslMethod};
        use openssl::x509::extension::SubjectAlternativeName;
        use openssl::x509::{X509Builder, X509NameBuilder};
        use std::io::{Read, Write};

        let key = PKey::from_rsa(openssl::rsa::Rsa::generate(2048).unwrap()).unwrap();
        let mut name = X509NameBuilder::new().unwrap();
        name.append_entry_by_text("CN", "corral test").unwrap();
        let name = name.build();
        let mut b = X509Builder::new().unwrap();
        b.set_version(2).unwrap();
        b.set_subject_name(&name).unwrap();
        b.set_issuer_name(&name).unwrap();
        b.set_pubkey(&key).unwrap();
        b.set_not_before(&Asn1Time::days_from_now(0).unwrap())
            .unwrap();
        b.set_not_after(&Asn1Time::days_from_now(1).unwrap())
            .unwrap();
        let san = SubjectAlternativeName::new()
            .ip("127.0.0.1")
            .build(&b.x509v3_context(None, None))
            .unwrap();
        b.append_extension(san).unwrap();
        b.sign(&key, MessageDigest::sha256()).unwrap();
        let cert = b.build();
        let ca = dir.join("ca.pem");
        std::fs::write(&ca, cert.to_pem().unwrap()).unwrap();

        let mut acc = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls()).unwrap();
        acc.set_private_key(&key).unwrap();
        acc.set_certificate(&cert).unwrap();
        let acc = acc.build();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                // a client that refuses the certificate ends the handshake: go on
                let Ok(mut tls) = acc.accept(stream) else {
                    continue;
                };
                let mut buf = [0u8; 4096];
                let _ = tls.read(&mut buf);
                let _ = tls.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
                );
                let _ = tls.shutdown();
            }
        });
        (ca, addr)
    }

    #[tokio::test]
    async fn a_client_trusts_its_cafile_and_refuses_an_unknown_issuer() {
        let dir = tempfile::tempdir().unwrap();
        let (ca, addr) = https_server(dir.path());
        let url = format!("https://{addr}/");
        let client = |tls: native_tls::TlsConnector| {
            reqwest::Client::builder()
                .use_preconfigured_tls(tls)
                .build()
                .unwrap()
        };
        let with_ca = client(connector(false, Some(&ca)).unwrap());
        let body = with_ca
            .get(&url)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert_eq!(body, "ok");
        let system_only = client(connector(false, None).unwrap());
        assert!(system_only.get(&url).send().await.is_err());
        let insecure = client(connector(true, None).unwrap());
        assert!(insecure.get(&url).send().await.is_ok());
    }
}
