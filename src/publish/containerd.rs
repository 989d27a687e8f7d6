//! The containerd image store's image: its export (`GET /images/{name}/get`) is an OCI
//! layout holding the stored blobs (compressed as they were pulled or built) and the
//! stored manifest, named by their digests, with `index.json` (written after the blobs)
//! naming the image. Nothing is recompressed and no manifest is built: each blob is
//! spooled as it is (its digest checked against its name) and uploaded at once,
//! concurrently; the platform's image manifest is then put byte for byte with its own
//! media type, so the pushed digest is the engine's manifest digest (the image ID when
//! the image is that manifest).
//!
//! An image whose target is an index (attestations, several platforms) pushes only the
//! image manifest of the built platform: never the index, never an attestation manifest.
//! Layers stored uncompressed (a base `docker load`ed from an OCI layout of uncompressed
//! layers; `docker import` and a classic-format load compress them) are pushed as they are: compressing them would make a manifest of ours that names no image the
//! engine has (the `image-digest` output would no longer pull as the built image), and
//! `docker push` on this store sends them uncompressed as well. Such layers are listed in
//! the log; a pulled base (as on a runner) is compressed already.

use std::collections::{HashMap, HashSet};
use std::io::{self, Read as _, Write as _};
use std::time::Instant;

use bytes::Bytes;
use serde::Deserialize;

use super::descriptor::{self, Descriptor};
use super::export::{self, sha256_digest, Content, Feeder, HashingWriter};
use super::manifest::PushedManifest;
use super::stream::{LayerEvent, PartSink};
use super::targets::Fanout;
use super::upload::{Blob, Uploads};
use super::{mb, short, DirectOptions, DirectPushError, UploadedImage};
use crate::platform::Platform;
use crate::registry::{Registry, MANIFEST_LIST_V2, MANIFEST_V2, OCI_INDEX, OCI_MANIFEST};

/// Layer media types that are not compressed.
const UNCOMPRESSED_LAYERS: [&str; 2] = [
    "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.docker.image.rootfs.diff.tar",
];

