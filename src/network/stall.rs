//! How long the action waits on a peer that moves nothing (the registry, a proxy on the
//! way, the Docker daemon), and how much of an answer it reads.
//!
//! A transfer of unknown length (a layer's upload, the image export, the daemon's push, a
//! BuildKit build) has no total time limit that is both safe and useful: a 50 GB layer
//! over a slow link takes hours, a hung peer takes forever. So such transfers are bounded
//! by a no-progress limit instead, [`StallTimeout`] (`ECR_BUILD_PUSH_STALL_TIMEOUT`): a
//! [`Watchdog`] fails the transfer once the peer moved nothing for that long **while it
//! was the peer's turn**. Time in which the action itself holds things up (the next chunk
//! still being compressed, a full queue downstream) is not counted, so a busy machine is
//! never taken for a stalled peer. The adapters tell the watchdog whose turn it is from how
//! their polls go: [`Watched`] for a stream or body that is read, [`Watched::outgoing`] and
//! [`WatchedBody`] for what is sent; [`Watchdog::guard`] runs the transfer and ends it when
//! the watchdog fires.
//!
//! [`read_at_most`] reads an answer's body up to a limit and no further, so a peer that
//! sends more than it should can never make the action buffer it.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::Stream;
use tokio::time::Instant;

/// How long a peer may move nothing before the transfer fails: 5 minutes unless
/// `ECR_BUILD_PUSH_STALL_TIMEOUT` says otherwise ([`crate::env::STALL_TIMEOUT`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StallTimeout(Duration);

impl StallTimeout {
    pub const DEFAULT: Self = Self(Duration::from_secs(5 * 60));

    pub fn new(limit: Duration) -> Self {
        Self(limit)
    }

    pub fn get(self) -> Duration {
        self.0
    }

    /// A watchdog with this limit, counting from now.
    pub fn watchdog(self) -> Watchdog {
        Watchdog::new(self.0)
    }
}

impl Default for StallTimeout {
    fn default() -> Self {
        Self::DEFAULT
    }
}

impl std::fmt::Display for StallTimeout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&human(self.0))
    }
}

/// `5 min`, `90 s`: a limit as a log reader wants it.
pub fn human(duration: Duration) -> String {
    let seconds = duration.as_secs();
    if seconds >= 60 && seconds % 60 == 0 {
        format!("{} min", seconds / 60)
    } else if seconds > 0 {
        format!("{seconds} s")
    } else {
        format!("{} ms", duration.as_millis())
    }
}

/// The watchdog fired: the peer moved nothing for `limit` while it was its turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("nothing moved for {}", human(*.limit))]
pub struct Stalled {
    pub limit: Duration,
}

/// Who is being waited on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Turn {
    /// The peer: to send the next bytes, or to take the ones we have.
    Peer,
    /// The action itself: the time does not count.
    Ours,
}

/// A no-progress clock shared by a transfer's adapters (clones share it).
#[derive(Debug, Clone)]
pub struct Watchdog {
    limit: Duration,
    clock: Arc<Mutex<Clock>>,
}

#[derive(Debug)]
struct Clock {
    /// When the peer last moved, or when its turn began.
    since: Instant,
    /// Whether we are holding things up (the clock is stopped).
    ours: bool,
}

impl Watchdog {
    /// Counts from now, the peer's turn (the first byte is the peer's to send or take).
    pub fn new(limit: Duration) -> Self {
        Self {
            limit,
            clock: Arc::new(Mutex::new(Clock {
                since: Instant::now(),
                ours: false,
            })),
        }
    }

    pub fn limit(&self) -> Duration {
        self.limit
    }

    fn clock(&self) -> std::sync::MutexGuard<'_, Clock> {
        self.clock.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The peer moved (bytes or an event came, or it took bytes); `next` is whose turn
    /// it is now.
    pub fn moved(&self, next: Turn) {
        let mut clock = self.clock();
        clock.since = Instant::now();
        clock.ours = next == Turn::Ours;
    }

