//! How the registry client reaches a host: straight to it, or through the proxy's
//! `CONNECT` tunnel (hyper-util's [`Tunnel`], with `Proxy-Authorization` from the proxy
//! URL), as hyper-util's [`Matcher`] decides from `HTTPS_PROXY` and `NO_PROXY`; and for
//! the registry host with `registry-endpoint` set, to the endpoint instead, while TLS
//! (wrapped around this by hyper-rustls) still sends and verifies the registry host name.
//! Names are resolved by hickory, which reads `/etc/hosts` and `/etc/resolv.conf` itself
//! (a static binary on `scratch` has no NSS), as the AWS client does.
//!
//! Failures carry one finished sentence ([`ConnectError`]) naming the proxy (password
//! masked) and the host it was asked for.
//!
//! Every connection can be ended from outside ([`Abort`]): hyper's connection task waits
//! on a stalled socket forever, holding the request's body (whose producer then waits for
//! it to be taken), even once the request was given up; a stalled request ends its
//! connection so both let go.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};

use hyper::Uri;
use hyper_util::client::legacy::connect::dns::Name;
use hyper_util::client::legacy::connect::proxy::Tunnel;
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::client::proxy::matcher::Matcher;
use hyper_util::rt::TokioIo;
use tower_service::Service;

use crate::network::proxy::explain_tunnel_failure;
use crate::network::{Network, ProxyUrl};

/// Resolves names with hickory for hyper's connector.
#[derive(Clone)]
pub struct HickoryDns(pub Arc<hickory_resolver::TokioResolver>);

impl Service<Name> for HickoryDns {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = std::io::Error;
    type Future =
        Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send + 'static>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let resolver = Arc::clone(&self.0);
        Box::pin(async move {
            let found = resolver
                .lookup_ip(name.as_str())
                .await
                .map_err(std::io::Error::other)?;
            Ok(found
                .iter()
                .map(|ip| SocketAddr::new(ip, 0))
                .collect::<Vec<_>>()
                .into_iter())
        })
    }
}

/// A connection that could not be made, said once, whole.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ConnectError {
    pub message: String,
    /// Worth another attempt (a refused or reset connection); a 407 or an unknown proxy
    /// host is not.
    pub transient: bool,
}

/// Direct or tunnelled TCP for hyper-rustls to put TLS on.
#[derive(Clone)]
pub struct Connector {
    http: HttpConnector<HickoryDns>,
    matcher: Arc<Matcher>,
    network: Arc<Network>,
    /// The registry host whose connections go to `network.registry_endpoint`.
    registry_host: String,
}

impl Connector {
    pub fn new(
        http: HttpConnector<HickoryDns>,
        network: Arc<Network>,
        registry_host: &str,
    ) -> Self {
        Self {
            http,
            matcher: Arc::new(network.proxies.matcher()),
            network,
            registry_host: registry_host.to_string(),
        }
    }

    /// Where a connection for `uri` really goes: the endpoint for the registry host.
    fn dial(&self, uri: &Uri) -> Uri {
        match (&self.network.registry_endpoint, uri.host()) {
            (Some(endpoint), Some(host)) if host.eq_ignore_ascii_case(&self.registry_host) => {
                format!("https://{endpoint}/")
                    .parse()
                    .unwrap_or_else(|_| uri.clone())
            }
            _ => uri.clone(),
        }
    }

    /// The proxy `ProxyUrl` matching an intercept (for its masked name).
    fn proxy_for(&self, dial: &Uri) -> Option<ProxyUrl> {
        self.network.proxies.route(dial).cloned()
    }
}

fn host_port(uri: &Uri) -> String {
    format!(
        "{}:{}",
        uri.host().unwrap_or("?"),
        uri.port_u16().unwrap_or(443)
    )
}

/// A `CONNECT` failure as a user can act on it.
fn tunnel_error(
    err: &(dyn std::error::Error + 'static),
    proxy: &ProxyUrl,
    target: &str,
) -> ConnectError {
    let text = crate::error_chain(err);
    let (reason, transient) = explain_tunnel_failure(&text, proxy).unwrap_or((text, true));
    ConnectError {
        message: format!(
            "cannot reach {target} through the proxy {proxy} (from {}): {reason}",
            proxy.variable
        ),
        transient,
    }
}

impl Service<Uri> for Connector {
    type Response = Abortable<TokioIo<tokio::net::TcpStream>>;
    type Error = ConnectError;
    type Future =
        Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send + 'static>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let dial = self.dial(&uri);
        let target = host_port(&dial);
        let asked = host_port(&uri);
        let via_endpoint = (target != asked).then(|| format!(" (registry-endpoint for {asked})"));
        if let (Some(intercept), Some(proxy)) =
            (self.matcher.intercept(&dial), self.proxy_for(&dial))
        {
            let mut tunnel = Tunnel::new(intercept.uri().clone(), self.http.clone());
            if let Some(auth) = intercept.basic_auth() {
                tunnel = tunnel.with_auth(auth.clone());
            }
            Box::pin(async move {
                tracing::debug!("connecting to {target} through the proxy {proxy}");
                tunnel.call(dial).await.map(Abortable::new).map_err(|e| {
                    let shown = format!("{target}{}", via_endpoint.unwrap_or_default());
                    tunnel_error(&e, &proxy, &shown)
                })
            })
        } else {
            let mut http = self.http.clone();
            Box::pin(async move {
                http.call(dial)
                    .await
                    .map(Abortable::new)
                    .map_err(|e| ConnectError {
                        message: format!(
                            "cannot connect to {target}{}: {}",
                            via_endpoint.unwrap_or_default(),
                            crate::error_chain(&e)
                        ),
                        transient: true,
                    })
            })
        }
    }
}

