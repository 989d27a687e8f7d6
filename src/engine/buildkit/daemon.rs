//! Raw HTTP/1.1 connections to the Docker daemon, for the two requests bollard cannot make
//! for a BuildKit build with our own session: the hijacked `POST /session` and the
//! streamed `POST /build?version=2`. One connection per request, as the Docker CLI does.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpStream, UnixStream};

/// Where the daemon listens, parsed from a `DOCKER_HOST`-style address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DaemonAddress {
    /// `unix:///var/run/docker.sock` or a bare path.
    Unix(std::path::PathBuf),
    /// `tcp://host:port` or `http://host:port`, plain HTTP (no TLS).
    Tcp(String),
}

impl DaemonAddress {
    /// Parses `unix:///path`, `/path`, `tcp://host:port` or `http://host:port`. TLS
    /// (`https://`, or `tcp://` with `DOCKER_TLS_VERIFY`) is not supported here: the
    /// caller falls back to the classic builder for it.
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
            let rest = rest.trim_end_matches('/');
            if rest.is_empty() {
                return Err(format!("`{host}` names no host"));
            }
            return Ok(Self::Tcp(rest.to_string()));
        }
        Err(format!(
            "`{host}` is not supported for BuildKit builds: use unix:///path or tcp://host:port \
             (TLS is not supported by the BuildKit session)"
        ))
    }

    /// The `Host` header value: Docker ignores it on a unix socket, as the CLI's `docker`.
    pub(crate) fn host_header(&self) -> &str {
        match self {
            Self::Unix(_) => "docker",
            Self::Tcp(addr) => addr,
        }
    }
}

/// A socket to the daemon, unix or TCP.
#[derive(Debug)]
pub(crate) enum DaemonStream {
    Unix(UnixStream),
    Tcp(TcpStream),
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
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Unix(s) => Pin::new(s).poll_flush(cx),
            Self::Tcp(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Unix(s) => Pin::new(s).poll_shutdown(cx),
            Self::Tcp(s) => Pin::new(s).poll_shutdown(cx),
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

/// An empty request body.
pub(crate) fn empty() -> Body {
    use http_body_util::BodyExt as _;
    http_body_util::Empty::new()
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// Reads a whole (small) response body as text, for error messages.
pub(crate) async fn body_text(body: hyper::body::Incoming) -> String {
    use http_body_util::BodyExt as _;
    match body.collect().await {
        Ok(collected) => {
            let bytes = collected.to_bytes();
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
        assert!(DaemonAddress::parse("https://h:2376").is_err());
        assert!(DaemonAddress::parse("npipe:////./pipe/docker").is_err());
    }
}