    /// Nothing moved, and `who` is being waited on: the peer's turn starts the clock
    /// (from now, if it was stopped); ours stops it.
    pub fn waiting_on(&self, who: Turn) {
        let mut clock = self.clock();
        match who {
            Turn::Peer if clock.ours => {
                clock.since = Instant::now();
                clock.ours = false;
            }
            Turn::Peer => {}
            Turn::Ours => clock.ours = true,
        }
    }

    /// Resolves once the peer has moved nothing for the limit during its turn.
    pub async fn stalled(&self) -> Stalled {
        loop {
            let (since, ours) = {
                let clock = self.clock();
                (clock.since, clock.ours)
            };
            if ours {
                // Stopped: look again a limit later (the peer's turn restarts the clock
                // from its own start, so nothing is lost by looking late).
                tokio::time::sleep(self.limit).await;
                continue;
            }
            let deadline = since + self.limit;
            if Instant::now() >= deadline {
                return Stalled { limit: self.limit };
            }
            tokio::time::sleep_until(deadline).await;
        }
    }

    /// Runs `work` unless the watchdog fires first (then `work` is dropped, which ends
    /// its connection).
    pub async fn guard<F: Future>(&self, work: F) -> Result<F::Output, Stalled> {
        tokio::select! {
            biased;
            out = work => Ok(out),
            stalled = self.stalled() => Err(stalled),
        }
    }

    /// `stream`, read: each item is progress; until the next poll, we hold things up.
    pub fn incoming<S: Stream>(&self, stream: S) -> Watched<S> {
        Watched::new(stream, self.clone(), Flow::Incoming)
    }

    /// `stream`, sent (a request body the connection takes): each item taken is
    /// progress, and the peer's turn to take the next; an item not ready is ours.
    pub fn outgoing<S: Stream>(&self, stream: S) -> Watched<S> {
        Watched::new(stream, self.clone(), Flow::Outgoing)
    }

    /// An HTTP body, sent ([`Self::outgoing`]).
    pub fn outgoing_body<B>(&self, body: B) -> WatchedBody<B> {
        WatchedBody {
            inner: body,
            watchdog: self.clone(),
            flow: Flow::Outgoing,
        }
    }

    /// An HTTP body, read ([`Self::incoming`]).
    pub fn incoming_body<B>(&self, body: B) -> WatchedBody<B> {
        WatchedBody {
            inner: body,
            watchdog: self.clone(),
            flow: Flow::Incoming,
        }
    }

    /// Polls a `flow` with `poll` and tells the clock how it went. An outgoing poll that
    /// is not ready is our turn only until we have the next piece: its wake-up hands the
    /// turn back to the peer, which must then take it (the connection polls again only
    /// once the peer has taken what it has; one that stopped never does).
    fn observe<T>(
        &self,
        flow: Flow,
        cx: &mut Context<'_>,
        poll: impl FnOnce(&mut Context<'_>) -> Poll<T>,
    ) -> Poll<T> {
        match flow {
            Flow::Incoming => {
                let polled = poll(cx);
                if polled.is_ready() {
                    self.moved(Turn::Ours);
                } else {
                    self.waiting_on(Turn::Peer);
                }
                polled
            }
            Flow::Outgoing => {
                let waker = std::task::Waker::from(Arc::new(PeersTurn {
                    watchdog: self.clone(),
                    waker: cx.waker().clone(),
                }));
                let polled = poll(&mut Context::from_waker(&waker));
                if polled.is_ready() {
                    self.moved(Turn::Peer);
                } else {
                    self.waiting_on(Turn::Ours);
                }
                polled
            }
        }
    }
}

/// The waker of an outgoing poll that was not ready: once woken (the next piece is at
/// hand), it is the peer's turn again.
struct PeersTurn {
    watchdog: Watchdog,
    waker: std::task::Waker,
}

impl std::task::Wake for PeersTurn {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.watchdog.waiting_on(Turn::Peer);
        self.waker.wake_by_ref();
    }
}

/// Which way a watched stream's bytes go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    Incoming,
    Outgoing,
}

/// A stream whose polls drive a [`Watchdog`]'s clock.
pub struct Watched<S> {
    inner: Pin<Box<S>>,
    watchdog: Watchdog,
    flow: Flow,
}

