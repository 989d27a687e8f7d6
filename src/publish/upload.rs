//! The blobs of one push ([`Uploads`]: each started once, concurrently, bounded) and one
//! blob's upload ([`upload_blob`]): `HEAD` first (the repository may have it), then one
//! session with the whole body in one `PATCH`, completed with the digest; a failed body
//! starts a new session, bounded.

use std::collections::{HashMap, HashSet};
use std::io;
use std::sync::Arc;
use std::time::Instant;

use futures_util::stream::{FuturesUnordered, StreamExt as _};
use futures_util::{future::BoxFuture, FutureExt as _};
use tokio::sync::Semaphore;

use super::export::{self, Content};
use super::stream::{self, LayerEvent};
use super::targets::Fanout;
use super::{mb, reuse, short, DirectPushError, UPLOAD_CONCURRENCY};
use crate::registry::{Failure, Registry};

/// A blob to upload: its descriptor and where its bytes are.
#[derive(Debug, Clone)]
pub(super) struct Blob {
    pub digest: String,
    pub size: u64,
    pub content: Content,
}

/// What became of one blob.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct BlobOutcome {
    pub skipped: bool,
    pub mounted: bool,
    pub uploaded: u64,
    /// From the upload's start (after waiting for a slot) to its end.
    pub seconds: f64,
}

/// An upload under way: the registry it goes to (an index in the [`Fanout`]), the
/// digest it is (a streamed layer's is known only at its end, and not when the stream
/// broke off), and its outcome.
type Running = BoxFuture<'static, (usize, Option<String>, Result<BlobOutcome, DirectPushError>)>;

/// Every blob of one push, by digest: started at most once (so no blob is compressed or
/// sent twice), to every registry of the [`Fanout`], at most [`UPLOAD_CONCURRENCY`] at a
/// time per registry, and what became of each there.
pub(super) struct Uploads {
    fanout: Fanout,
    limits: Vec<Arc<Semaphore>>,
    started: HashSet<String>,
    running: FuturesUnordered<Running>,
    /// Per registry, in the fan-out's order.
    pub done: Vec<HashMap<String, BlobOutcome>>,
    /// Per registry, the known blobs copied there from the primary registry (digest to
    /// bytes sent), which the primary only skipped or mounted.
    copied: Vec<HashMap<String, u64>>,
}

impl Uploads {
    pub fn new(fanout: &Fanout) -> Self {
        Self {
            fanout: fanout.clone(),
            limits: (0..fanout.len())
                .map(|_| Arc::new(Semaphore::new(UPLOAD_CONCURRENCY)))
                .collect(),
            started: HashSet::new(),
            running: FuturesUnordered::new(),
            done: vec![HashMap::new(); fanout.len()],
            copied: vec![HashMap::new(); fanout.len()],
        }
    }

    /// Whether `digest` was started (or reused) already.
    pub fn has(&self, digest: &str) -> bool {
        self.started.contains(digest)
    }

    /// Starts `blob` in every registry unless it was started already.
    pub fn start(&mut self, blob: &Blob) {
        if !self.started.insert(blob.digest.clone()) {
            return;
        }
        for index in self.fanout.live() {
            let blob = blob.clone();
            self.run(index, |reg| async move {
                let result = upload_blob(&reg, &blob).await;
                (Some(blob.digest), result)
            });
        }
    }

    /// Starts the upload of a layer that is still being compressed (`path` in the
    /// export), from its parts as they come ([`stream`]), to every registry at once: the
    /// parts are shared, not copied, and the layer is compressed and spooled once.
    pub fn stream(&mut self, path: &str, parts: tokio::sync::mpsc::Receiver<LayerEvent>) {
        let live = self.fanout.live();
        let mut receivers = if let [_] = live.as_slice() {
            vec![parts]
        } else {
            stream::tee(parts, live.len())
        };
        for index in live.into_iter().rev() {
            let (path, parts) = (path.to_string(), receivers.pop().expect("one per registry"));
            self.run(index, |reg| async move {
                stream::stream_blob(&reg, &path, parts).await
            });
        }
    }

    /// Runs one upload to registry `index` once a slot there is free, timing it from
    /// then.
    fn run<F, Fut>(&mut self, index: usize, upload: F)
    where
        F: FnOnce(Arc<Registry>) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = (Option<String>, Result<BlobOutcome, DirectPushError>)>
            + Send
            + 'static,
    {
        let reg = Arc::clone(self.fanout.reg(index));
        let limit = Arc::clone(&self.limits[index]);
        self.running.push(
            async move {
                let _permit = limit.acquire_owned().await;
                let upload_started = Instant::now();
                let (digest, result) = upload(reg).await;
                let result = result.map(|outcome| BlobOutcome {
                    seconds: upload_started.elapsed().as_secs_f64(),
                    ..outcome
                });
                (index, digest, result)
            }
            .boxed(),
        );
    }

