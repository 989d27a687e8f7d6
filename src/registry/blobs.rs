//! Blobs: existence (`HEAD`), cross-repository mounts, uploads and reads.
//!
//! An upload is a session (`POST`), the whole body in **one** `PATCH`, then `PUT
//! ?digest=`: ECR keeps only the first `PATCH` of a session ([`rules::PATCHES_PER_SESSION`])
//! and answers it 201 ([`rules::PATCH_TAKEN`]). The `Range` of the answer must cover every
//! byte sent; when it does not, the bytes were dropped and the session counts as lost.

use std::fmt::Write as _;
use std::fs::File;
use std::io;
use std::sync::Arc;

use bytes::Bytes;
use hyper::{Method, StatusCode};

use http_body_util::BodyExt as _;

use super::{rules, Answer, Failure, Opened, Registry, RequestBody, ANSWER_LIMIT, REQUEST_TIMEOUT};
use crate::network::stall;

/// Bytes read from disk per piece of a spooled blob's body.
const FILE_PIECE: usize = 1 << 20;
/// Pieces read ahead of the connection.
const FILE_QUEUE: usize = 4;

/// Where a blob's bytes are: in memory, or in a (spool) file from its start.
#[derive(Debug, Clone)]
pub enum BlobBody {
    Memory(Bytes),
    File(Arc<File>),
}

impl BlobBody {
    /// `len` bytes at `offset` (a blocking read for files).
    pub fn read_part(&self, offset: u64, len: usize) -> io::Result<Bytes> {
        match self {
            BlobBody::Memory(bytes) => {
                let start = usize::try_from(offset).map_err(io::Error::other)?;
                Ok(bytes.slice(start..start + len))
            }
            BlobBody::File(file) => {
                use std::os::unix::fs::FileExt as _;
                let mut buf = vec![0u8; len];
                file.read_exact_at(&mut buf, offset)?;
                Ok(Bytes::from(buf))
            }
        }
    }

    /// The first `size` bytes as a request body: memory as it is, a file read on a
    /// blocking thread as the connection takes it. A read error ends the body early, so
    /// the request fails and the upload's session is given up.
    fn request_body(&self, size: u64) -> RequestBody {
        match self {
            BlobBody::Memory(bytes) => {
                let end = usize::try_from(size).map_or(bytes.len(), |s| s.min(bytes.len()));
                RequestBody::whole(bytes.slice(..end))
            }
            BlobBody::File(_) => {
                let (tx, rx) = tokio::sync::mpsc::channel(FILE_QUEUE);
                let body = self.clone();
                tokio::task::spawn_blocking(move || {
                    let mut offset = 0;
                    while offset < size {
                        let len = usize::try_from((size - offset).min(FILE_PIECE as u64))
                            .unwrap_or(FILE_PIECE);
                        let Ok(piece) = body.read_part(offset, len) else {
                            return;
                        };
                        if tx.blocking_send(piece).is_err() {
                            return;
                        }
                        offset += len as u64;
                    }
                });
                RequestBody::streamed(rx, Some(size))
            }
        }
    }
}

/// What a mount request did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mount {
    /// 201: the repository has the blob now.
    Mounted,
    /// 202: not mounted; the registry opened an upload session instead, kept for the
    /// next upload ([`Registry::start_upload`] takes it).
    NotMounted,
}

impl Registry {
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

    /// Opens an upload session, or takes one a mount opened; returns its location.
    pub async fn start_upload(&self) -> Result<String, Failure> {
        let spare = self
            .spare_sessions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .pop();
        if let Some(location) = spare {
            return Ok(location);
        }
        let url = self.url("blobs/uploads/");
        let answer = self.send(Method::POST, &url, &[], Bytes::new()).await?;
        if answer.is(&rules::SESSION_OPENED) {
            self.location(&answer)
        } else {
            Err(Failure::from_answer(&answer))
        }
    }