/// Uploads the blobs of `image_id` (a manifest or index digest) as stored and returns its
/// platform's image manifest, not yet put.
pub(super) async fn upload(
    docker: &bollard::Docker,
    image_id: &str,
    fanout: &Fanout,
    options: &DirectOptions,
    on_line: &mut dyn FnMut(&str),
) -> Result<UploadedImage, DirectPushError> {
    let started = Instant::now();
    let reg = fanout.lead();
    let image_error = |message: String| DirectPushError::image(image_id, reg, message);
    let export_error = |message: String| DirectPushError::export(image_id, reg, message);
    if let Some(image) = rerun(reg, image_id, on_line).await {
        // Every other registry of the push must have it too, or it is pushed to them.
        if fanout.len() == 1 || fanout.others_have_manifest(image_id).await {
            return Ok(image.fanned_out(fanout.len()));
        }
    }
    let local = super::local_image(docker, image_id).await;
    let mut uploads = Uploads::new(fanout);
    let (diff_ids, platform) = local.unwrap_or_default();
    let proof = super::reuse::Proof::Digest;
    let reused = super::reusable_layers(
        fanout,
        &mut uploads,
        &diff_ids,
        platform.as_ref(),
        options,
        proof,
    )
    .await;
    let pass: HashSet<String> = reused.values().map(|(b, _)| b.digest.clone()).collect();

    let (feeder, bytes) = Feeder::start(
        docker,
        image_id,
        started,
        options.network.stall_timeout,
        export::ExportStart::AtOnce,
    );
    let (blob_tx, blob_rx) = tokio::sync::mpsc::channel::<Stored>(4);
    let reader = {
        let dir = options.spool_dir.clone();
        tokio::task::spawn_blocking(move || read_layout(bytes, &dir, &pass, &blob_tx))
    };
    let rest = uploads
        .drive(
            blob_rx,
            reader,
            &feeder,
            export_error,
            on_line,
            |uploads, blob: Stored, _| {
                uploads.stream(&format!("blob {}", short(&blob.digest)), blob.parts);
            },
        )
        .await?;
    drop(feeder);
    record_used(&mut uploads, &diff_ids, reused, &rest.passed, on_line);

    let manifest = image_manifest(&rest, image_id, platform.as_ref()).map_err(image_error)?;
    let parsed: Manifest = serde_json::from_slice(&manifest.bytes)
        .map_err(|e| image_error(format!("the manifest {} is invalid: {e}", manifest.digest)))?;
    let descriptors: Vec<&Descriptor> = parsed.layers.iter().chain([&parsed.config]).collect();
    for descriptor in &descriptors {
        if uploads.has(&descriptor.digest) {
            continue;
        }
        if let Some(bytes) = rest.files.get(&blob_path(&descriptor.digest)) {
            uploads.start(&Blob {
                digest: descriptor.digest.clone(),
                size: bytes.len() as u64,
                content: Content::Memory(Bytes::from(bytes.clone())),
            });
        } else if fanout.lead_has_blob(&descriptor.digest).await {
            // Not exported (a layer the store never pulled): the primary has it, and the
            // other registries get it from there.
            let blob = [(descriptor.digest.as_str(), descriptor.size)];
            super::copy::to_the_others(fanout, &mut uploads, blob, &options.spool_dir, "blob")
                .await;
            uploads.record_present(&descriptor.digest);
        } else {
            return Err(image_error(format!(
                "the export lacks blob {} of manifest {}, and {} does not have it",
                descriptor.digest,
                manifest.digest,
                fanout.label(0)
            )));
        }
    }
    log_uncompressed(&parsed.layers, on_line);
    uploads.finish(on_line).await?;
    if manifest.digest != image_id {
        on_line(&format!(
            "{}: the image manifest of {} in image index {}",
            short(&manifest.digest),
            descriptor::describe(platform.as_ref()),
            short(image_id)
        ));
    }
    let blobs: Vec<(String, u64)> = descriptors
        .iter()
        .map(|d| (d.digest.clone(), d.size))
        .collect();
    Ok(UploadedImage::new(
        manifest,
        &blobs,
        &uploads.done,
        rest.passed.len(),
    ))
}

/// A rerun: the repository has the image manifest `image_id` already, so it has every
/// blob it lists (a registry accepts a manifest only then), and nothing is exported.
pub(super) async fn rerun(
    reg: &Registry,
    image_id: &str,
    on_line: &mut dyn FnMut(&str),
) -> Option<UploadedImage> {
    let (media_type, bytes) = reg
        .with_retry("checking the image manifest", || {
            reg.get_manifest(&reg.repository, image_id)
        })
        .await
        .ok()?;
    let image = stored_image(&media_type, bytes, image_id)?;
    on_line(&format!(
        "{}: Manifest already exists (so does every blob it lists)",
        short(image_id)
    ));
    Some(image)
}

/// The image manifest `digest` that the daemon's pusher reported pushing, read back. ECR
/// is eventually consistent (docker/github-builder#30), so a manifest not found yet is
/// asked for again, with backoff, for a while ([`Registry::get_pushed_manifest`]); any other failure
/// is named as it is.
pub(super) async fn pushed_by_the_daemon(
    reg: &Registry,
    digest: &str,
    on_line: &mut dyn FnMut(&str),
) -> Result<UploadedImage, DirectPushError> {
    let (media_type, bytes) = reg.get_pushed_manifest(digest).await.map_err(|failure| {
        DirectPushError::registry(
            reg,
            "reading back",
            format!("manifest {digest}, which the daemon reported pushing,"),
            failure,
        )
    })?;
    let image = stored_image(&media_type, bytes, digest).ok_or_else(|| {
        DirectPushError::image(
            digest,
            reg,
            format!(
                "the repository serves it as `{media_type}`, not as the image manifest the \
                 daemon reported pushing"
            ),
        )
    })?;
    on_line(&format!("{}: pushed by the daemon", short(digest)));
    Ok(image)
}

