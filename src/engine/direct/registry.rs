//! The registry's HTTP API v2, as ECR serves it: blob existence (`HEAD`), chunked blob
//! uploads (`POST`, `PATCH` parts, `PUT ?digest=`), cross-repository mounts, manifest
//! `GET`s and `PUT`s, and blob `GET`s (ECR answers those with a redirect to S3, which is
//! followed without the registry's credentials). TLS is rustls with ring trusting the
//! action's roots ([`crate::network::Trust`]: the system store plus `SSL_CERT_FILE` and
//! `AWS_CA_BUNDLE`); [`connector`] makes the connections (proxy, `registry-endpoint`,
//! hickory for names).

mod connector;

use std::fmt::Write as _;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::header::{HeaderMap, HeaderValue, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE};
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use super::DirectPushError;
use crate::ecr::RegistryAuth;
use crate::engine::push::RetryPolicy;
use crate::network::Network;
use connector::{Connector, HickoryDns};

/// How long one request may take (a 10 MiB part on a slow link included).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(300);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a streamed layer's `PATCH` may take: it lasts as long as the layer's
/// compression (a 50 GB layer at 20 MB/s is 42 minutes).
const STREAM_TIMEOUT: Duration = Duration::from_secs(3 * 3600);

pub const MANIFEST_V2: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const MANIFEST_LIST_V2: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

type HttpsClient = Client<hyper_rustls::HttpsConnector<Connector>, RequestBody>;

/// A request's body: whole, or streamed from a channel as it is produced (a layer's
/// upload while it is compressed, sent chunked, as `docker push` sends a layer).
#[derive(Debug)]
pub enum RequestBody {
    Whole(Full<Bytes>),
    Streamed(tokio::sync::mpsc::Receiver<Bytes>),
}

impl hyper::body::Body for RequestBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        match self.get_mut() {
            Self::Whole(body) => std::pin::Pin::new(body).poll_frame(cx),
            Self::Streamed(chunks) => chunks
                .poll_recv(cx)
                .map(|chunk| chunk.map(|bytes| Ok(hyper::body::Frame::data(bytes)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Whole(body) => body.is_end_stream(),
            Self::Streamed(_) => false,
        }
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        match self {
            Self::Whole(body) => body.size_hint(),
            Self::Streamed(_) => hyper::body::SizeHint::default(),
        }
    }
}

/// One registry repository, with pre-emptive Basic auth. `Debug` never shows the
/// credentials (the header value is marked sensitive and skipped).
#[derive(Clone)]
pub struct Registry {
    client: HttpsClient,
    /// `https://<host>`
    base: String,
    pub host: String,
    pub repository: String,
    authorization: HeaderValue,
    pub retry: RetryPolicy,
    network: Arc<Network>,
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

/// A registry answer, body read in full (registry answers other than blobs are small).
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
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

/// One failed attempt: why, the status if the registry answered, and whether another
/// attempt could succeed.
#[derive(Debug)]
pub struct Failure {
    pub status: Option<u16>,
    pub code: Option<String>,
    pub message: String,
    pub transient: bool,
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
        Self {
            transient: status_is_transient(status, code.as_deref()),
            status: Some(status),
            code,
            message,
        }
    }

    fn transport(message: String) -> Self {
        Self {
            status: None,
            code: None,
            message,
            transient: true,
        }
    }

