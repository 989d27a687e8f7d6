//! An OCI distribution client for one repository, with ECR's rules in one place
//! ([`rules`]).
//!
//! - [`auth`]: credentials sent as Basic, renewed once when ECR says the token expired.
//! - [`blobs`]: existence (`HEAD`), cross-repository mounts, uploads (one `PATCH` per
//!   session, then `PUT ?digest=`), and blob `GET`s (ECR redirects those to S3, which is
//!   followed without the registry's credentials).
//! - [`manifests`]: manifest `GET`s and `PUT`s.
//! - [`connector`]: the connections (proxy, `registry-endpoint`, hickory for names), each
//!   of which a stalled request ends.
//! - [`body`]: request bodies, sent in pieces.
//! - [`exchange`]: one request in flight, bounded by the stall watchdog and its total
//!   time, and the reading of its answer up to what is expected.
//!
//! Here: the client itself, one request ([`Registry::send`]), and the retry loop
//! ([`Registry::with_retry`]): transient failures are retried with jittered backoff,
//! throttling gets a larger budget, an expired token is renewed once. Every request fails
//! once its connection moves nothing for the stall timeout ([`crate::network::stall`]);
//! all but a blob's `PATCH` are also bounded in total. No answer's body is read past what
//! is expected of it: [`ANSWER_LIMIT`], or the caller's limit
//! ([`Registry::send_limited`]). TLS is rustls with ring trusting the action's roots
//! ([`crate::network::Trust`]). Nothing here prints: retries are logged through
//! `tracing`.

pub mod auth;
mod blobs;
mod body;
mod connector;
mod exchange;
mod manifests;
mod retry;
pub mod rules;

use std::fmt::Write as _;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use hyper::header::HeaderMap;
use hyper::{Method, StatusCode};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

pub use self::auth::{Credentials, Login, Renew, Scheme};
pub use self::blobs::{BlobBody, Mount};
pub use self::body::RequestBody;
pub use self::manifests::{MANIFEST_LIST_V2, MANIFEST_V2, OCI_INDEX, OCI_MANIFEST};
pub use self::retry::RetryPolicy;
pub use self::rules::{status_is_transient, Mounting};
use crate::network::stall::{self, StallTimeout, WatchedBody};
use crate::network::Network;
use auth::Authorizer;
use connector::{Connector, HickoryDns};
use exchange::read_answer;

/// How long one request with a small body may take in all (every request but a blob's
/// `PATCH`, which lasts as long as the layer's compression and upload: a 50 GB layer at
/// 20 MB/s is 42 minutes, so it is bounded by the stall timeout alone).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(300);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// The most of an answer's body read when the caller expects none or a small one (error
/// bodies, the answers to `POST`, `PUT`, `PATCH` and `GET /v2/`): the registry's error
/// JSON is well under it; more is left unread.
pub const ANSWER_LIMIT: usize = 64 << 10;

type HttpsClient = Client<hyper_rustls::HttpsConnector<Connector>, WatchedBody<RequestBody>>;

/// The client could not be set up (DNS configuration, TLS roots, credentials).
#[derive(Debug, thiserror::Error)]
#[error("cannot set up the connection to {registry}: {message}")]
pub struct SetupError {
    pub registry: String,
    pub message: String,
}

/// One registry repository. `Debug` never shows the credentials (the header value is
/// marked sensitive and not printed).
#[derive(Clone)]
pub struct Registry {
    client: HttpsClient,
    /// `https://<host>`
    base: String,
    pub host: String,
    pub repository: String,
    auth: Arc<Authorizer>,
    pub retry: RetryPolicy,
    network: Arc<Network>,
    stall: StallTimeout,
    /// Upload sessions opened and not used: a mount ECR answered with 202 opened one,
    /// which the next upload takes instead of opening another (as docker's pusher does).
    spare_sessions: Arc<Mutex<Vec<String>>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("host", &self.host)
            .field("repository", &self.repository)
            .field("authorization", &"<redacted>")
            .finish_non_exhaustive()
    }
}

