//! One blob's upload: `HEAD` first (the repository may have it), then a session of parts
//! in the sizes ECR accepts, completed with the digest. A part is retried by the
//! registry's policy; a session the registry lost is started again, bounded.

use std::io;

use super::registry::{Failure, Registry};
use super::{short, Blob, BlobOutcome, DirectPushError, PART_SIZE};

/// Registry answers that mean the upload session is gone (or ahead of us), so the upload
/// starts again rather than retrying the part.
fn session_lost(failure: &Failure) -> bool {
    matches!(failure.status, Some(404 | 416))
        || matches!(
            failure.code.as_deref(),
            Some("BLOB_UPLOAD_UNKNOWN" | "BLOB_UPLOAD_INVALID")
        )
}

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
    let mut session = 1;
    loop {
        let mut location = reg
            .with_retry(&format!("starting the upload of {what}"), || {
                reg.start_upload()
            })
            .await
            .map_err(|f| fail("starting the upload of", f))?;
        let mut offset = 0u64;
        let mut lost = None;
        while offset < blob.size {
            let len =
                usize::try_from((blob.size - offset).min(PART_SIZE as u64)).unwrap_or(PART_SIZE);
            let content = blob.content.clone();
            let part = tokio::task::spawn_blocking(move || content.read_part(offset, len))
                .await
                .map_err(|e| io::Error::other(e.to_string()))
                .and_then(|r| r)
                .map_err(|e| DirectPushError::Image {
                    image: blob.digest.clone(),
                    registry: reg.host.clone(),
                    message: format!("cannot read the spooled layer: {e}"),
                })?;
            let current = location.clone();
            match reg
                .with_retry(
                    &format!(
                        "uploading {what} bytes {offset}-{}",
                        offset + len as u64 - 1
                    ),
                    || reg.patch(&current, offset, part.clone()),
                )
                .await
            {
                Ok(next) => location = next,
                Err((failure, attempts))
                    if session_lost(&failure) && session < reg.retry.attempts =>
                {
                    lost = Some((failure, attempts));
                    break;
                }
                Err(f) => return Err(fail("uploading", f)),
            }
            offset += len as u64;
        }
        if lost.is_none() {
            match reg
                .with_retry(&format!("completing the upload of {what}"), || {
                    reg.complete(&location, &blob.digest)
                })
                .await
            {
                Ok(()) => {
                    return Ok(BlobOutcome {
                        uploaded: blob.size,
                        ..BlobOutcome::default()
                    })
                }
                // A completion whose answer was lost: the blob may be there already.
                Err((failure, attempts)) if session_lost(&failure) => {
                    if matches!(reg.has_blob(&blob.digest).await, Ok(true)) {
                        return Ok(BlobOutcome {
                            uploaded: blob.size,
                            ..BlobOutcome::default()
                        });
                    }
                    if session >= reg.retry.attempts {
                        return Err(fail("completing the upload of", (failure, attempts)));
                    }
                    lost = Some((failure, attempts));
                }
                Err(f) => return Err(fail("completing the upload of", f)),
            }
        }
        if let Some((failure, _)) = lost {
            tracing::warn!(
                "the upload of {what} to {}/{} was lost ({}); starting it again (upload {session} of {})",
                reg.host,
                reg.repository,
                failure.describe(),
                reg.retry.attempts
            );
            tokio::time::sleep(reg.retry.delay(session)).await;
            session += 1;
        }
    }
}
