//! One request in flight ([`Exchange`]): prepared with the registry's credentials when
//! the URL is on its host, its body watched by the stall watchdog, sent within its total
//! time, and its connection ended when it is given up; and the reading of an answer's
//! body up to what is expected of it ([`read_answer`]).

use std::future::Future;
use std::time::Duration;

use hyper::header::{AUTHORIZATION, CONTENT_LENGTH};
use hyper::{Method, Request};

use super::body::RequestBody;
use super::{auth, connector, Answer, Failure, Registry, ANSWER_LIMIT};
use crate::network::stall::{self, WatchedBody};

impl Registry {
    /// Prepares one request: the registry's credentials when `url` is on its host, the
    /// body watched by `watchdog`, and its connection captured so that a request given up
    /// ends it ([`Exchange::run`]).
    pub(super) fn exchange<'a>(
        &'a self,
        method: Method,
        url: &'a str,
        headers: &[(&str, String)],
        body: RequestBody,
        watchdog: &'a stall::Watchdog,
    ) -> Exchange<'a> {
        let mut request = Request::builder().method(method.clone()).uri(url);
        if let Some(length) = hyper::body::Body::size_hint(&body).exact() {
            request = request.header(CONTENT_LENGTH, length);
        }
        let mut credentials = None;
        if self.own_host(url) {
            let current = self.auth.current();
            request = request.header(AUTHORIZATION, current.header.clone());
            credentials = Some(current);
        }
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        let request = request
            .body(watchdog.outgoing_body(body))
            .map_err(|e| Failure::local(format!("invalid request: {e}")));
        Exchange {
            registry: self,
            method,
            url,
            request,
            credentials,
            watchdog,
        }
    }
}

/// The whole answer of `response`, its body read up to `limit` bytes when it is a
/// success, else up to [`ANSWER_LIMIT`] (for the registry's error; a redirect's body is
/// not wanted).
pub(super) async fn read_answer(
    response: hyper::Response<hyper::body::Incoming>,
    generation: Option<auth::Sent>,
    watchdog: &stall::Watchdog,
    limit: usize,
) -> Result<Answer, Failure> {
    let (parts, body) = response.into_parts();
    let limit = if parts.status.is_success() {
        limit
    } else {
        ANSWER_LIMIT
    };
    let (body, truncated) = stall::read_at_most(watchdog.incoming_body(body), limit)
        .await
        .map_err(|e| Failure::transport(crate::error_chain(&e)))?;
    Ok(Answer {
        status: parts.status,
        headers: parts.headers,
        body,
        truncated,
        generation,
    })
}

/// One request, prepared ([`Registry::exchange`]) and not yet sent.
pub(super) struct Exchange<'a> {
    registry: &'a Registry,
    method: Method,
    url: &'a str,
    request: Result<Request<WatchedBody<RequestBody>>, Failure>,
    /// The credentials the request carries: whether their expiry had passed is judged
    /// when the answer comes (a `HEAD` answer has no body to say the token expired).
    credentials: Option<auth::Current>,
    watchdog: &'a stall::Watchdog,
}

/// Why a request was given up.
#[derive(Debug)]
enum Cut {
    Stalled(stall::Stalled),
    /// Its total time ran out.
    Total(Duration),
}

impl Exchange<'_> {
    /// Sends the request and hands its answer to `read`, all within `total` (when set)
    /// and the stall timeout. A request given up ends its connection
    /// ([`connector::Abort`]): hyper's connection task would otherwise keep waiting on
    /// the stalled socket, holding the body's producer.
    pub(super) async fn run<T, F, Fut>(self, total: Option<Duration>, read: F) -> Result<T, Failure>
    where
        F: FnOnce(hyper::Response<hyper::body::Incoming>, Option<auth::Sent>) -> Fut,
        Fut: Future<Output = Result<T, Failure>>,
    {
        let mut request = self.request?;
        let connection = hyper_util::client::legacy::connect::capture_connection(&mut request);
        let answered = std::sync::atomic::AtomicBool::new(false);
        let (registry, url, credentials) = (self.registry, self.url, self.credentials);
        let work = async {
            let response = registry
                .client
                .request(request)
                .await
                .map_err(|e| Failure::unanswered(&e, registry, url))?;
            answered.store(true, std::sync::atomic::Ordering::Relaxed);
            let generation = credentials.map(|c| c.sent());
            read(response, generation).await
        };
        let guarded = async { self.watchdog.guard(work).await.map_err(Cut::Stalled) };
        let outcome = match total {
            Some(total) => tokio::time::timeout(total, guarded)
                .await
                .unwrap_or(Err(Cut::Total(total))),
            None => guarded.await,
        };
        let cut = match outcome {
            Ok(done) => return done,
            Err(cut) => cut,
        };
        if let Some(connected) = connection.connection_metadata().as_ref() {
            let mut extras = hyper::http::Extensions::new();
            connected.get_extras(&mut extras);
            if let Some(abort) = extras.get::<connector::Abort>() {
                abort.abort();
            }
        }
        Err(match cut {
            Cut::Stalled(stalled) => {
                let answered = answered.load(std::sync::atomic::Ordering::Relaxed);
                Failure::stalled(&self.method, answered, stalled)
            }
            Cut::Total(total) => {
                Failure::transport(format!("no answer within {}", stall::human(total)))
            }
        })
    }
}