/// A registry answer, its body read up to the request's limit.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// The body went on past the limit (or said it would): `body` holds what fit, and
    /// the rest was never read. An answer whose body is needed whole is then refused.
    pub truncated: bool,
    /// The credentials the request carried (see [`auth`]): their generation, whether
    /// their expiry had passed when the answer came, and their scheme.
    generation: Option<auth::Sent>,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Whether the status is one of `expected`.
    fn is(&self, expected: &[u16]) -> bool {
        expected.contains(&self.status.as_u16())
    }

    /// `CODE: message` from the registry's error body, when it has one.
    pub fn error_text(&self) -> Option<(String, String)> {
        let value: serde_json::Value = serde_json::from_slice(&self.body).ok()?;
        let first = value.get("errors")?.get(0)?;
        Some((
            first.get("code")?.as_str()?.to_string(),
            first
                .get("message")
                .and_then(serde_json::Value::as_str)
                .unwrap_or("")
                .to_string(),
        ))
    }
}

/// An answer whose body may be a large blob ([`Registry::open`]).
enum Opened {
    /// 200: the body, unread.
    Body(hyper::body::Incoming),
    /// Any other status, read whole.
    Answer(Answer),
}

/// One failed attempt: why, the status if the registry answered, and whether another
/// attempt could succeed.
#[derive(Debug)]
pub struct Failure {
    pub status: Option<u16>,
    pub code: Option<String>,
    pub message: String,
    pub transient: bool,
    /// Set when ECR said the token expired: the generation of the credentials sent.
    expired_generation: Option<u64>,
}

impl Failure {
    pub fn from_answer(answer: &Answer) -> Self {
        let (code, message) = match answer.error_text() {
            Some((code, message)) => (Some(code), message),
            None => (
                None,
                answer
                    .status
                    .canonical_reason()
                    .unwrap_or("unexpected answer")
                    .to_string(),
            ),
        };
        let status = answer.status.as_u16();
        let sent = answer.generation;
        let expired = match sent.map(|s| s.scheme) {
            // ECR Public: an expired or invalid Bearer token is a 400 `DENIED`.
            Some(auth::Scheme::Bearer) => rules::public_token_refused(status, code.as_deref()),
            _ => {
                rules::token_expired(status, code.as_deref(), &message)
                    || (rules::FORBIDDEN.contains(&status) && sent.is_some_and(|s| s.past_expiry))
            }
        };
        let generation = sent.map(|s| s.generation);
        Self {
            transient: status_is_transient(status, code.as_deref()),
            status: Some(status),
            expired_generation: generation.filter(|_| expired),
            code,
            message,
        }
    }

    /// A failure of our own making (not an answer), final.
    pub fn local(message: String) -> Self {
        Self {
            status: None,
            code: None,
            message,
            transient: false,
            expired_generation: None,
        }
    }

    pub fn transport(message: String) -> Self {
        Self {
            transient: true,
            ..Self::local(message)
        }
    }