    /// Mounts the blob from another repository of the registry. ECR mounts only under the
    /// conditions [`rules::Mounting`] lists; otherwise it answers 202 with an upload
    /// session, which is kept for the next upload rather than cancelled.
    pub async fn mount(&self, digest: &str, from: &str) -> Result<Mount, Failure> {
        let url = self.url(&format!("blobs/uploads/?mount={digest}&from={from}"));
        let answer = self.send(Method::POST, &url, &[], Bytes::new()).await?;
        match answer.status {
            StatusCode::CREATED => Ok(Mount::Mounted),
            StatusCode::ACCEPTED => {
                if let Ok(location) = self.location(&answer) {
                    self.spare_sessions
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .push(location);
                }
                Ok(Mount::NotMounted)
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
                transient: true,
                ..Failure::local("the upload was accepted without a Location".into())
            })
    }

    /// Uploads a small blob held in memory unless the repository has it already: one
    /// attempt (a `HEAD`, then a session, its `PATCH` and the `PUT`), for `with_retry`.
    pub async fn ensure_blob(&self, digest: &str, bytes: &Bytes) -> Result<(), Failure> {
        if self.has_blob(digest).await? {
            return Ok(());
        }
        let location = self.start_upload().await?;
        let body = BlobBody::Memory(bytes.clone());
        let next = self
            .patch_whole(&location, &body, bytes.len() as u64)
            .await?;
        self.complete(&next, digest).await
    }

    /// [`Self::ensure_blob`] with retries: transient failures as [`Self::with_retry`]
    /// retries them, and a session the registry lost (ECR's `BLOB_UPLOAD_UNKNOWN`) started
    /// again in a new one, up to the retry policy's attempts.
    pub async fn upload_small_blob(&self, digest: &str, bytes: &Bytes) -> Result<(), Failure> {
        let mut session = 1;
        loop {
            let attempt = self
                .with_retry(&format!("uploading blob {digest}"), || {
                    self.ensure_blob(digest, bytes)
                })
                .await;
            match attempt {
                Ok(()) => return Ok(()),
                Err((failure, _)) if failure.session_lost() && session < self.retry.attempts => {
                    tracing::warn!(
                        "the upload session of {digest} was lost ({}); starting a new one",
                        failure.describe()
                    );
                    session += 1;
                }
                Err((failure, _)) => return Err(failure),
            }
        }
    }

    /// A (small) blob of `repository`, at most `limit` bytes (the size its descriptor
    /// gives): a body that goes on past that is not read further, and fails.
    pub async fn get_blob(
        &self,
        repository: &str,
        digest: &str,
        limit: u64,
    ) -> Result<Bytes, Failure> {
        let body = self.open_blob(repository, digest).await?;
        let cap = usize::try_from(limit).unwrap_or(usize::MAX);
        let watchdog = self.stall.watchdog();
        let read = watchdog.guard(stall::read_at_most(watchdog.incoming_body(body), cap));
        match tokio::time::timeout(REQUEST_TIMEOUT, read).await {
            Ok(Ok(Ok((_, true)))) => Err(Failure::local(format!(
                "blob {digest} is larger than the {limit} bytes expected; it was not read \
                 past them"
            ))),
            Ok(Ok(Ok((bytes, false)))) => Ok(bytes),
            Ok(Ok(Err(e))) => Err(Failure::transport(crate::error_chain(&e))),
            Ok(Err(stalled)) => Err(self.blob_stalled(digest, stalled)),
            Err(_) => Err(Failure::transport(format!(
                "blob {digest} was not read within {}",
                stall::human(REQUEST_TIMEOUT)
            ))),
        }
    }

    /// Reading blob `digest` stalled: transient (a new connection may go through).
    fn blob_stalled(&self, digest: &str, stalled: stall::Stalled) -> Failure {
        Failure::transport(format!(
            "reading blob {digest} from {} stalled: {stalled}; raise {} if the link is only \
             that slow",
            self.host,
            crate::env::STALL_TIMEOUT
        ))
    }

