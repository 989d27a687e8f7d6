//! A new layer goes to the registry while it is compressed: the compressor writes into a
//! [`PartSink`] (on the export's blocking thread), which hashes the compressed bytes and
//! hands them over as they come; [`stream_blob`] (async) sends them as the body of one
//! `PATCH` (chunked, as `docker push` sends a layer) and completes the upload with
//! `?digest=` once the body has ended, the only moment the digest is needed. So
//! compressing, uploading and reading the next layer overlap, and memory holds one part
//! plus a few chunks per layer whatever its size.
//!
//! The first [`PART_SIZE`] bytes are held back: a blob that ends before them is known
//! whole before anything is sent, so it is `HEAD`ed first and skipped when the
//! repository has it, as before. Every layer is also spooled to an unlinked file, so an
//! upload the registry loses, or that breaks off, can start again from it (in parts,
//! with the usual retries); when the spool's disk is full, the stream goes on without it,
//! and only a lost upload then fails, saying where the space ran out. The restart is a
//! new session with the whole blob in one `PATCH`, as ECR requires ([`upload_blob`]).

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use sha2::{Digest as _, Sha256};
use tokio::sync::mpsc;

use super::export::{self, hex, spool_file, Content};
use super::upload::{upload_blob, Blob, BlobOutcome};
use super::{mb, short, DirectPushError, PART_SIZE};
use crate::registry::{Failure, Registry};

/// Once the first part is out, compressed bytes go over in chunks of this size.
const STREAM_CHUNK: usize = 512 << 10;
/// Chunks queued between the compressor and the request body, each way.
pub const STREAM_QUEUE: usize = 4;

/// What the compressing thread hands the uploader, in order: the first part (the first
/// [`PART_SIZE`] bytes), chunks, then the end.
#[derive(Debug)]
pub enum LayerEvent {
    Data(Bytes),
    End(LayerEnd),
}

/// A layer's compressed stream, ended.
#[derive(Debug, Clone)]
pub struct LayerEnd {
    pub digest: String,
    pub size: u64,
    /// The bytes not sent as a full part: the whole blob when no part was sent.
    pub tail: Bytes,
    /// The whole blob on disk, unless the spool failed (then `spool_problem` says why).
    pub spool: Option<Arc<File>>,
    pub spool_problem: Option<String>,
}

/// The compressor's output: hashed, spooled, and cut into parts for the uploader.
#[derive(Debug)]
pub struct PartSink {
    parts: mpsc::Sender<LayerEvent>,
    part: Vec<u8>,
    /// Whether the first part went over (then chunks follow).
    started: bool,
    sha: Sha256,
    size: u64,
    spool: Option<(BufWriter<File>, File)>,
    spool_dir: PathBuf,
    spool_problem: Option<String>,
}

impl PartSink {
    pub fn new(parts: mpsc::Sender<LayerEvent>, spool_dir: &Path) -> Self {
        let (spool, spool_problem) = match spool_file(spool_dir).and_then(|file| {
            let reader = file.try_clone()?;
            Ok((BufWriter::with_capacity(1 << 20, file), reader))
        }) {
            Ok(spool) => (Some(spool), None),
            Err(e) => (
                None,
                Some(format!(
                    "cannot create a spool file in {}: {e}",
                    spool_dir.display()
                )),
            ),
        };
        Self {
            parts,
            part: Vec::with_capacity(PART_SIZE),
            started: false,
            sha: Sha256::new(),
            size: 0,
            spool,
            spool_dir: spool_dir.to_path_buf(),
            spool_problem,
        }
    }

    fn spool_write(&mut self, buf: &[u8]) {
        let Some((writer, _)) = &mut self.spool else {
            return;
        };
        if let Err(e) = writer.write_all(buf) {
            self.lose_spool(&e);
        }
    }