/// The image manifest `bytes` (of `media_type`) as already pushed with all its blobs;
/// `None` unless it is an image manifest whose digest is `digest`.
fn stored_image(media_type: &str, bytes: Bytes, digest: &str) -> Option<UploadedImage> {
    if ![MANIFEST_V2, OCI_MANIFEST].contains(&media_type) || sha256_digest(&bytes) != digest {
        return None;
    }
    let parsed: Manifest = serde_json::from_slice(&bytes).ok()?;
    let blobs: Vec<(String, u64)> = parsed
        .layers
        .iter()
        .chain([&parsed.config])
        .map(|d| (d.digest.clone(), d.size))
        .collect();
    let done = blobs
        .iter()
        .map(|(digest, _)| {
            let skipped = super::upload::BlobOutcome {
                skipped: true,
                ..Default::default()
            };
            (digest.clone(), skipped)
        })
        .collect();
    let layers: HashSet<&String> = parsed.layers.iter().map(|d| &d.digest).collect();
    Some(UploadedImage::new(
        PushedManifest::new(media_type, bytes),
        &blobs,
        &[done],
        layers.len(),
    ))
}

/// Records the known blobs that the export held under the same digest, so passed over:
/// those are the engine's own blobs. Another image's blob for one of our `diff_ids` is
/// other bytes (another compression, or not that layer at all), which the engine's
/// manifest does not name: it stands in for nothing, and the log says so.
fn record_used(
    uploads: &mut Uploads,
    diff_ids: &[String],
    reused: HashMap<String, (super::reuse::KnownBlob, super::reuse::Reused)>,
    passed: &HashSet<String>,
    on_line: &mut dyn FnMut(&str),
) {
    let (used, unused): (HashMap<_, _>, HashMap<_, _>) = reused
        .into_iter()
        .partition(|(_, (blob, _))| passed.contains(&blob.digest));
    for (diff_id, (blob, _)) in &unused {
        on_line(&format!(
            "{}: listed by {} for layer {}, but the engine stores that layer as another \
             blob: not used",
            short(&blob.digest),
            blob.image,
            short(diff_id)
        ));
    }
    uploads.record_reused(diff_ids, &used, on_line);
}

/// Names the layers stored uncompressed, once: they are pushed as they are.
fn log_uncompressed(layers: &[Descriptor], on_line: &mut dyn FnMut(&str)) {
    let raw: Vec<&Descriptor> = layers
        .iter()
        .filter(|d| UNCOMPRESSED_LAYERS.contains(&d.media_type.as_str()))
        .collect();
    if raw.is_empty() {
        return;
    }
    let total = raw.iter().map(|d| d.size).sum();
    let names: Vec<&str> = raw.iter().map(|d| short(&d.digest)).collect();
    on_line(&format!(
        "{} layer(s) stored uncompressed by the engine ({}, {}): pushed as stored, so the \
         manifest stays the engine's (pull the base from a registry to store it compressed)",
        raw.len(),
        names.join(", "),
        mb(total)
    ));
}

/// The platform's image manifest of the export: the `index.json` entry that is the image
/// (by digest, or the only one), or, when that is an index, its entry for `platform`
/// that is not an attestation. Its bytes are checked against its digest.
fn image_manifest(
    rest: &Layout,
    image_id: &str,
    platform: Option<&Platform>,
) -> Result<PushedManifest, String> {
    let index = rest
        .files
        .get("index.json")
        .ok_or("the export has no index.json: it is not an OCI layout")?;
    let index: Index =
        serde_json::from_slice(index).map_err(|e| format!("the export's index.json: {e}"))?;
    let mut entry = match index.manifests.iter().find(|d| d.digest == image_id) {
        Some(entry) => entry.clone(),
        None if index.manifests.len() == 1 => index.manifests[0].clone(),
        None => {
            return Err(format!(
                "the export's index.json lists {} images and none is {image_id}",
                index.manifests.len()
            ))
        }
    };
    for _ in 0..2 {
        let bytes = blob(rest, &entry.digest)?;
        if entry.media_type == MANIFEST_V2 || entry.media_type == OCI_MANIFEST {
            return Ok(PushedManifest::new(entry.media_type, bytes));
        }
        if entry.media_type != OCI_INDEX && entry.media_type != MANIFEST_LIST_V2 {
            return Err(format!(
                "{} is a {}, not an image manifest or index",
                entry.digest, entry.media_type
            ));
        }
        let index: Index = serde_json::from_slice(&bytes)
            .map_err(|e| format!("the image index {} is invalid: {e}", entry.digest))?;
        entry = descriptor::pick_image(&index.manifests, platform)
            .ok_or_else(|| {
                format!(
                    "the image index {} has no image manifest for {} in the export",
                    entry.digest,
                    descriptor::describe(platform)
                )
            })?
            .clone();
    }
    Err(format!(
        "{image_id}: an index inside an index inside an index"
    ))
}

