//! Raw HTTP/1.1 connections to the Docker daemon, for the two requests bollard cannot make
//! for a BuildKit build with our own session: the hijacked `POST /session` and the
//! `POST /build?version=2`. One connection per request, as the Docker CLI does, over a
//! unix socket, plain TCP, or TCP with TLS and a client certificate.

use std::fmt;
use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpStream, UnixStream};
use tokio_rustls::client::TlsStream;

/// Where the daemon listens, parsed from a `DOCKER_HOST`-style address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DaemonAddress {
    /// `unix:///var/run/docker.sock` or a bare path.
    Unix(std::path::PathBuf),
    /// `tcp://host:port` or `http://host:port`, plain HTTP.
    Tcp(String),
    /// `tcp://host:port` with `DOCKER_TLS_VERIFY`, or `https://host:port`.
    Tls(TlsEndpoint),
}

/// A TLS daemon: its address, the name its certificate is checked against, and the
/// client configuration (the CA, client certificate and key of `DOCKER_CERT_PATH`).
#[derive(Clone)]
pub struct TlsEndpoint {
    addr: String,
    server_name: ServerName<'static>,
    config: Arc<rustls::ClientConfig>,
}

impl fmt::Debug for TlsEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsEndpoint")
            .field("addr", &self.addr)
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

impl PartialEq for TlsEndpoint {
    fn eq(&self, other: &Self) -> bool {
        self.addr == other.addr && self.server_name == other.server_name
    }
}

impl Eq for TlsEndpoint {}

impl fmt::Display for DaemonAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unix(path) => write!(f, "unix://{}", path.display()),
            Self::Tcp(addr) => write!(f, "tcp://{addr}"),
            Self::Tls(endpoint) => write!(f, "tcp://{} (TLS)", endpoint.addr),
        }
    }
}

impl DaemonAddress {
    /// Parses `unix:///path`, `/path`, `tcp://host:port` or `http://host:port` (no TLS).
    pub fn parse(host: &str) -> Result<Self, String> {
        if let Some(path) = host.strip_prefix("unix://") {
            return Ok(Self::Unix(path.into()));
        }
        if host.starts_with('/') {
            return Ok(Self::Unix(host.into()));
        }
        if let Some(rest) = host
            .strip_prefix("tcp://")
            .or_else(|| host.strip_prefix("http://"))
        {
            return tcp_addr(host, rest).map(Self::Tcp);
        }
        if host.starts_with("https://") {
            return Err(format!(
                "`{host}` needs TLS: set DOCKER_CERT_PATH to the directory of ca.pem, cert.pem \
                 and key.pem"
            ));
        }
        Err(format!(
            "`{host}` is not supported for BuildKit builds: use unix:///path, tcp://host:port \
             or https://host:port"
        ))
    }

    /// `tcp://host:port` or `https://host:port` over TLS, as the Docker CLI and bollard
    /// reach it with `DOCKER_TLS_VERIFY`: the server's certificate checked against
    /// `<cert_dir>/ca.pem`, and `cert.pem` with `key.pem` presented as the client's.
    pub fn tls(host: &str, cert_dir: &Path) -> Result<Self, String> {
        let rest = host
            .strip_prefix("tcp://")
            .or_else(|| host.strip_prefix("https://"))
            .ok_or_else(|| format!("`{host}` cannot be reached over TLS: use tcp://host:port"))?;
        let addr = tcp_addr(host, rest)?;
        let name = match addr.rsplit_once(':') {
            Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
            _ => addr.as_str(),
        };
        let name = name.trim_start_matches('[').trim_end_matches(']');
        let server_name = ServerName::try_from(name.to_owned())
            .map_err(|e| format!("`{name}` is no valid TLS server name: {e}"))?;
        Ok(Self::Tls(TlsEndpoint {
            config: Arc::new(tls_config(cert_dir)?),
            addr,
            server_name,
        }))
    }

    /// The `Host` header value: Docker ignores it on a unix socket, as the CLI's `docker`.
    pub(crate) fn host_header(&self) -> &str {
        match self {
            Self::Unix(_) => "docker",
            Self::Tcp(addr) | Self::Tls(TlsEndpoint { addr, .. }) => addr,
        }
    }
}

fn tcp_addr(host: &str, rest: &str) -> Result<String, String> {
    let rest = rest.trim_end_matches('/');
    if rest.is_empty() {
        return Err(format!("`{host}` names no host"));
    }
    Ok(rest.to_string())
}

/// The client configuration from `ca.pem`, `cert.pem` and `key.pem` in `dir`.
fn tls_config(dir: &Path) -> Result<rustls::ClientConfig, String> {
    let file = |name: &str| dir.join(name);
    let unreadable =
        |name: &str, e: &dyn fmt::Display| format!("cannot read {}: {e}", file(name).display());
    let mut roots = rustls::RootCertStore::empty();
    for cert in
        CertificateDer::pem_file_iter(file("ca.pem")).map_err(|e| unreadable("ca.pem", &e))?
    {
        let cert = cert.map_err(|e| unreadable("ca.pem", &e))?;
        roots.add(cert).map_err(|e| unreadable("ca.pem", &e))?;
    }
    let chain = CertificateDer::pem_file_iter(file("cert.pem"))
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .map_err(|e| unreadable("cert.pem", &e))?;
    let key =
        PrivateKeyDer::from_pem_file(file("key.pem")).map_err(|e| unreadable("key.pem", &e))?;
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .map_err(|e| {
            format!(
                "the client certificate in {} is not usable: {e}",
                dir.display()
            )
        })
}

