//! The CA certificates both HTTP clients trust: the system store plus `SSL_CERT_FILE` and
//! `AWS_CA_BUNDLE` (a corporate CA that re-signs TLS). The files are *added* to the
//! system store, never replace it, so a bundle holding only the corporate CA still lets
//! the direct connections (say, S3 under `NO_PROXY`) verify.
//!
//! The system store is the first bundle found at the usual places (Debian, Alpine and the
//! action's `scratch` image: `/etc/ssl/certs/ca-certificates.crt`). It is read here rather
//! than through rustls-native-certs, which would read `SSL_CERT_FILE` itself and let it
//! replace the store.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use aws_smithy_http_client::tls::TrustStore;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::CertificateDer;
use rustls::RootCertStore;

use crate::env::{NetworkEnv, AWS_CA_BUNDLE, SSL_CERT_FILE};

/// Where distributions keep their CA bundle, most common first.
const SYSTEM_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/ssl/cert.pem",
];

/// One PEM bundle and where it came from. `Debug` shows where only.
#[derive(Clone)]
struct Bundle {
    /// `SSL_CERT_FILE=/path`, or the system store's path.
    origin: String,
    pem: Vec<u8>,
}

impl std::fmt::Debug for Bundle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Bundle({})", self.origin)
    }
}

impl Bundle {
    fn read(origin: String, path: &Path) -> anyhow::Result<Self> {
        let pem = std::fs::read(path).with_context(|| format!("cannot read {origin}"))?;
        let bundle = Self { origin, pem };
        anyhow::ensure!(
            !bundle.certs().is_empty(),
            "{} holds no PEM certificate (`-----BEGIN CERTIFICATE-----`)",
            bundle.origin
        );
        Ok(bundle)
    }

    fn certs(&self) -> Vec<CertificateDer<'static>> {
        CertificateDer::pem_slice_iter(&self.pem)
            .filter_map(Result::ok)
            .collect()
    }
}

/// The extra bundles from the environment; the system store is added when a client is
/// built.
#[derive(Debug, Clone, Default)]
pub struct Trust {
    extra: Vec<Bundle>,
}

impl Trust {
    pub fn from_env(env: &NetworkEnv) -> anyhow::Result<Self> {
        let mut extra = Vec::new();
        for (variable, path) in [
            (SSL_CERT_FILE, &env.ssl_cert_file),
            (AWS_CA_BUNDLE, &env.aws_ca_bundle),
        ] {
            if let Some(path) = path {
                extra.push(Bundle::read(
                    format!("{variable}={}", path.display()),
                    path,
                )?);
            }
        }
        Ok(Self { extra })
    }

    fn system() -> Option<Bundle> {
        SYSTEM_BUNDLES.iter().map(PathBuf::from).find_map(|path| {
            Bundle::read(format!("the system store {}", path.display()), &path).ok()
        })
    }

    fn bundles(&self) -> Vec<Bundle> {
        Self::system()
            .into_iter()
            .chain(self.extra.clone())
            .collect()
    }

    /// What is trusted, for an error message: `the system store /etc/…, SSL_CERT_FILE=/…`.
    pub fn describe(&self) -> String {
        let bundles = self.bundles();
        if bundles.is_empty() {
            return "no CA certificates at all".to_string();
        }
        bundles
            .iter()
            .map(|b| b.origin.as_str())
            .collect::<Vec<_>>()
            .join(" and ")
    }

    /// Roots for the registry client (rustls).
    pub fn root_store(&self) -> anyhow::Result<RootCertStore> {
        let mut store = RootCertStore::empty();
        for bundle in self.bundles() {
            store.add_parsable_certificates(bundle.certs());
        }
        anyhow::ensure!(
            !store.is_empty(),
            "no CA certificates: none of {} exists; set SSL_CERT_FILE to a PEM bundle",
            SYSTEM_BUNDLES.join(", ")
        );
        Ok(store)
    }

    /// The same roots for the AWS client. It takes PEM and panics on a certificate
    /// webpki cannot parse, so only those the registry client's store accepts are given,
    /// one PEM block each.
    pub fn aws_trust_store(&self) -> TrustStore {
        use base64::Engine as _;
        let mut pem = String::new();
        for cert in self.bundles().iter().flat_map(Bundle::certs) {
            if RootCertStore::empty().add(cert.clone()).is_ok() {
                let body = base64::engine::general_purpose::STANDARD.encode(cert.as_ref());
                pem.push_str("-----BEGIN CERTIFICATE-----\n");
                for line in body.as_bytes().chunks(64) {
                    pem.push_str(&String::from_utf8_lossy(line));
                    pem.push('\n');
                }
                pem.push_str("-----END CERTIFICATE-----\n");
            }
        }
        TrustStore::empty()
            .with_native_roots(false)
            .with_pem_certificate(pem.into_bytes())
    }

    /// What to tell a user whose TLS verification failed.
    pub fn hint(&self) -> String {
        format!(
            "trusted: {}; if a corporate proxy or gateway re-signs TLS, set SSL_CERT_FILE \
             (or AWS_CA_BUNDLE) to a PEM file holding its CA certificate",
            self.describe()
        )
    }
}

/// The TLS failure inside an error chain, if that is what it is (rustls's error sits
/// inside `io::Error`s, whose `source` skips it).
pub fn tls_failure<'a>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    let mut source = Some(err);
    while let Some(cause) = source {
        if let Some(tls) = cause.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        // hyper-rustls wraps tokio-rustls's io::Error in another.
        let mut inner = cause.downcast_ref::<std::io::Error>();
        while let Some(io) = inner {
            let wrapped = io
                .get_ref()
                .map(|e| e as &(dyn std::error::Error + 'static));
            if let Some(tls) = wrapped.and_then(|e| e.downcast_ref::<rustls::Error>()) {
                return Some(tls);
            }
            inner = wrapped.and_then(|e| e.downcast_ref::<std::io::Error>());
        }
        source = cause.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A CA file that holds no certificate fails at start, naming the variable.
    #[test]
    fn a_bundle_without_certificates_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("empty.pem");
        std::fs::write(&path, "not a certificate\n").unwrap();
        let err = Trust::from_env(&NetworkEnv {
            ssl_cert_file: Some(path.clone()),
            ..NetworkEnv::default()
        })
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("SSL_CERT_FILE=") && err.contains("no PEM certificate"),
            "{err}"
        );
    }
}
