//! Proof that a compressed blob in the registry is a given layer, before [`super::reuse`]
//! names it in our manifest in place of compressing the local layer.
//!
//! Another image's manifest and config pair each `diff_id` with a blob, and nothing in
//! the registry checks that pairing: it checks a blob's bytes against its digest only. A
//! `cache-from` image written by a buggy tool, or edited by hand, can pair our layer's
//! `diff_id` with any blob; reused as it is, that blob would go out as our layer, under
//! our config and our tags. A puller that checks `diff_ids` would then refuse the image
//! (docker: "layers from manifest don't match image configuration", moby's
//! `distribution/pull_v2.go`; containerd: "wrong diff id calculated on extraction", its
//! `rootfs/apply.go`); one that does not would get other files. So a blob stands in for a
//! local layer only once it has been read here: streamed once, its bytes checked against
//! its digest, decompressed (gzip or zstd, as its media type says), and the decompressed
//! bytes hashed; it is this layer only when that hash is the layer's `diff_id`. Memory
//! stays bounded (a small channel, the decoder's window); the blob is never stored.
//!
//! No marker makes a mapping trustworthy without reading it. An annotation in manifests
//! we put ("these layers were hashed by this pusher") can be written by anyone who can
//! push where it is read: in a `cache-from` or base repository that is someone else's
//! say; in our own repository, a forged one would make our next run push its blobs under
//! our config, our new tags and our `image-digest` output, more than pushing to our tags
//! directly gives. The only proof is the bytes, hashed here. Within one run, each blob is
//! read at most once ([`Proofs`]), whichever platform asks first.
//!
//! What it costs, measured on the stand-in (2 shared cores; sha2, libdeflate, zstd and
//! flate2 optimised as in a release build; ECR's blob `GET` redirected to its S3 stand-in
//! over TLS), for one new layer of ¾ text and ¼ random bytes:
//!
//! | layer (compressed) | proving it: read, inflate, hash | compressing and uploading it (the whole push) | a rerun that proves it instead |
//! | --- | --- | --- | --- |
//! | 47 MB (17.6 MB) | 0.22 s | 1.9-2.0 s | 0.46 s |
//! | 208 MB (74.1 MB) | 0.70 s | 5.5-7.1 s | 0.84 s |
//!
//! Inflating is far cheaper than deflating, and the read moves the same compressed bytes
//! down that the push would move up, so every known blob is proven, whatever its size:
//! only a runner whose download from ECR were some ten times slower than its upload would
//! lose by it. A proof that fails costs its read on top of the usual compression and
//! upload of the layer.

use std::collections::HashMap;
use std::io::{self, Read};
use std::sync::{Arc, Mutex};

use sha2::{Digest as _, Sha256};

use super::compression::LayerCodec;
use super::export::{hex, ChannelReader, HashingWriter};
use super::reuse::KnownBlob;
use crate::registry::{Failure, Registry};

/// Pieces of a blob queued for the decoder.
const QUEUE: usize = 16;
/// Deflate cannot expand more than 1032:1 (zlib's technical details), so a gzip blob
/// that decompresses to more is not a gzip stream. A zstd blob past the same ratio (a
/// layer of zeroes) is left unproven: the layer is compressed here instead.
const MAX_RATIO: u64 = 1032;

/// What reading a blob showed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finding {
    /// Its bytes match its digest, and they decompress to this `diff_id`.
    Decompresses(String),
    /// It is not what it claims: why (other bytes than its digest, not a valid stream of
    /// its codec, larger than it says).
    Invalid(String),
}

/// The blobs read in this run, by digest and codec: each read once, even when several
/// platforms ask for it at the same time. Cheap to clone (shared).
#[derive(Debug, Clone, Default)]
pub struct Proofs {
    read: Arc<Mutex<HashMap<(String, LayerCodec), Reading>>>,
}

/// One blob's reading: under way, or done with its finding.
type Reading = Arc<tokio::sync::OnceCell<Finding>>;

impl Proofs {
    /// Whether `blob`, read from `repository`, is the layer `diff_id`. A mismatch is
    /// logged with the image that claimed it; a blob that could not be read (after the
    /// registry client's retries) is not proven, and not remembered.
    pub async fn proves(
        &self,
        reg: &Registry,
        repository: &str,
        blob: &KnownBlob,
        diff_id: &str,
    ) -> bool {
        let cell = {
            let mut read = self
                .read
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            Arc::clone(read.entry((blob.digest.clone(), blob.codec)).or_default())
        };
        let finding = cell
            .get_or_try_init(|| async {
                reg.with_retry(&format!("reading blob {}", blob.digest), || {
                    read_blob(reg, repository, blob)
                })
                .await
            })
            .await;
        let refused = |why: &str| {
            tracing::info!(
                "not reusing blob {} of {} for layer {diff_id}: {why}; the layer is \
                 compressed and uploaded instead",
                blob.digest,
                blob.image
            );
        };
        match finding {
            Ok(Finding::Decompresses(found)) if found == diff_id => {
                tracing::debug!(
                    "blob {} of {} decompresses to layer {diff_id}: reused",
                    blob.digest,
                    blob.image
                );
                true
            }
            Ok(Finding::Decompresses(found)) => {
                refused(&format!(
                    "its manifest pairs it with that layer, but it decompresses to {found}"
                ));
                false
            }
            Ok(Finding::Invalid(why)) => {
                refused(why);
                false
            }
            Err((failure, _)) => {
                refused(&format!("it could not be read: {}", failure.describe()));
                false
            }
        }
    }
}