/// A socket to the daemon: unix, TCP, or TLS over TCP.
#[derive(Debug)]
pub(crate) enum DaemonStream {
    Unix(UnixStream),
    Tcp(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for DaemonStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Unix(s) => Pin::new(s).poll_read(cx, buf),
            Self::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for DaemonStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Unix(s) => Pin::new(s).poll_write(cx, buf),
            Self::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Unix(s) => Pin::new(s).poll_flush(cx),
            Self::Tcp(s) => Pin::new(s).poll_flush(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Unix(s) => Pin::new(s).poll_shutdown(cx),
            Self::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

pub(crate) type Body = UnsyncBoxBody<Bytes, io::Error>;

/// Opens a connection and does the HTTP/1.1 handshake. The connection task runs with
/// upgrades enabled (for `/session`) and ends when the sender and the response are gone.
pub(crate) async fn connect(address: &DaemonAddress) -> io::Result<SendRequest<Body>> {
    let stream = match address {
        DaemonAddress::Unix(path) => DaemonStream::Unix(UnixStream::connect(path).await?),
        DaemonAddress::Tcp(addr) => DaemonStream::Tcp(TcpStream::connect(addr.as_str()).await?),
        DaemonAddress::Tls(endpoint) => {
            let tcp = TcpStream::connect(endpoint.addr.as_str()).await?;
            let connector = tokio_rustls::TlsConnector::from(Arc::clone(&endpoint.config));
            let tls = connector.connect(endpoint.server_name.clone(), tcp).await?;
            DaemonStream::Tls(Box::new(tls))
        }
    };
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(io::Error::other)?;
    tokio::spawn(async move {
        if let Err(err) = connection.with_upgrades().await {
            tracing::debug!("daemon connection ended: {err}");
        }
    });
    Ok(sender)
}

/// [`connect`], given up after `limit` (a daemon that accepts and never answers).
pub(crate) async fn connect_within(
    address: &DaemonAddress,
    limit: std::time::Duration,
) -> io::Result<SendRequest<Body>> {
    tokio::time::timeout(limit, connect(address))
        .await
        .unwrap_or_else(|_| {
            Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "no connection within {}",
                    crate::network::stall::human(limit)
                ),
            ))
        })
}

/// An empty request body.
pub(crate) fn empty() -> Body {
    use http_body_util::BodyExt as _;
    http_body_util::Empty::new()
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// The most of a daemon's error body read: its `{"message":"..."}` is far shorter.
const ERROR_BODY_LIMIT: usize = 64 << 10;

/// Reads a (small) response body as text, for error messages: at most
/// [`ERROR_BODY_LIMIT`] bytes of it.
pub(crate) async fn body_text(body: hyper::body::Incoming) -> String {
    match crate::network::stall::read_at_most(body, ERROR_BODY_LIMIT).await {
        Ok((bytes, _)) => {
            // The daemon's errors are `{"message":"..."}`.
            serde_json::from_slice::<serde_json::Value>(&bytes)
                .ok()
                .and_then(|v| v.get("message").and_then(|m| m.as_str()).map(String::from))
                .unwrap_or_else(|| String::from_utf8_lossy(&bytes).trim().to_string())
        }
        Err(err) => format!("(unreadable response: {err})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_parse() {
        assert_eq!(
            DaemonAddress::parse("unix:///var/run/docker.sock"),
            Ok(DaemonAddress::Unix("/var/run/docker.sock".into()))
        );
        assert_eq!(
            DaemonAddress::parse("/run/d.sock"),
            Ok(DaemonAddress::Unix("/run/d.sock".into()))
        );
        assert_eq!(
            DaemonAddress::parse("tcp://127.0.0.1:2375"),
            Ok(DaemonAddress::Tcp("127.0.0.1:2375".into()))
        );
        let https = DaemonAddress::parse("https://h:2376").unwrap_err();
        assert!(https.contains("DOCKER_CERT_PATH"), "{https}");
        assert!(DaemonAddress::parse("npipe:////./pipe/docker").is_err());
    }

    /// TLS takes `tcp://` or `https://`, and a missing certificate directory is named
    /// with the file that could not be read.
    #[test]
    fn tls_addresses_need_their_certificates() {
        let empty = tempfile::tempdir().unwrap();
        let err = DaemonAddress::tls("tcp://127.0.0.1:2376", empty.path()).unwrap_err();
        assert!(err.contains("ca.pem"), "{err}");
        assert!(err.contains(empty.path().to_str().unwrap()), "{err}");
        assert!(DaemonAddress::tls("unix:///d.sock", empty.path()).is_err());
        assert!(DaemonAddress::tls("tcp://", empty.path()).is_err());
    }
}
