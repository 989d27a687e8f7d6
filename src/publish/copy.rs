//! An image the primary registry has already, copied to another registry as it is: the
//! re-run of `on-tag-exists: skip` that finishes only the registries a failed run missed.
//! Nothing is built or compressed again, and the digest is the primary's: every blob and
//! manifest goes over byte for byte (an index's platform manifests first, by digest),
//! blobs the target has already are skipped, and the tags are put last. Within a push,
//! the blobs the primary has and the others lack (known layers, a base layer the
//! containerd store did not export) go over the same way.

use std::collections::HashMap;
use std::io::Write as _;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use serde::Deserialize;
use sha2::{Digest as _, Sha256};

use super::export::{hex, sha256_digest, spool_file, Content};
use super::targets::Fanout;
use super::upload::{upload_blob, Blob, Uploads};
use super::DirectPushError;
use crate::registry::{Failure, Registry};

/// Blobs smaller than this go through memory, larger ones through a spool file.
const IN_MEMORY: u64 = 8 << 20;

/// The parts of a manifest or index the copy needs.
#[derive(Debug, Deserialize)]
struct Listed {
    #[serde(default)]
    manifests: Vec<Descriptor>,
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Vec<Descriptor>,
}

#[derive(Debug, Deserialize)]
struct Descriptor {
    digest: String,
    size: u64,
}

/// What a copy sent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Copied {
    pub bytes_sent: u64,
    pub blobs_skipped: usize,
}

impl std::ops::AddAssign for Copied {
    fn add_assign(&mut self, other: Self) {
        self.bytes_sent += other.bytes_sent;
        self.blobs_skipped += other.blobs_skipped;
    }
}

/// The digest `tag` names in `reg`'s repository; `None` when it names nothing.
pub async fn tagged(reg: &Registry, tag: &str) -> Result<Option<String>, DirectPushError> {
    match reg
        .with_retry(&format!("reading tag {tag}"), || {
            reg.get_manifest(&reg.repository, tag)
        })
        .await
    {
        Ok((_, bytes)) => Ok(Some(sha256_digest(&bytes))),
        Err((failure, _)) if failure.status == Some(404) => Ok(None),
        Err(f) => Err(DirectPushError::registry(
            reg,
            "reading",
            format!("tag {tag}"),
            f,
        )),
    }
}

/// The manifests the index `digest` lists in `reg`'s repository; none for an image
/// manifest.
pub async fn children(reg: &Registry, digest: &str) -> Result<Vec<String>, DirectPushError> {
    let (_, bytes) = reg
        .with_retry("reading a manifest", || {
            reg.get_manifest(&reg.repository, digest)
        })
        .await
        .map_err(|f| DirectPushError::registry(reg, "reading", format!("manifest {digest}"), f))?;
    let listed: Listed = serde_json::from_slice(&bytes).map_err(|e| {
        DirectPushError::image(digest, reg, format!("it cannot be read as a manifest: {e}"))
    })?;
    Ok(listed.manifests.into_iter().map(|d| d.digest).collect())
}

/// Copies the manifest `digest` of `from` (with everything it names) to `to`, and puts
/// it under `tags` there.
pub async fn copy(
    from: &Registry,
    to: &Registry,
    digest: &str,
    tags: &[String],
    spool_dir: &Path,
) -> Result<Copied, DirectPushError> {
    let mut copied = Copied::default();
    let (media_type, bytes) = copy_manifest(from, to, digest, spool_dir, &mut copied).await?;
    for tag in tags {
        to.with_retry(&format!("putting tag {tag}"), || {
            to.put_manifest(tag, &media_type, bytes.clone())
        })
        .await
        .map_err(|f| DirectPushError::registry(to, "putting", format!("tag {tag}"), f))?;
    }
    Ok(copied)
}

/// One manifest and all it names, put by digest; its media type and bytes.
async fn copy_manifest(
    from: &Registry,
    to: &Registry,
    digest: &str,
    spool_dir: &Path,
    copied: &mut Copied,
) -> Result<(String, Bytes), DirectPushError> {
    let read = |f| DirectPushError::registry(from, "reading", format!("manifest {digest}"), f);
    let (media_type, bytes) = from
        .with_retry("reading the manifest to copy", || {
            from.get_manifest(&from.repository, digest)
        })
        .await
        .map_err(read)?;
    if sha256_digest(&bytes) != digest {
        return Err(DirectPushError::image(
            digest,
            from,
            "the registry served other bytes for it".into(),
        ));
    }
    let listed: Listed = serde_json::from_slice(&bytes).map_err(|e| {
        DirectPushError::image(
            digest,
            from,
            format!("it cannot be read as a manifest: {e}"),
        )
    })?;
    for child in &listed.manifests {
        Box::pin(copy_manifest(from, to, &child.digest, spool_dir, copied)).await?;
    }
    for blob in listed.config.iter().chain(&listed.layers) {
        copy_blob(from, to, blob, spool_dir, copied).await?;
    }
    to.with_retry("putting the copied manifest", || {
        to.put_manifest(digest, &media_type, bytes.clone())
    })
    .await
    .map_err(|f| DirectPushError::registry(to, "putting", format!("manifest {digest}"), f))?;
    Ok((media_type, bytes))
}