impl<S> std::fmt::Debug for Watched<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watched")
            .field("watchdog", &self.watchdog)
            .field("flow", &self.flow)
            .finish_non_exhaustive()
    }
}

impl<S: Stream> Watched<S> {
    fn new(stream: S, watchdog: Watchdog, flow: Flow) -> Self {
        Self {
            inner: Box::pin(stream),
            watchdog,
            flow,
        }
    }
}

impl<S: Stream> Stream for Watched<S> {
    type Item = S::Item;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<S::Item>> {
        let this = self.get_mut();
        let inner = &mut this.inner;
        this.watchdog
            .observe(this.flow, cx, |cx| inner.as_mut().poll_next(cx))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.inner.size_hint()
    }
}

/// An HTTP body whose polls drive a [`Watchdog`]'s clock.
#[derive(Debug)]
pub struct WatchedBody<B> {
    inner: B,
    watchdog: Watchdog,
    flow: Flow,
}

impl<B> hyper::body::Body for WatchedBody<B>
where
    B: hyper::body::Body + Unpin,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<B::Data>, B::Error>>> {
        let this = self.get_mut();
        let inner = &mut this.inner;
        this.watchdog
            .observe(this.flow, cx, |cx| Pin::new(inner).poll_frame(cx))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// Reads `body` up to `limit` bytes and stops there: the rest is never read (its
/// connection is closed, not drained). Returns the bytes and whether there was more.
pub async fn read_at_most<B>(body: B, limit: usize) -> Result<(Bytes, bool), B::Error>
where
    B: hyper::body::Body<Data = Bytes> + Unpin,
{
    use http_body_util::BodyExt as _;
    let mut body = body;
    let mut kept = BytesMut::new();
    // A declared length over the limit is believed at once: not a byte is read.
    if usize::try_from(body.size_hint().lower()).map_or(true, |length| length > limit) {
        return Ok((Bytes::new(), true));
    }
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame?.into_data() else {
            continue; // trailers
        };
        let room = limit - kept.len();
        if data.len() > room {
            kept.extend_from_slice(&data[..room]);
            return Ok((kept.freeze(), true));
        }
        kept.extend_from_slice(&data);
    }
    Ok((kept.freeze(), false))
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt as _;

    const LIMIT: Duration = Duration::from_millis(300);

    /// A peer that sends nothing is found stalled after the limit, not before, and not
    /// long after.
    #[tokio::test]
    async fn a_silent_peer_stalls_after_the_limit() {
        let watchdog = Watchdog::new(LIMIT);
        let started = Instant::now();
        let mut silent = watchdog.incoming(futures_util::stream::pending::<u8>());
        let err = watchdog.guard(silent.next()).await.unwrap_err();
        let took = started.elapsed();
        assert_eq!(err.limit, LIMIT);
        assert!(took >= LIMIT && took < LIMIT * 3, "{took:?}");
        assert_eq!(err.to_string(), "nothing moved for 300 ms");
    }

    /// A peer that sends something within every limit is never stalled, however long
    /// the whole transfer takes.
    #[tokio::test]
    async fn a_slow_but_moving_peer_is_not_stalled() {
        let watchdog = Watchdog::new(LIMIT);
        let ticks = futures_util::stream::unfold(0, |n| async move {
            tokio::time::sleep(LIMIT / 3).await;
            (n < 8).then_some((n, n + 1))
        });
        let all = watchdog.guard(watchdog.incoming(ticks).collect::<Vec<_>>());
        assert_eq!(all.await.unwrap().len(), 8);
    }

    /// Time the reader spends elsewhere between items (a full queue downstream) is ours,
    /// not the peer's: no stall, though no item was asked for during several limits.
    #[tokio::test]
    async fn a_reader_that_holds_things_up_is_not_a_stalled_peer() {
        let watchdog = Watchdog::new(LIMIT);
        let mut ready = watchdog.incoming(futures_util::stream::iter(0..3));
        let read = watchdog.guard(async {
            let mut got = Vec::new();
            while let Some(n) = ready.next().await {
                got.push(n);
                tokio::time::sleep(LIMIT * 2).await;
            }
            got
        });
        assert_eq!(read.await.unwrap(), [0, 1, 2]);
    }

    /// Sending: a body the peer stops taking stalls; a body whose next piece is slow to
    /// come from our side does not.
    #[tokio::test]
    async fn an_outgoing_body_stalls_only_when_the_peer_stops_taking_it() {
        use http_body_util::BodyExt as _;
        let watchdog = Watchdog::new(LIMIT);
        let slow_producer = futures_util::stream::unfold(0, |n| async move {
            tokio::time::sleep(LIMIT * 2).await;
            (n < 2).then(|| {
                (
                    Ok::<_, std::convert::Infallible>(hyper::body::Frame::data(
                        Bytes::from_static(b"x"),
                    )),
                    n + 1,
                )
            })
        });
        let mut body =
            watchdog.outgoing_body(http_body_util::StreamBody::new(Box::pin(slow_producer)));
        let taken = watchdog.guard(async {
            let mut n = 0;
            while let Some(frame) = body.frame().await {
                frame.unwrap();
                n += 1;
            }
            n
        });
        assert_eq!(taken.await.unwrap(), 2);

        // Our next piece came, but the connection never asked for it (the peer took
        // nothing more): the peer's turn since the piece came.
        let watchdog = Watchdog::new(LIMIT);
        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(1);
        let chunks = futures_util::stream::unfold(rx, |mut rx| async move {
            let chunk = rx.recv().await?;
            Some((
                Ok::<_, std::convert::Infallible>(hyper::body::Frame::data(chunk)),
                rx,
            ))
        });
        let mut body = watchdog.outgoing_body(http_body_util::StreamBody::new(Box::pin(chunks)));
        let first = futures_util::FutureExt::now_or_never(body.frame());
        assert!(first.is_none(), "nothing to send yet: our turn");
        tx.send(Bytes::from_static(b"x")).await.unwrap();
        let started = Instant::now();
        let fired = watchdog.guard(futures_util::future::pending::<()>());
        let err = tokio::time::timeout(LIMIT * 10, fired).await;
        assert_eq!(err, Ok(Err(Stalled { limit: LIMIT })));
        assert!(started.elapsed() < LIMIT * 3, "{:?}", started.elapsed());

        // The peer took one piece and no more: its turn, for longer than the limit.
        let watchdog = Watchdog::new(LIMIT);
        let mut body = watchdog.outgoing_body(http_body_util::Full::new(Bytes::from_static(b"x")));
        body.frame().await.unwrap().unwrap();
        let err = watchdog.guard(futures_util::future::pending::<()>()).await;
        assert_eq!(err, Err(Stalled { limit: LIMIT }));
    }

    /// An endless body is read up to the limit and no further (the read ends, which it
    /// could not if the body were read whole); a declared length over the limit is not
    /// read at all.
    #[tokio::test]
    async fn bodies_are_read_up_to_the_limit_and_no_further() {
        let endless = futures_util::stream::repeat_with(|| {
            Ok::<_, std::convert::Infallible>(hyper::body::Frame::data(Bytes::from(vec![
                b'a';
                1000
            ])))
        });
        let (kept, more) = read_at_most(http_body_util::StreamBody::new(endless), 2500)
            .await
            .unwrap();
        assert_eq!((kept.len(), more), (2500, true));

        let short = http_body_util::Full::new(Bytes::from_static(b"{}"));
        assert_eq!(
            read_at_most(short, 2).await.unwrap(),
            (Bytes::from_static(b"{}"), false)
        );
        let declared = http_body_util::Full::new(Bytes::from(vec![0; 10]));
        assert_eq!(
            read_at_most(declared, 9).await.unwrap(),
            (Bytes::new(), true)
        );
    }

    #[test]
    fn limits_read_as_people_write_them() {
        assert_eq!(StallTimeout::DEFAULT.to_string(), "5 min");
        assert_eq!(human(Duration::from_secs(90)), "90 s");
        assert_eq!(human(Duration::from_secs(2)), "2 s");
    }
}