    /// Records the layers found in the registry or mounted before the export
    /// ([`reuse`]), in `diff_ids` order, each once.
    pub fn record_reused(
        &mut self,
        diff_ids: &[String],
        reused: &HashMap<String, (reuse::KnownBlob, reuse::Reused)>,
        on_line: &mut dyn FnMut(&str),
    ) {
        for (blob, how) in diff_ids.iter().filter_map(|d| reused.get(d)) {
            if !self.started.insert(blob.digest.clone()) {
                continue;
            }
            let short = short(&blob.digest);
            let from = &blob.repository;
            let outcome = match how {
                reuse::Reused::Present => {
                    on_line(&format!(
                        "{short}: Layer already exists (known from {from}: not compressed)"
                    ));
                    BlobOutcome {
                        skipped: true,
                        ..BlobOutcome::default()
                    }
                }
                reuse::Reused::Mounted => {
                    on_line(&format!("{short}: Mounted from {from}"));
                    BlobOutcome {
                        mounted: true,
                        ..BlobOutcome::default()
                    }
                }
            };
            for (done, copied) in self.done.iter_mut().zip(&self.copied) {
                let outcome = match copied.get(&blob.digest) {
                    Some(&uploaded) => BlobOutcome {
                        uploaded,
                        ..BlobOutcome::default()
                    },
                    None => outcome,
                };
                done.insert(blob.digest.clone(), outcome);
            }
        }
    }

    /// Records the known blob `digest` as copied to registry `index` from the primary,
    /// `bytes` sent: what [`Self::record_reused`] then counts there.
    pub fn record_copied(&mut self, index: usize, digest: &str, bytes: u64) {
        if let Some(copied) = self.copied.get_mut(index) {
            copied.insert(digest.to_string(), bytes);
        }
    }

    /// Records a blob every registry holds already (those it was copied to counting what
    /// the copy sent).
    pub fn record_present(&mut self, digest: &str) {
        self.started.insert(digest.to_string());
        for (done, copied) in self.done.iter_mut().zip(&self.copied) {
            let outcome = match copied.get(digest) {
                Some(&uploaded) => BlobOutcome {
                    uploaded,
                    ..BlobOutcome::default()
                },
                None => BlobOutcome {
                    skipped: true,
                    ..BlobOutcome::default()
                },
            };
            done.insert(digest.to_string(), outcome);
        }
    }

    /// Drops every upload under way (the push failed): their streams' receivers go, so
    /// the export's reader, if it waits to hand them data, stops.
    pub fn abandon(&mut self) {
        self.running.clear();
    }

    pub fn is_idle(&self) -> bool {
        self.running.is_empty()
    }

    /// Waits for the next upload to end and logs it; `None` when none is running. A
    /// failed upload drops its registry from the push while others remain in it (their
    /// uploads go on); it is the push's failure only when it was the last.
    pub async fn next(
        &mut self,
        on_line: &mut dyn FnMut(&str),
    ) -> Option<Result<(), DirectPushError>> {
        let (index, digest, result) = self.running.next().await?;
        let prefix = self.fanout.prefix(index);
        // A stream that broke off (no digest) failed with the export, not with its
        // registry: the push's failure, whichever registries remain.
        let result = match (digest.is_none(), result) {
            (true, Err(err)) => return Some(Err(err)),
            (_, result) => result,
        };
        let outcome = match result {
            Ok(outcome) => outcome,
            Err(err) if self.fanout.len() > 1 => {
                let why = crate::error_chain(&err);
                if self.fanout.failure(index).is_none() {
                    on_line(&format!("{prefix}failed: {why}"));
                }
                return Some(if self.fanout.fail(index, why) {
                    Ok(())
                } else {
                    Err(err)
                });
            }
            Err(err) => return Some(Err(err)),
        };
        // Only a stream that broke off before its end has no digest, and it has failed.
        let Some(digest) = digest else {
            return Some(Ok(()));
        };
        self.started.insert(digest.clone());
        let short = short(&digest);
        if outcome.skipped {
            on_line(&format!("{prefix}{short}: Layer already exists"));
        } else {
            on_line(&format!(
                "{prefix}{short}: Pushed {} in {:.1} s",
                mb(outcome.uploaded),
                outcome.seconds
            ));
        }
        self.done[index].insert(digest, outcome);
        Some(Ok(()))
    }