    /// Streams a blob of `repository` to `chunks` as it comes, and returns how many bytes
    /// came: one attempt. It stops early, with the count so far, once more than `limit`
    /// bytes came or the receiver hung up (nothing more is wanted). A pause as long as the
    /// stall timeout between two pieces fails it, as a broken connection does.
    pub async fn stream_blob(
        &self,
        repository: &str,
        digest: &str,
        limit: u64,
        chunks: &tokio::sync::mpsc::Sender<io::Result<Bytes>>,
    ) -> Result<u64, Failure> {
        let mut body = self.open_blob(repository, digest).await?;
        let mut read = 0u64;
        loop {
            let idle = self.stall.get();
            let frame = match tokio::time::timeout(idle, body.frame()).await {
                Err(_) => {
                    let stalled = stall::Stalled { limit: idle };
                    let mut failure = self.blob_stalled(digest, stalled);
                    let _ = write!(failure.message, " ({read} bytes in)");
                    return Err(failure);
                }
                Ok(None) => return Ok(read),
                Ok(Some(frame)) => frame.map_err(|e| Failure::transport(crate::error_chain(&e)))?,
            };
            let Ok(data) = frame.into_data() else {
                continue; // trailers
            };
            read += data.len() as u64;
            if read > limit || chunks.send(Ok(data)).await.is_err() {
                return Ok(read);
            }
        }
    }

    /// `GET` on a blob, its body unread. A redirect to another host (ECR's presigned S3
    /// URLs, which refuse a second credential: open-policy-agent/opa#6728) is followed
    /// without the registry's credentials.
    async fn open_blob(
        &self,
        repository: &str,
        digest: &str,
    ) -> Result<hyper::body::Incoming, Failure> {
        let url = self.url_in(repository, &format!("blobs/{digest}"));
        let answer = match self.open(&url).await? {
            Opened::Body(body) => return Ok(body),
            Opened::Answer(answer) => answer,
        };
        if !answer.status.is_redirection() {
            return Err(Failure::from_answer(&answer));
        }
        let target = answer
            .header("location")
            .map(|l| self.absolute(l))
            .ok_or_else(|| Failure::from_answer(&answer))?;
        match self.open(&target).await? {
            Opened::Body(body) => Ok(body),
            Opened::Answer(answer) => {
                // Not the body: S3 may echo the presigned URL's signature in it.
                let status = answer.status.as_u16();
                Err(Failure {
                    status: Some(status),
                    transient: rules::status_is_transient(status, None),
                    ..Failure::local(format!("the blob's redirect target answered HTTP {status}"))
                })
            }
        }
    }

    /// Sends the first `size` bytes of `body` as the one `PATCH` of the session at
    /// `location`, and returns where the upload goes on. One attempt: a failed `PATCH`
    /// leaves the session in an unknown state, so the caller starts a new one.
    pub async fn patch_whole(
        &self,
        location: &str,
        body: &BlobBody,
        size: u64,
    ) -> Result<String, Failure> {
        let (answer, next) = self.patch(location, body.request_body(size)).await?;
        if !rules::range_holds(answer.header("range"), size) {
            return Err(Failure {
                status: Some(answer.status.as_u16()),
                // The session holds other bytes than ours: start again.
                code: Some("BLOB_UPLOAD_INVALID".into()),
                ..Failure::local(format!(
                    "the registry kept bytes {} of the {size} sent",
                    answer.header("range").unwrap_or_default()
                ))
            });
        }
        Ok(next)
    }

    /// Sends a whole blob as one `PATCH` whose body streams from `chunks` as they come
    /// (chunked transfer, as `docker push` sends a layer), and returns the next upload
    /// location. One attempt: the body cannot be sent again.
    pub async fn patch_streamed(
        &self,
        location: &str,
        chunks: tokio::sync::mpsc::Receiver<Bytes>,
    ) -> Result<String, Failure> {
        let (_, next) = self
            .patch(location, RequestBody::streamed(chunks, None))
            .await?;
        Ok(next)
    }

    /// The session's one `PATCH`: its answer, taken ([`rules::PATCH_TAKEN`]), and where
    /// the upload goes on (the same place if unsaid).
    async fn patch(&self, location: &str, body: RequestBody) -> Result<(Answer, String), Failure> {
        let answer = self
            .send_body(
                Method::PATCH,
                location,
                &[("content-type", "application/octet-stream".into())],
                body,
                ANSWER_LIMIT,
                None,
            )
            .await?;
        if !answer.is(&rules::PATCH_TAKEN) {
            return Err(Failure::from_answer(&answer));
        }
        let next = answer
            .header("location")
            .map_or_else(|| location.to_string(), |l| self.absolute(l));
        Ok((answer, next))
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
        if answer.is(&rules::UPLOAD_COMPLETED) {
            Ok(())
        } else {
            Err(Failure::from_answer(&answer))
        }
    }
}