    /// A request that got no answer: the connector's or TLS's own sentence when there is
    /// one (proxy refusals and verification failures are final), else the cause chain.
    fn unanswered(err: &(dyn std::error::Error + 'static), registry: &Registry, url: &str) -> Self {
        match connector::describe(err, &registry.network, &registry.host, url) {
            Some(found) => Self {
                status: None,
                code: None,
                message: found.message,
                transient: found.transient,
            },
            None => Self::transport(crate::error_chain(err)),
        }
    }

    /// Why, for logs and errors: `503 UNAVAILABLE: service unavailable`.
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

/// Overload and server errors are retried; refusals (`NAME_UNKNOWN`, `TAG_INVALID`,
/// `DENIED`, 401, 403, other 4xx) are final.
pub fn status_is_transient(status: u16, code: Option<&str>) -> bool {
    let refusal = matches!(
        code,
        Some(
            "NAME_UNKNOWN"
                | "TAG_INVALID"
                | "DENIED"
                | "UNAUTHORIZED"
                | "MANIFEST_INVALID"
                | "MANIFEST_BLOB_UNKNOWN"
                | "NAME_INVALID"
        )
    );
    !refusal && (status == 408 || status == 429 || (500..600).contains(&status))
}

impl Registry {
    pub fn connect(
        auth: &RegistryAuth,
        repository: &str,
        retry: RetryPolicy,
        network: &Network,
    ) -> Result<Self, DirectPushError> {
        let setup = |message: String| DirectPushError::Setup {
            registry: auth.registry.clone(),
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
        let host = auth
            .registry
            .trim_start_matches("https://")
            .trim_end_matches('/')
            .to_string();
        let network = Arc::new(network.clone());
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_only()
            .enable_http1()
            .wrap_connector(Connector::new(http, Arc::clone(&network), &host));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(https);
        let basic = base64::engine::general_purpose::STANDARD.encode(format!(
            "{}:{}",
            auth.username,
            auth.password.expose()
        ));
        let mut authorization = HeaderValue::from_str(&format!("Basic {basic}"))
            .map_err(|_| setup("the registry credentials are not a valid header".into()))?;
        authorization.set_sensitive(true);
        Ok(Self {
            client,
            base: format!("https://{host}"),
            host,
            repository: repository.to_string(),
            authorization,
            retry,
            network,
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

    /// A `Location` header to an absolute URL (registries may answer a path).
    pub fn absolute(&self, location: &str) -> String {
        if location.starts_with("https://") || location.starts_with("http://") {
            location.to_string()
        } else {
            format!("{}/{}", self.base, location.trim_start_matches('/'))
        }
    }

    /// One request, one attempt.
    pub async fn send(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, String)],
        body: Bytes,
    ) -> Result<Answer, Failure> {
        self.send_as(method, url, headers, body, true).await
    }

    /// One request, with the registry's credentials or (a redirect elsewhere) without.
    async fn send_as(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, String)],
        body: Bytes,
        authorized: bool,
    ) -> Result<Answer, Failure> {
        let length = body.len();
        self.send_body(
            method,
            url,
            headers,
            Some(length),
            RequestBody::Whole(Full::new(body)),
            (authorized, REQUEST_TIMEOUT),
        )
        .await
    }

    /// One request whose body is `body` (`length` long when known; else it goes chunked).
    async fn send_body(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, String)],
        length: Option<usize>,
        body: RequestBody,
        (authorized, timeout): (bool, Duration),
    ) -> Result<Answer, Failure> {
        let mut request = Request::builder().method(method).uri(url);
        if let Some(length) = length {
            request = request.header(CONTENT_LENGTH, length);
        }
        if authorized {
            request = request.header(AUTHORIZATION, self.authorization.clone());
        }
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        let request = request.body(body).map_err(|e| Failure {
            status: None,
            code: None,
            message: format!("invalid request: {e}"),
            transient: false,
        })?;
        let exchange = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| Failure::unanswered(&e, self, url))?;
            let (parts, body) = response.into_parts();
            let body = body
                .collect()
                .await
                .map_err(|e| Failure::transport(crate::error_chain(&e)))?
                .to_bytes();
            Ok(Answer {
                status: parts.status,
                headers: parts.headers,
                body,
            })
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .unwrap_or_else(|_| {
                Err(Failure::transport(format!(
                    "no answer within {}s",
                    timeout.as_secs()
                )))
            })
    }