fn blob_path(digest: &str) -> String {
    format!("blobs/{}", digest.replacen(':', "/", 1))
}

/// A small blob of the export, checked against its digest.
fn blob(rest: &Layout, digest: &str) -> Result<Bytes, String> {
    let bytes = rest
        .files
        .get(&blob_path(digest))
        .ok_or_else(|| format!("the export lacks {digest}"))?;
    if sha256_digest(bytes) != digest {
        return Err(format!("the export's blob {digest} has other content"));
    }
    Ok(Bytes::from(bytes.clone()))
}

/// A stored blob on its way to the registry: its parts come on `parts` as the export
/// streams ([`super::stream`]).
struct Stored {
    digest: String,
    parts: tokio::sync::mpsc::Receiver<LayerEvent>,
}

/// What is left once the layout has been read.
#[derive(Debug, Default)]
struct Layout {
    /// Small JSON files (index.json, manifests, configs, attestations), by path.
    files: HashMap<String, Vec<u8>>,
    /// Blobs streamed past unspooled, as the registry holds them already.
    passed: HashSet<String>,
}

/// Reads the OCI layout tar: JSON files stay in memory, every other blob streams to the
/// uploader as it is read (`blobs`), except those in `pass`, only hashed. Each blob's
/// content must match the digest it is named by, or the upload is never completed.
fn read_layout(
    reader: impl io::Read,
    spool_dir: &std::path::Path,
    pass: &HashSet<String>,
    blobs: &tokio::sync::mpsc::Sender<Stored>,
) -> io::Result<Layout> {
    let mut rest = Layout::default();
    let mut archive = tar::Archive::new(reader);
    for entry in archive.entries()? {
        let mut entry = entry?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let path = export::normalize(&entry.path()?.to_string_lossy());
        let size = entry.size();
        let digest = path
            .strip_prefix("blobs/sha256/")
            .map(|hex| format!("sha256:{hex}"));
        let mut head = vec![0u8; usize::try_from(size.min(1)).unwrap_or(1)];
        entry.read_exact(&mut head)?;
        let json = size <= export::JSON_LIMIT
            && (matches!(head.first(), Some(b'{' | b'[')) || export::is_metadata(&path));
        let Some(digest) = digest.filter(|_| !json) else {
            let mut data = head;
            entry.read_to_end(&mut data)?;
            rest.files.insert(path, data);
            continue;
        };
        let check = |found: String| {
            if found == digest {
                Ok(())
            } else {
                Err(io::Error::other(format!(
                    "the export's blob {digest} has content {found}"
                )))
            }
        };
        if pass.contains(&digest) {
            let mut sha = HashingWriter::new(io::sink());
            sha.write_all(&head)?;
            io::copy(&mut entry, &mut sha)?;
            check(sha.finish().1)?;
            rest.passed.insert(digest);
            continue;
        }
        let (parts_tx, parts) = tokio::sync::mpsc::channel(super::stream::STREAM_QUEUE);
        blobs
            .blocking_send(Stored {
                digest: digest.clone(),
                parts,
            })
            .map_err(export::abandoned)?;
        let mut sink = PartSink::new(parts_tx, spool_dir);
        let parts_tx = sink.sender();
        sink.write_all(&head)?;
        io::copy(&mut entry, &mut sink)?;
        let end = sink.finish();
        // A blob whose content is not its name is never completed: its stream just ends.
        check(end.digest.clone())?;
        parts_tx
            .blocking_send(LayerEvent::End(end))
            .map_err(export::abandoned)?;
    }
    Ok(rest)
}