    fn lose_spool(&mut self, e: &io::Error) {
        self.spool = None;
        let problem = format!(
            "the spool in {} failed after {} of this layer: {e}; give it room for the largest compressed layer (TMPDIR names it)",
            self.spool_dir.display(),
            mb(self.size)
        );
        tracing::warn!(
            "{problem}: the layer is still streamed, but a lost upload session cannot start again"
        );
        self.spool_problem = Some(problem);
    }

    /// Ends the stream: flushes the spool, and returns what the uploader's `End` holds.
    pub fn finish(mut self) -> LayerEnd {
        let spool = match self.spool.take() {
            Some((mut writer, reader)) => match writer.flush() {
                Ok(()) => Some(Arc::new(reader)),
                Err(e) => {
                    self.lose_spool(&e);
                    None
                }
            },
            None => None,
        };
        LayerEnd {
            digest: format!("sha256:{}", hex(&self.sha.finalize_reset())),
            size: self.size,
            tail: Bytes::from(std::mem::take(&mut self.part)),
            spool,
            spool_problem: self.spool_problem.take(),
        }
    }

    /// The sender, to hand the end over once the layer's other facts are known.
    pub fn sender(&self) -> mpsc::Sender<LayerEvent> {
        self.parts.clone()
    }
}

impl Write for PartSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let full = if self.started {
            STREAM_CHUNK
        } else {
            PART_SIZE
        };
        let n = buf.len().min(full - self.part.len());
        let taken = &buf[..n];
        self.sha.update(taken);
        self.size += n as u64;
        self.spool_write(taken);
        self.part.extend_from_slice(taken);
        if self.part.len() == full {
            self.started = true;
            let part = std::mem::replace(&mut self.part, Vec::with_capacity(STREAM_CHUNK));
            self.parts
                .blocking_send(LayerEvent::Data(Bytes::from(part)))
                .map_err(export::abandoned)?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Hands one layer's parts to `n` uploads, one per registry: each gets every part
/// (shared, not copied) at the pace of the slowest, so the layer is compressed and
/// spooled once and memory still holds a few chunks per upload. An upload that has ended
/// early (its registry failed) is passed over.
pub(super) fn tee(
    mut parts: mpsc::Receiver<LayerEvent>,
    n: usize,
) -> Vec<mpsc::Receiver<LayerEvent>> {
    let (senders, receivers): (Vec<_>, Vec<_>) =
        (0..n).map(|_| mpsc::channel(STREAM_QUEUE)).unzip();
    tokio::spawn(async move {
        while let Some(event) = parts.recv().await {
            let mut delivered = false;
            for tx in &senders {
                let copy = match &event {
                    LayerEvent::Data(data) => LayerEvent::Data(data.clone()),
                    LayerEvent::End(end) => LayerEvent::End(end.clone()),
                };
                delivered |= tx.send(copy).await.is_ok();
            }
            if !delivered {
                // Every upload has ended: dropping `parts` stops the compressor.
                return;
            }
        }
    });
    receivers
}

/// Uploads one streamed layer (`path` in the export) as its data comes; the digest it
/// ends with, and what became of it. `None` for the digest when the stream broke off (the
/// export's own error says why).
pub(super) async fn stream_blob(
    reg: &Registry,
    path: &str,
    mut parts: mpsc::Receiver<LayerEvent>,
) -> (Option<String>, Result<BlobOutcome, DirectPushError>) {
    let broke_off = || {
        DirectPushError::export(
            path,
            reg,
            "the export stopped in the middle of the layer".into(),
        )
    };
    let first = match parts.recv().await {
        None => return (None, Err(broke_off())),
        // Known whole before anything is sent: HEAD first, as any other blob.
        Some(LayerEvent::End(end)) => {
            let blob = Blob {
                digest: end.digest.clone(),
                size: end.size,
                content: Content::Memory(end.tail),
            };
            return (Some(end.digest), upload_blob(reg, &blob).await);
        }
        Some(LayerEvent::Data(first)) => first,
    };
    let what = format!("layer {path}");
    let fail = |op: &str, f: (Failure, u32)| DirectPushError::registry(reg, op, what.clone(), f);
    let location = match reg
        .with_retry(&format!("starting the upload of {what}"), || {
            reg.start_upload()
        })
        .await
    {
        Ok(location) => location,
        Err(f) => return (None, Err(fail("starting the upload of", f))),
    };
    let (body, chunks) = mpsc::channel::<Bytes>(STREAM_QUEUE);
    // Forwards the data into the request body. Whatever becomes of the request, the
    // data is taken to its end, so the compressor never stalls and the spool is whole.
    let feed = async move {
        let mut body = Some(body);
        let mut next = Some(first);
        loop {
            if let (Some(data), Some(tx)) = (next.take(), &body) {
                if tx.send(data).await.is_err() {
                    body = None; // the request ended early: its answer says why
                }
            }
            match parts.recv().await {
                Some(LayerEvent::Data(data)) => next = Some(data),
                Some(LayerEvent::End(end)) => {
                    if let Some(tx) = body.take() {
                        if !end.tail.is_empty() {
                            let _ = tx.send(end.tail.clone()).await;
                        }
                    }
                    return Some(end);
                }
                None => return None,
            }
        }
    };
    let (sent, end) = tokio::join!(reg.patch_streamed(&location, chunks), feed);
    let Some(end) = end else {
        return (None, Err(broke_off()));
    };
    let digest = end.digest.clone();
    let done = || BlobOutcome {
        uploaded: end.size,
        ..BlobOutcome::default()
    };
    let failure = match sent {
        Ok(location) => match reg
            .with_retry(&format!("completing the upload of {what}"), || {
                reg.complete(&location, &digest)
            })
            .await
        {
            Ok(()) => return (Some(digest), Ok(done())),
            // A completion whose answer was lost: the blob may be there already.
            Err((failure, _)) if failure.session_lost() => {
                if matches!(reg.has_blob(&digest).await, Ok(true)) {
                    return (Some(digest), Ok(done()));
                }
                failure
            }
            Err(f) => return (Some(digest), Err(fail("completing the upload of", f))),
        },
        // A broken connection, a 5xx, a session the registry lost, an expired token (got
        // anew here; the restart's requests then carry it): the spool has it all.
        Err(mut failure) if failure.token_expired() => {
            if !reg.renew_token(&mut failure).await {
                return (Some(digest), Err(fail("uploading", (failure, 1))));
            }
            failure
        }
        Err(failure) if failure.transient || failure.session_lost() => failure,
        Err(failure) => return (Some(digest), Err(fail("uploading", (failure, 1)))),
    };
    restart_from_spool(reg, &what, end, &failure).await
}

/// The upload of a streamed layer was lost: it starts again from the spool file, as any
/// spooled blob (`HEAD` first, its own bounded restarts).
async fn restart_from_spool(
    reg: &Registry,
    what: &str,
    end: LayerEnd,
    failure: &Failure,
) -> (Option<String>, Result<BlobOutcome, DirectPushError>) {
    let digest = end.digest.clone();
    let Some(file) = end.spool else {
        let why = end.spool_problem.unwrap_or_default();
        return (
            Some(digest.clone()),
            Err(DirectPushError::image(
                &digest,
                reg,
                format!(
                    "the upload of {what} ({}) was lost ({}) and cannot start again: {why}; \
                     it needs {} there",
                    short(&digest),
                    failure.describe(),
                    mb(end.size)
                ),
            )),
        );
    };
    tracing::warn!(
        "the upload of {what} to {}/{} was lost ({}); starting it again from its spool",
        reg.host,
        reg.repository,
        failure.describe()
    );
    let blob = Blob {
        digest: digest.clone(),
        size: end.size,
        content: Content::File(file),
    };
    (Some(digest), upload_blob(reg, &blob).await)
}