    /// A request that got no answer: the connector's or TLS's own sentence when there is
    /// one (proxy refusals and verification failures are final), else the cause chain.
    fn unanswered(err: &(dyn std::error::Error + 'static), registry: &Registry, url: &str) -> Self {
        match connector::describe(err, &registry.network, &registry.host, url) {
            Some(found) => Self {
                transient: found.transient,
                ..Self::local(found.message)
            },
            None => Self::transport(crate::error_chain(err)),
        }
    }

    /// The connection of a `method` request moved nothing for the stall timeout: before
    /// the answer began (`answered` false: the rest of the body was not taken, or no
    /// answer came), or in the middle of the answer's body. Transient: a new connection may
    /// well go through (a proxy or NAT that silently dropped this one).
    fn stalled(method: &Method, answered: bool, stalled: stall::Stalled) -> Self {
        let what = if answered {
            "the answer's body stopped coming"
        } else {
            "the registry took no more of the request and sent no answer"
        };
        Self::transport(format!(
            "{method} stalled: {what} for {}; the registry, or a proxy or firewall on the way, \
             stopped moving the connection: check that path, or raise {} if it is only that \
             slow",
            stall::human(stalled.limit),
            crate::env::STALL_TIMEOUT
        ))
    }

    /// Whether ECR said the token expired.
    pub fn token_expired(&self) -> bool {
        self.expired_generation.is_some()
    }

    /// Whether the registry throttled the request.
    pub fn throttled(&self) -> bool {
        self.status
            .is_some_and(|s| rules::throttled(s, self.code.as_deref()))
    }

    /// Whether the upload session is gone or holds other bytes (start a new one).
    pub fn session_lost(&self) -> bool {
        rules::session_lost(self.status, self.code.as_deref())
    }

    /// Why, for logs and errors: `HTTP 503 UNAVAILABLE: service unavailable`.
    pub fn describe(&self) -> String {
        let mut text = String::new();
        if let Some(status) = self.status {
            let _ = write!(text, "HTTP {status} ");
        }
        if let Some(code) = &self.code {
            text.push_str(code);
            text.push_str(": ");
        }
        text.push_str(&self.message);
        text
    }
}

impl Registry {
    pub fn connect(
        login: &Login,
        repository: &str,
        retry: RetryPolicy,
        network: &Network,
    ) -> Result<Self, SetupError> {
        let host = login
            .host
            .trim_start_matches("https://")
            .trim_end_matches('/')
            .to_string();
        let setup = |message: String| SetupError {
            registry: host.clone(),
            message,
        };
        let resolver = hickory_resolver::Resolver::builder_tokio()
            .map_err(|e| setup(format!("cannot read the DNS configuration: {e}")))?
            .build();
        let mut http = HttpConnector::new_with_resolver(HickoryDns(Arc::new(resolver)));
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(CONNECT_TIMEOUT));
        let roots = network
            .trust
            .root_store()
            .map_err(|e| setup(e.to_string()))?;
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| setup(format!("cannot set up TLS: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let stall = network.stall_timeout;
        let network = Arc::new(network.clone());
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_only()
            .enable_http1()
            .wrap_connector(Connector::new(http, Arc::clone(&network), &host));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(https);
        let auth = Authorizer::new(login).map_err(setup)?;
        Ok(Self {
            client,
            base: format!("https://{host}"),
            host,
            repository: repository.to_string(),
            auth: Arc::new(auth),
            retry,
            network,
            stall,
            spare_sessions: Arc::default(),
        })
    }

    /// `GET /v2/` with the registry's credentials, once: proves the route (proxy,
    /// endpoint, TLS) before anything is built. Any HTTP answer will do; only a request
    /// that gets none fails, with the connector's sentence.
    pub async fn probe(&self) -> Result<(), Failure> {
        let url = format!("{}/v2/", self.base);
        self.send(Method::GET, &url, &[], Bytes::new())
            .await
            .map(|_| ())
    }

    /// `https://host/v2/<repository>/<rest>`
    pub fn url(&self, rest: &str) -> String {
        self.url_in(&self.repository, rest)
    }

    /// The same in another repository of the registry.
    pub fn url_in(&self, repository: &str, rest: &str) -> String {
        format!("{}/v2/{repository}/{rest}", self.base)
    }

    /// A `Location` header to an absolute URL (ECR sends absolute ones: regclient#81;
    /// other registries may answer a path).
    pub fn absolute(&self, location: &str) -> String {
        if location.starts_with("https://") || location.starts_with("http://") {
            location.to_string()
        } else {
            format!("{}/{}", self.base, location.trim_start_matches('/'))
        }
    }

    /// Whether `url` is on the registry's own host: only there do credentials go.
    fn own_host(&self, url: &str) -> bool {
        url.parse::<hyper::Uri>()
            .ok()
            .and_then(|uri| uri.host().map(|h| h.eq_ignore_ascii_case(&self.host)))
            .unwrap_or(false)
    }

    /// One request, one attempt, with the registry's credentials when `url` is on its
    /// host (an upload `Location` or a redirect elsewhere gets none). At most
    /// [`ANSWER_LIMIT`] bytes of the answer's body are read.
    pub async fn send(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, String)],
        body: Bytes,
    ) -> Result<Answer, Failure> {
        self.send_limited(method, url, headers, body, ANSWER_LIMIT)
            .await
    }