    /// Runs `attempt` until it succeeds, fails for good, or the attempts run out; each
    /// retry is logged with its cause. Returns the last failure and the attempts made.
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
        loop {
            match attempt().await {
                Ok(value) => return Ok(value),
                Err(failure) if failure.transient && n < self.retry.attempts => {
                    let delay = self.retry.delay(n);
                    tracing::warn!(
                        "{what} at {}/{} failed (attempt {n} of {}): {}; retrying in {delay:?}",
                        self.host,
                        self.repository,
                        self.retry.attempts,
                        failure.describe()
                    );
                    tokio::time::sleep(delay).await;
                    n += 1;
                }
                Err(failure) => return Err((failure, n)),
            }
        }
    }

    /// Whether the repository has the blob (`HEAD`).
    pub async fn has_blob(&self, digest: &str) -> Result<bool, Failure> {
        Ok(self.head_blob(digest).await?.is_some())
    }

    /// The size of a blob of the repository, when it has it and says (`HEAD`).
    pub async fn blob_size(&self, digest: &str) -> Result<Option<u64>, Failure> {
        Ok(self.head_blob(digest).await?.flatten())
    }

    /// `HEAD` on a blob: `None` when missing, else its `Content-Length` if any.
    async fn head_blob(&self, digest: &str) -> Result<Option<Option<u64>>, Failure> {
        let url = self.url(&format!("blobs/{digest}"));
        let answer = self.send(Method::HEAD, &url, &[], Bytes::new()).await?;
        match answer.status {
            StatusCode::OK => Ok(Some(
                answer.header("content-length").and_then(|l| l.parse().ok()),
            )),
            StatusCode::NOT_FOUND => Ok(None),
            _ => Err(Failure::from_answer(&answer)),
        }
    }

    /// Starts an upload; returns its location.
    pub async fn start_upload(&self) -> Result<String, Failure> {
        let url = self.url("blobs/uploads/");
        let answer = self.send(Method::POST, &url, &[], Bytes::new()).await?;
        match answer.status {
            StatusCode::ACCEPTED => self.location(&answer),
            _ => Err(Failure::from_answer(&answer)),
        }
    }

    /// Mounts the blob from another repository of the registry: `false` when the registry
    /// did not (the source lacks it, or mounting is off, as it is by default on ECR); the
    /// upload session it opened instead is cancelled.
    pub async fn mount(&self, digest: &str, from: &str) -> Result<bool, Failure> {
        let url = self.url(&format!("blobs/uploads/?mount={digest}&from={from}"));
        let answer = self.send(Method::POST, &url, &[], Bytes::new()).await?;
        match answer.status {
            StatusCode::CREATED => Ok(true),
            StatusCode::ACCEPTED => {
                if let Ok(location) = self.location(&answer) {
                    // Best effort: an abandoned session expires by itself.
                    let _ = self
                        .send(Method::DELETE, &location, &[], Bytes::new())
                        .await;
                }
                Ok(false)
            }
            _ => Err(Failure::from_answer(&answer)),
        }
    }

    fn location(&self, answer: &Answer) -> Result<String, Failure> {
        answer
            .header("location")
            .map(|l| self.absolute(l))
            .ok_or_else(|| Failure {
                status: Some(answer.status.as_u16()),
                code: None,
                message: "the upload was accepted without a Location".into(),
                transient: true,
            })
    }

    /// A manifest (or index) of `repository` and its media type.
    pub async fn get_manifest(
        &self,
        repository: &str,
        reference: &str,
    ) -> Result<(String, Bytes), Failure> {
        let url = self.url_in(repository, &format!("manifests/{reference}"));
        let accept = [MANIFEST_V2, OCI_MANIFEST, MANIFEST_LIST_V2, OCI_INDEX].join(", ");
        let answer = self
            .send(Method::GET, &url, &[("accept", accept)], Bytes::new())
            .await?;
        if answer.status != StatusCode::OK {
            return Err(Failure::from_answer(&answer));
        }
        let media_type = answer
            .header("content-type")
            .unwrap_or_default()
            .to_string();
        Ok((media_type, answer.body))
    }

    /// A (small) blob of `repository`. A redirect to another host (ECR's S3 URLs, which
    /// carry their own signature) is followed without the registry's credentials.
    pub async fn get_blob(&self, repository: &str, digest: &str) -> Result<Bytes, Failure> {
        let url = self.url_in(repository, &format!("blobs/{digest}"));
        let mut answer = self.send(Method::GET, &url, &[], Bytes::new()).await?;
        if answer.status.is_redirection() {
            let target = answer
                .header("location")
                .map(|l| self.absolute(l))
                .ok_or_else(|| Failure::from_answer(&answer))?;
            let same_host = target
                .parse::<hyper::Uri>()
                .ok()
                .and_then(|uri| uri.host().map(|h| h.eq_ignore_ascii_case(&self.host)))
                .unwrap_or(false);
            answer = self
                .send_as(Method::GET, &target, &[], Bytes::new(), same_host)
                .await?;
            if answer.status != StatusCode::OK {
                // Not the body: S3 may echo the presigned URL's signature in it.
                let status = answer.status.as_u16();
                return Err(Failure {
                    status: Some(status),
                    code: None,
                    message: format!("the blob's redirect target answered HTTP {status}"),
                    transient: status_is_transient(status, None),
                });
            }
        }
        if answer.status != StatusCode::OK {
            return Err(Failure::from_answer(&answer));
        }
        Ok(answer.body)
    }

    /// Sends one part at `offset` and returns the next upload location.
    pub async fn patch(&self, location: &str, offset: u64, part: Bytes) -> Result<String, Failure> {
        let end = offset + part.len() as u64 - 1;
        let answer = self
            .send(
                Method::PATCH,
                location,
                &[
                    ("content-type", "application/octet-stream".into()),
                    ("content-range", format!("{offset}-{end}")),
                ],
                part,
            )
            .await?;
        self.next_location(&answer, location)
    }

    /// Sends a whole blob as one `PATCH` whose body streams from `chunks` as they come
    /// (chunked transfer, as `docker push` sends a layer; the registry API sets no part
    /// size, ECR's part limits apply to its own layer-part API), and returns the next
    /// upload location. One attempt: the body cannot be sent again.
    pub async fn patch_streamed(
        &self,
        location: &str,
        chunks: tokio::sync::mpsc::Receiver<Bytes>,
    ) -> Result<String, Failure> {
        let answer = self
            .send_body(
                Method::PATCH,
                location,
                &[("content-type", "application/octet-stream".into())],
                None,
                RequestBody::Streamed(chunks),
                (true, STREAM_TIMEOUT),
            )
            .await?;
        self.next_location(&answer, location)
    }

    /// A part's answer: `202` and where the upload goes on (the same place if unsaid).
    fn next_location(&self, answer: &Answer, location: &str) -> Result<String, Failure> {
        if answer.status != StatusCode::ACCEPTED {
            return Err(Failure::from_answer(answer));
        }
        Ok(answer
            .header("location")
            .map_or_else(|| location.to_string(), |l| self.absolute(l)))
    }

    /// Completes an upload with its digest.
    pub async fn complete(&self, location: &str, digest: &str) -> Result<(), Failure> {
        let separator = if location.contains('?') { '&' } else { '?' };
        let url = format!("{location}{separator}digest={digest}");
        let answer = self
            .send(
                Method::PUT,
                &url,
                &[("content-type", "application/octet-stream".into())],
                Bytes::new(),
            )
            .await?;
        if answer.status == StatusCode::CREATED || answer.status == StatusCode::NO_CONTENT {
            Ok(())
        } else {
            Err(Failure::from_answer(&answer))
        }
    }

    /// Puts a manifest (or index) of `media_type` under `reference` (a tag or its
    /// digest); returns the registry's `Docker-Content-Digest`.
    pub async fn put_manifest(
        &self,
        reference: &str,
        media_type: &str,
        manifest: Bytes,
    ) -> Result<Option<String>, Failure> {
        let answer = self
            .send(
                Method::PUT,
                &self.url(&format!("manifests/{reference}")),
                &[(CONTENT_TYPE.as_str(), media_type.into())],
                manifest,
            )
            .await?;
        if answer.status == StatusCode::CREATED || answer.status == StatusCode::OK {
            Ok(answer
                .header("docker-content-digest")
                .map(ToString::to_string))
        } else {
            Err(Failure::from_answer(&answer))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Overload and server errors are retried; ECR's refusals and auth failures are not.
    #[test]
    fn refusals_are_final() {
        assert!(status_is_transient(503, Some("UNAVAILABLE")));
        assert!(status_is_transient(429, Some("TOOMANYREQUESTS")));
        assert!(status_is_transient(500, None));
        assert!(!status_is_transient(404, Some("NAME_UNKNOWN")));
        assert!(!status_is_transient(400, Some("TAG_INVALID")));
        assert!(!status_is_transient(401, Some("UNAUTHORIZED")));
        assert!(!status_is_transient(403, Some("DENIED")));
    }
}