    /// Runs the uploads while the export's reader (`reader`) hands over what it reads
    /// (`items`, each given to `take` with the uploads to start), until the reader is done
    /// and every upload has ended. The first failed upload ends it: the others are dropped,
    /// so a reader waiting to hand them data stops. The reader's own error, when it has
    /// one, wins: it is the cause of an upload's ([`export::outcome`]). The export's first
    /// byte is logged with the first item.
    pub async fn drive<T, R>(
        &mut self,
        mut items: tokio::sync::mpsc::Receiver<T>,
        reader: tokio::task::JoinHandle<io::Result<R>>,
        feeder: &export::Feeder,
        export_error: impl Fn(String) -> DirectPushError,
        on_line: &mut dyn FnMut(&str),
        mut take: impl FnMut(&mut Self, T, &mut dyn FnMut(&str)),
    ) -> Result<R, DirectPushError> {
        let mut open = true;
        let mut first = true;
        let mut failed = None;
        while open || !self.is_idle() {
            tokio::select! {
                next = items.recv(), if open => match next {
                    Some(item) => {
                        if std::mem::take(&mut first) {
                            if let Some(seconds) = feeder.first_byte() {
                                on_line(&format!(
                                    "Image export from the daemon: first byte after {seconds:.1} s"
                                ));
                            }
                        }
                        take(self, item, on_line);
                    }
                    None => open = false,
                },
                Some(result) = self.next(on_line), if !self.is_idle() => {
                    if let Err(e) = result {
                        failed = Some(e);
                        break;
                    }
                }
            }
        }
        drop(items);
        if failed.is_some() {
            self.abandon();
        }
        let read = reader
            .await
            .map_err(|e| export_error(format!("the export reader stopped: {e}")))?;
        export::outcome(read, failed, |e| export_error(crate::error_chain(e)))
    }

    /// Waits for every upload started.
    pub async fn finish(&mut self, on_line: &mut dyn FnMut(&str)) -> Result<(), DirectPushError> {
        while let Some(result) = self.next(on_line).await {
            result?;
        }
        Ok(())
    }
}

/// Uploads one blob whose bytes are all at hand (memory, or a spool file): `HEAD` first
/// (the repository may have it), then a session with the whole body in one `PATCH`
/// ([`crate::registry::rules::PATCHES_PER_SESSION`]) and `PUT ?digest=`. A `PATCH` that
/// fails cannot be sent again in its session, so any failure of the body starts a new
/// session, at most the retry policy's attempts in all; the session's opening and its
/// completion are retried as any request.
pub(super) async fn upload_blob(
    reg: &Registry,
    blob: &Blob,
) -> Result<BlobOutcome, DirectPushError> {
    let subject = || format!("blob {}", blob.digest);
    let fail = |op: &str, f: (Failure, u32)| DirectPushError::registry(reg, op, subject(), f);
    let what = format!("blob {}", short(&blob.digest));
    if reg
        .with_retry(&format!("checking {what}"), || reg.has_blob(&blob.digest))
        .await
        .map_err(|f| fail("checking", f))?
    {
        return Ok(BlobOutcome {
            skipped: true,
            ..BlobOutcome::default()
        });
    }
    let uploaded = || BlobOutcome {
        uploaded: blob.size,
        ..BlobOutcome::default()
    };
    let mut session = 1;
    let mut renewed = false;
    loop {
        let location = reg
            .with_retry(&format!("starting the upload of {what}"), || {
                reg.start_upload()
            })
            .await
            .map_err(|f| fail("starting the upload of", f))?;
        let mut failure = match reg.patch_whole(&location, &blob.content, blob.size).await {
            Ok(next) => match reg
                .with_retry(&format!("completing the upload of {what}"), || {
                    reg.complete(&next, &blob.digest)
                })
                .await
            {
                Ok(()) => return Ok(uploaded()),
                // A completion whose answer was lost: the blob may be there already.
                Err((failure, attempts)) if failure.session_lost() => {
                    if matches!(reg.has_blob(&blob.digest).await, Ok(true)) {
                        return Ok(uploaded());
                    }
                    if session >= reg.retry.attempts {
                        return Err(fail("completing the upload of", (failure, attempts)));
                    }
                    failure
                }
                Err(f) => return Err(fail("completing the upload of", f)),
            },
            Err(failure) => failure,
        };
        if failure.token_expired() && !renewed {
            renewed = true;
            if !reg.renew_token(&mut failure).await {
                return Err(fail("uploading", (failure, session)));
            }
        } else if !(failure.transient || failure.session_lost()) || session >= reg.retry.attempts {
            return Err(fail("uploading", (failure, session)));
        }
        tracing::warn!(
            "the upload of {what} to {}/{} failed ({}); starting it again in a new session \
             (upload {session} of {})",
            reg.host,
            reg.repository,
            failure.describe(),
            reg.retry.attempts
        );
        tokio::time::sleep(reg.retry.delay(session)).await;
        session += 1;
    }
}