    /// [`Registry::send`] for an answer whose body is wanted, up to `limit` bytes (a
    /// manifest, a config): past that the body is not read, and `truncated` says so. An
    /// answer other than a success is read up to [`ANSWER_LIMIT`], for its error.
    pub async fn send_limited(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, String)],
        body: Bytes,
        limit: usize,
    ) -> Result<Answer, Failure> {
        let body = RequestBody::whole(body);
        self.send_body(method, url, headers, body, limit, Some(REQUEST_TIMEOUT))
            .await
    }

    /// One request whose body is `body` (its length sent when known; else it goes
    /// chunked), with at most `limit` bytes of a successful answer's body read (of any
    /// other, [`ANSWER_LIMIT`]), given up after `total` if set. It fails once the
    /// connection moves nothing for the stall timeout while the registry has the turn (to
    /// take the body's bytes, to answer, to send the answer's bytes).
    async fn send_body(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, String)],
        body: RequestBody,
        limit: usize,
        total: Option<Duration>,
    ) -> Result<Answer, Failure> {
        let watchdog = self.stall.watchdog();
        let exchange = self.exchange(method, url, headers, body, &watchdog);
        exchange
            .run(total, |response, generation| {
                read_answer(response, generation, &watchdog, limit)
            })
            .await
    }

    /// `GET url` (with no body), whose answer's body is left unread when the status is
    /// 200: a blob's bytes, which the caller reads as they come. Any other answer is read
    /// up to [`ANSWER_LIMIT`]. The answer's head must come within [`REQUEST_TIMEOUT`], and
    /// the connection may not stall before it.
    async fn open(&self, url: &str) -> Result<Opened, Failure> {
        let watchdog = &self.stall.watchdog();
        let nothing = RequestBody::whole(Bytes::new());
        let exchange = self.exchange(Method::GET, url, &[], nothing, watchdog);
        exchange
            .run(Some(REQUEST_TIMEOUT), |response, generation| async move {
                if response.status() == StatusCode::OK {
                    return Ok(Opened::Body(response.into_body()));
                }
                let answer = read_answer(response, generation, watchdog, ANSWER_LIMIT).await?;
                Ok(Opened::Answer(answer))
            })
            .await
    }

    /// Gets new credentials after `failure` (ECR's expired token), once for every request
    /// that met the same token. On failure, says why in `failure`'s message.
    pub async fn renew_token(&self, failure: &mut Failure) -> bool {
        let Some(seen) = failure.expired_generation else {
            return false;
        };
        match self.auth.renew_after(seen).await {
            Ok(()) => {
                tracing::warn!(
                    "the registry token for {} expired ({}); got a new one",
                    self.host,
                    failure.describe()
                );
                true
            }
            Err(why) => {
                let _ = write!(failure.message, " (getting a new token failed: {why})");
                false
            }
        }
    }

    /// Runs `attempt` until it succeeds, fails for good, or the attempts run out; each
    /// retry is logged with its cause. Throttling gets [`rules::THROTTLED_ATTEMPTS`], an
    /// expired token one renewal (not counted as an attempt). Returns the last failure and
    /// the attempts made.
    pub async fn with_retry<T, F, Fut>(
        &self,
        what: &str,
        mut attempt: F,
    ) -> Result<T, (Failure, u32)>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, Failure>>,
    {
        let mut n = 1;
        let mut renewed = false;
        loop {
            let mut failure = match attempt().await {
                Ok(value) => return Ok(value),
                Err(failure) => failure,
            };
            if failure.token_expired() && !renewed {
                renewed = true;
                if self.renew_token(&mut failure).await {
                    continue;
                }
                return Err((failure, n));
            }
            let budget = self.retry.attempts_for(failure.throttled());
            if !failure.transient || n >= budget {
                return Err((failure, n));
            }
            let delay = self.retry.jittered_delay(n);
            let why = if failure.throttled() {
                "was throttled"
            } else {
                "failed"
            };
            tracing::warn!(
                "{what} at {}/{} {why} (attempt {n} of {budget}): {}; retrying in {delay:.1?}",
                self.host,
                self.repository,
                failure.describe()
            );
            tokio::time::sleep(delay).await;
            n += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, body: &str, scheme: Scheme) -> Answer {
        Answer {
            status: StatusCode::from_u16(status).unwrap(),
            headers: HeaderMap::new(),
            body: Bytes::from(body.to_string()),
            truncated: false,
            generation: Some(auth::Sent {
                generation: 7,
                past_expiry: false,
                scheme,
            }),
        }
    }

    /// With Bearer credentials (ECR Public), a 400 `DENIED` is a refused token, renewed
    /// once; with Basic (private ECR), the same answer is a plain refusal and the 403
    /// "expired" keeps its meaning.
    #[test]
    fn a_400_denied_renews_only_bearer_credentials() {
        let denied =
            r#"{"errors":[{"code":"DENIED","message":"Your Authorization Token is invalid."}]}"#;
        let public = Failure::from_answer(&answer(400, denied, Scheme::Bearer));
        assert!(public.token_expired());
        assert_eq!(public.expired_generation, Some(7));
        assert!(!public.transient);
        assert!(!Failure::from_answer(&answer(400, denied, Scheme::Basic)).token_expired());
        let tag_invalid = r#"{"errors":[{"code":"TAG_INVALID","message":"bad tag"}]}"#;
        assert!(!Failure::from_answer(&answer(400, tag_invalid, Scheme::Bearer)).token_expired());
        let expired = r#"{"errors":[{"code":"DENIED","message":"Your authorization token has expired. Reauthenticate and try again."}]}"#;
        assert!(Failure::from_answer(&answer(403, expired, Scheme::Basic)).token_expired());
    }

    /// Regression: "upload `Location`s on another host still get the registry's Basic
    /// credentials". Only a URL on the registry's own host gets them: not an upload
    /// `Location` or a blob redirect on another host (S3), nor a host that merely starts
    /// with the registry's name.
    #[test]
    fn credentials_go_to_the_registry_host_only() {
        let host = "123456789012.dkr.ecr.eu-west-1.amazonaws.com";
        let login = Login {
            host: host.to_string(),
            credentials: Credentials {
                username: "AWS".into(),
                password: crate::credentials::Secret::new("password".into()),
                expires_at: None,
                scheme: Scheme::Basic,
            },
            renew: None,
        };
        let reg = Registry::connect(&login, "app", RetryPolicy::DEFAULT, &Network::default())
            .expect("a client");
        assert!(reg.own_host(&format!("https://{host}/v2/app/blobs/uploads/1")));
        assert!(reg.own_host(&reg.absolute("/v2/app/blobs/uploads/2")));
        for elsewhere in [
            "https://prod-eu-west-1-starport-layer-bucket.s3.eu-west-1.amazonaws.com/x",
            &format!("https://{host}.attacker.example/v2/app/blobs/uploads/3"),
            "https://uploads.example/v2/app/blobs/uploads/4",
        ] {
            assert!(!reg.own_host(elsewhere), "{elsewhere}");
        }
    }

    /// Retries wait between half and all of the policy's delay.
    #[test]
    fn retries_are_jittered_within_bounds() {
        let delay = RetryPolicy::DEFAULT.delay(1);
        let waits: Vec<Duration> = (0..50)
            .map(|_| RetryPolicy::DEFAULT.jittered_delay(1))
            .collect();
        assert!(
            waits.iter().all(|w| *w >= delay / 2 && *w <= delay),
            "{waits:?}"
        );
        assert!(
            waits.iter().any(|w| *w != waits[0]),
            "the waits vary: {waits:?}"
        );
    }
}