/// Blobs (digest, size) the primary registry has, copied as they are to each other
/// registry of the push that lacks them, so that one manifest names blobs every registry
/// holds and none is compressed again; what each copy sent is counted there
/// ([`Uploads::record_copied`]). A registry a copy fails for is dropped from the push.
/// `what` names the blobs in the log.
pub(super) async fn to_the_others<'d>(
    fanout: &Fanout,
    uploads: &mut Uploads,
    blobs: impl IntoIterator<Item = (&'d str, u64)>,
    spool_dir: &Path,
    what: &str,
) {
    let blobs: HashMap<&str, u64> = blobs.into_iter().collect();
    for index in fanout.live().into_iter().filter(|i| *i != 0) {
        let to = fanout.reg(index);
        let (mut count, mut bytes) = (0, 0);
        for (digest, size) in &blobs {
            let blob = Descriptor {
                digest: (*digest).to_string(),
                size: *size,
            };
            let mut copied = Copied::default();
            let result = copy_blob(fanout.lead(), to, &blob, spool_dir, &mut copied).await;
            if copied.bytes_sent > 0 {
                uploads.record_copied(index, digest, copied.bytes_sent);
                count += 1;
                bytes += copied.bytes_sent;
            }
            if let Err(err) = result {
                fanout.fail(
                    index,
                    format!(
                        "copying the {what} {digest} there from the primary registry \
                         failed: {}",
                        crate::error_chain(&err)
                    ),
                );
                break;
            }
        }
        if count > 0 {
            tracing::info!(
                "{}: {count} {what}(s) copied from the primary registry ({}), not \
                 compressed again",
                fanout.label(index),
                super::mb(bytes)
            );
        }
    }
}

/// One blob, unless `to` has it: read from `from` (checked against its digest) and
/// uploaded to `to`.
async fn copy_blob(
    from: &Registry,
    to: &Registry,
    blob: &Descriptor,
    spool_dir: &Path,
    copied: &mut Copied,
) -> Result<(), DirectPushError> {
    let subject = || format!("blob {}", blob.digest);
    if to
        .with_retry("checking a blob", || to.has_blob(&blob.digest))
        .await
        .map_err(|f| DirectPushError::registry(to, "checking", subject(), f))?
    {
        copied.blobs_skipped += 1;
        return Ok(());
    }
    let content = read_blob(from, blob, spool_dir)
        .await
        .map_err(|f| DirectPushError::registry(from, "reading", subject(), (f, 1)))?;
    let outcome = upload_blob(
        to,
        &Blob {
            digest: blob.digest.clone(),
            size: blob.size,
            content,
        },
    )
    .await?;
    copied.bytes_sent += outcome.uploaded;
    if outcome.skipped {
        copied.blobs_skipped += 1;
    }
    Ok(())
}

/// The blob's bytes, checked against its digest: in memory when small, else in an
/// unlinked spool file. A broken read starts again, within the retry policy.
async fn read_blob(
    from: &Registry,
    blob: &Descriptor,
    spool_dir: &Path,
) -> Result<Content, Failure> {
    if blob.size < IN_MEMORY {
        let bytes = from
            .with_retry("reading a blob to copy", || {
                from.get_blob(&from.repository, &blob.digest, blob.size)
            })
            .await
            .map_err(|(f, _)| f)?;
        check(&blob.digest, &Sha256::digest(&bytes))?;
        return Ok(Content::Memory(bytes));
    }
    let mut attempt = 1;
    loop {
        match spool_blob(from, blob, spool_dir).await {
            Ok(file) => return Ok(Content::File(Arc::new(file))),
            Err(failure) if failure.transient && attempt < from.retry.attempts => {
                tracing::warn!(
                    "reading {} to copy it failed ({}); reading it again",
                    blob.digest,
                    failure.describe()
                );
                tokio::time::sleep(from.retry.delay(attempt)).await;
                attempt += 1;
            }
            Err(failure) => return Err(failure),
        }
    }
}

/// One read of a large blob into a spool file, hashed on the way.
async fn spool_blob(
    from: &Registry,
    blob: &Descriptor,
    spool_dir: &Path,
) -> Result<std::fs::File, Failure> {
    let local = |e: std::io::Error| {
        Failure::local(format!(
            "cannot spool the blob in {}: {e}; give it room (TMPDIR names it)",
            spool_dir.display()
        ))
    };
    let file = spool_file(spool_dir).map_err(local)?;
    let mut writer = std::io::BufWriter::with_capacity(1 << 20, file.try_clone().map_err(local)?);
    let (tx, mut rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(4);
    // Ends the channel when the read ends, so the writer sees its end.
    let read = async move {
        from.stream_blob(&from.repository, &blob.digest, blob.size, &tx)
            .await
    };
    let write = async {
        let mut sha = Sha256::new();
        let mut size = 0u64;
        while let Some(Ok(chunk)) = rx.recv().await {
            sha.update(&chunk);
            size += chunk.len() as u64;
            writer.write_all(&chunk)?;
        }
        writer.flush()?;
        Ok::<_, std::io::Error>((sha, size))
    };
    let (read, written) = tokio::join!(read, write);
    read?;
    let (sha, size) = written.map_err(local)?;
    if size != blob.size {
        return Err(Failure::transport(format!(
            "blob {} came with {size} bytes of {}",
            blob.digest, blob.size
        )));
    }
    check(&blob.digest, &sha.finalize())?;
    Ok(file)
}

fn check(digest: &str, sha: &[u8]) -> Result<(), Failure> {
    let found = format!("sha256:{}", hex(sha));
    if found == digest {
        Ok(())
    } else {
        Err(Failure::local(format!(
            "the registry served {found} for blob {digest}"
        )))
    }
}