/// Ends a connection from outside: found in its `Connected` extras (hyper-util's
/// `capture_connection`), it makes every later read or write of the connection fail, and
/// wakes the task waiting on it.
#[derive(Debug, Clone, Default)]
pub struct Abort(Arc<AbortState>);

#[derive(Debug, Default)]
struct AbortState {
    aborted: AtomicBool,
    /// The tasks last waiting to read and to write.
    waiting: Mutex<[Option<Waker>; 2]>,
}

const READING: usize = 0;
const WRITING: usize = 1;

impl Abort {
    pub fn abort(&self) {
        self.0.aborted.store(true, Ordering::SeqCst);
        let waiting = std::mem::take(
            &mut *self
                .0
                .waiting
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        for waker in waiting.into_iter().flatten() {
            waker.wake();
        }
    }

    /// `poll`, unless aborted; a poll left pending is woken by an abort too.
    fn guard<T>(
        &self,
        side: usize,
        cx: &mut Context<'_>,
        poll: impl FnOnce(&mut Context<'_>) -> Poll<std::io::Result<T>>,
    ) -> Poll<std::io::Result<T>> {
        if self.0.aborted.load(Ordering::SeqCst) {
            return Poll::Ready(Err(std::io::Error::other(
                "the connection was ended: it stalled",
            )));
        }
        let polled = poll(cx);
        if polled.is_pending() {
            let mut waiting = self
                .0
                .waiting
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if !waiting[side]
                .as_ref()
                .is_some_and(|w| w.will_wake(cx.waker()))
            {
                waiting[side] = Some(cx.waker().clone());
            }
            drop(waiting);
            // An abort between the check above and now would have found no waker.
            if self.0.aborted.load(Ordering::SeqCst) {
                cx.waker().wake_by_ref();
            }
        }
        polled
    }
}

/// A connection with its [`Abort`].
#[derive(Debug)]
pub struct Abortable<T> {
    inner: T,
    abort: Abort,
}

impl<T> Abortable<T> {
    fn new(inner: T) -> Self {
        Self {
            inner,
            abort: Abort::default(),
        }
    }
}

impl<T: Connection> Connection for Abortable<T> {
    fn connected(&self) -> Connected {
        self.inner.connected().extra(self.abort.clone())
    }
}

impl<T: hyper::rt::Read + Unpin> hyper::rt::Read for Abortable<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let inner = &mut this.inner;
        this.abort
            .guard(READING, cx, |cx| Pin::new(inner).poll_read(cx, buf))
    }
}

impl<T: hyper::rt::Write + Unpin> hyper::rt::Write for Abortable<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let inner = &mut this.inner;
        this.abort
            .guard(WRITING, cx, |cx| Pin::new(inner).poll_write(cx, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let inner = &mut this.inner;
        this.abort.guard(WRITING, cx, |cx| {
            Pin::new(inner).poll_write_vectored(cx, bufs)
        })
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let inner = &mut this.inner;
        this.abort
            .guard(WRITING, cx, |cx| Pin::new(inner).poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        // Shutting down an aborted connection is what is wanted: not guarded.
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// The connection failure in a request error, as one sentence, and whether to retry:
/// a [`ConnectError`], or a TLS verification failure with what to set about it.
pub fn describe(
    err: &(dyn std::error::Error + 'static),
    network: &Network,
    registry_host: &str,
    url: &str,
) -> Option<ConnectError> {
    if let Some(tls) = crate::network::trust::tls_failure(err) {
        return Some(tls_error(tls, network, registry_host, url));
    }
    let mut source = Some(err);
    while let Some(cause) = source {
        if let Some(connect) = cause.downcast_ref::<ConnectError>() {
            return Some(ConnectError {
                message: connect.message.clone(),
                transient: connect.transient,
            });
        }
        source = cause.source();
    }
    None
}

fn tls_error(
    tls: &rustls::Error,
    network: &Network,
    registry_host: &str,
    url: &str,
) -> ConnectError {
    let host = url
        .parse::<Uri>()
        .ok()
        .and_then(|u| u.host().map(ToString::to_string))
        .unwrap_or_default();
    let name_mismatch = matches!(
        tls,
        rustls::Error::InvalidCertificate(
            rustls::CertificateError::NotValidForName
                | rustls::CertificateError::NotValidForNameContext { .. }
        )
    );
    let message = match (&network.registry_endpoint, name_mismatch) {
        (Some(endpoint), true) if host.eq_ignore_ascii_case(registry_host) => format!(
            "the certificate at registry-endpoint {endpoint} does not cover the registry host \
             {registry_host} ({tls}): use the endpoint's private DNS name instead (enable \
             private DNS on the `dkr` interface endpoint and leave registry-endpoint empty), \
             or point {registry_host} at the endpoint's addresses in DNS or /etc/hosts"
        ),
        _ => format!(
            "TLS verification of {host} failed: {tls}; {}",
            network.trust.hint()
        ),
    };
    ConnectError {
        message,
        transient: false,
    }
}