/// Reads `blob` from `repository` once, decompressing and hashing it on a blocking
/// thread as it streams. A broken download is a (transient) failure; content that is not
/// what it claims is a [`Finding::Invalid`].
async fn read_blob(reg: &Registry, repository: &str, blob: &KnownBlob) -> Result<Finding, Failure> {
    let (tx, rx) = tokio::sync::mpsc::channel(QUEUE);
    let codec = blob.codec;
    let limit = blob.size.saturating_mul(MAX_RATIO).saturating_add(1 << 20);
    let hashing =
        tokio::task::spawn_blocking(move || digests(ChannelReader::new(rx), codec, limit));
    let streamed = reg
        .stream_blob(repository, &blob.digest, blob.size, &tx)
        .await;
    drop(tx);
    let decoded = hashing
        .await
        .map_err(|e| Failure::local(format!("the decoder failed: {e}")))?;
    let length = streamed?;
    if length > blob.size {
        return Ok(Finding::Invalid(format!(
            "the registry served more than the {} bytes its manifest lists",
            blob.size
        )));
    }
    let (digest, diff_id) = match decoded {
        Ok(found) => found,
        Err(e) => {
            return Ok(Finding::Invalid(format!(
                "it is not a valid {} stream: {e}",
                codec.name()
            )))
        }
    };
    if digest != blob.digest || length != blob.size {
        return Ok(Finding::Invalid(format!(
            "the registry served {length} bytes of content {digest}, not the {} bytes its \
             manifest lists",
            blob.size
        )));
    }
    Ok(Finding::Decompresses(diff_id))
}

/// The sha256 of what `reader` gives, and of its decompression by `codec` (at most
/// `limit` bytes), both as `sha256:` digests. The whole input is read, so its digest
/// covers it all.
fn digests(reader: impl Read, codec: LayerCodec, limit: u64) -> io::Result<(String, String)> {
    let mut compressed = HashingReader::new(reader);
    let mut out = HashingWriter::new(io::sink());
    let written = match codec {
        // Multi-member, as Go's gzip reader (docker's, containerd's) takes by default.
        LayerCodec::Gzip => io::copy(
            &mut flate2::read::MultiGzDecoder::new(&mut compressed).take(limit + 1),
            &mut out,
        )?,
        LayerCodec::Zstd => io::copy(
            &mut zstd::stream::read::Decoder::new(&mut compressed)?.take(limit + 1),
            &mut out,
        )?,
    };
    if written > limit {
        return Err(io::Error::other(format!(
            "it decompresses to more than {limit} bytes"
        )));
    }
    // Anything after the compressed stream would be in the blob, not in the layer.
    io::copy(&mut compressed, &mut io::sink())?;
    Ok((compressed.finish(), out.finish().1))
}

/// Hashes what is read through it.
struct HashingReader<R> {
    inner: R,
    sha: Sha256,
}

impl<R> HashingReader<R> {
    fn new(inner: R) -> Self {
        Self {
            inner,
            sha: Sha256::new(),
        }
    }

    fn finish(self) -> String {
        format!("sha256:{}", hex(&self.sha.finalize()))
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.sha.update(&buf[..n]);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;
    use crate::publish::export::sha256_digest;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(data).unwrap();
        encoder.finish().unwrap()
    }

    /// A gzip blob and a zstd blob give the digest of their bytes and of the layer they
    /// decompress to; two gzip members read as one layer, as docker reads them.
    #[test]
    fn a_blob_gives_its_digest_and_its_layers() {
        let layer = b"a layer's tar bytes".repeat(1000);
        let packed = gzip(&layer);
        let (digest, diff_id) = digests(&packed[..], LayerCodec::Gzip, 1 << 30).unwrap();
        assert_eq!(digest, sha256_digest(&packed));
        assert_eq!(diff_id, sha256_digest(&layer));

        let packed = zstd::encode_all(&layer[..], 3).unwrap();
        let (digest, diff_id) = digests(&packed[..], LayerCodec::Zstd, 1 << 30).unwrap();
        assert_eq!(digest, sha256_digest(&packed));
        assert_eq!(diff_id, sha256_digest(&layer));

        let (first, second) = layer.split_at(7000);
        let two = [gzip(first), gzip(second)].concat();
        let (_, diff_id) = digests(&two[..], LayerCodec::Gzip, 1 << 30).unwrap();
        assert_eq!(diff_id, sha256_digest(&layer));
    }

    /// Bytes that are not a stream of the codec, bytes after the stream, and a stream
    /// larger than the limit are refused, never taken for a layer.
    #[test]
    fn a_blob_that_is_not_its_codec_is_refused() {
        let layer = b"0123456789".repeat(10_000);
        let packed = gzip(&layer);
        assert!(digests(&packed[..], LayerCodec::Zstd, 1 << 30).is_err());
        assert!(digests(&b"not gzip"[..], LayerCodec::Gzip, 1 << 30).is_err());
        let trailing = [packed.clone(), b"junk".to_vec()].concat();
        assert!(digests(&trailing[..], LayerCodec::Gzip, 1 << 30).is_err());
        let err = digests(&packed[..], LayerCodec::Gzip, 1000).unwrap_err();
        assert!(err.to_string().contains("more than 1000 bytes"), "{err}");
    }
}