#[derive(Debug, Deserialize)]
struct Index {
    #[serde(default)]
    manifests: Vec<Descriptor>,
}

#[derive(Debug, Deserialize)]
struct Manifest {
    config: Descriptor,
    #[serde(default)]
    layers: Vec<Descriptor>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An OCI layout tar: `(path, content)` entries in that order.
    fn layout_tar(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut tar = tar::Builder::new(Vec::new());
        for (path, data) in entries {
            let mut header = tar::Header::new_gnu();
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            header.set_cksum();
            tar.append_data(&mut header, path, *data).unwrap();
        }
        tar.into_inner().unwrap()
    }

    /// The layout is read as the engine writes it (blobs first, sorted, then index.json):
    /// a layer is spooled whole and handed over at once, a known layer only hashed past,
    /// JSON kept; the platform's manifest is found through the index and is its bytes.
    #[test]
    fn a_layout_gives_its_layers_at_once_and_the_manifest_as_stored() {
        let layer: &[u8] = b"\x1f\x8b not json, a compressed layer";
        let known: &[u8] = b"\x1f\x8b a layer the registry has";
        let config: &[u8] = br#"{"rootfs": {"diff_ids": []}}"#;
        let (layer_digest, known_digest) = (sha256_digest(layer), sha256_digest(known));
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": sha256_digest(config), "size": config.len()},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                        "digest": layer_digest, "size": layer.len()}],
        }))
        .unwrap();
        let manifest_digest = sha256_digest(&manifest);
        let index = serde_json::to_vec(&serde_json::json!({"manifests": [
            {"mediaType": OCI_MANIFEST, "digest": manifest_digest, "size": manifest.len()}
        ]}))
        .unwrap();
        let path = |d: &str| blob_path(d);
        let mut entries = vec![
            (path(&layer_digest), layer.to_vec()),
            (path(&known_digest), known.to_vec()),
            (path(&sha256_digest(config)), config.to_vec()),
            (path(&manifest_digest), manifest.clone()),
        ];
        entries.sort();
        entries.push(("index.json".into(), index));
        let refs: Vec<(&str, &[u8])> = entries
            .iter()
            .map(|(p, d)| (p.as_str(), d.as_slice()))
            .collect();
        let tar = layout_tar(&refs);

        let (tx, mut rx) = tokio::sync::mpsc::channel(8);
        let pass: HashSet<String> = [known_digest.clone()].into();
        let dir = tempfile::tempdir().unwrap();
        let rest = read_layout(&tar[..], dir.path(), &pass, &tx).unwrap();
        drop(tx);
        let mut stored = rx.blocking_recv().expect("the layer");
        assert_eq!(stored.digest, layer_digest);
        let Some(LayerEvent::End(end)) = stored.parts.blocking_recv() else {
            panic!("a small blob comes whole")
        };
        assert_eq!(
            (end.digest.as_str(), end.size, &end.tail[..]),
            (layer_digest.as_str(), layer.len() as u64, layer)
        );
        assert!(rx.blocking_recv().is_none(), "only the one layer is sent");
        assert_eq!(rest.passed, pass);
        let found = image_manifest(&rest, &manifest_digest, None).unwrap();
        assert_eq!(found.bytes, manifest);
        assert_eq!(found.media_type, OCI_MANIFEST);
        assert_eq!(found.digest, manifest_digest);
    }

    /// A blob whose content is not the digest it is named by fails the read, naming it.
    #[test]
    fn a_blob_that_is_not_its_digest_is_refused() {
        let name = format!("sha256:{}", "0".repeat(64));
        let tar = layout_tar(&[(blob_path(&name).as_str(), b"\x1f\x8b other")]);
        let (tx, _rx) = tokio::sync::mpsc::channel(8);
        let dir = tempfile::tempdir().unwrap();
        let err = read_layout(&tar[..], dir.path(), &HashSet::new(), &tx).unwrap_err();
        assert!(err.to_string().contains(&name), "{err}");
    }
}
