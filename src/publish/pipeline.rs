//! The publish phase: the built images go to the registry as one image manifest under
//! every tag (one platform), or as one image manifest per platform, by digest and
//! untagged, and one index under every tag (several; or, for a leg of a shared build,
//! once every leg has recorded its platforms: [`super::legs`]). One platform's pusher is
//! the [`Route`] chosen for its engine; several platforms are always pushed directly (the
//! daemon's pusher cannot push by digest, and the classic store cannot hold an index).

use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;

use super::index::{Child, Index};
use super::legs::{LegOutcome, Records, SharedBuild};
use super::route::{self, PushRun, Route};
use super::targets::{Fanout, TargetPush};
use super::{upload_image, BlobStats, DirectOptions, DirectPushError};
use crate::builds::PlatformImage;
use crate::inputs::{Inputs, Platform};
use crate::progress::Progress;
use crate::registry::Registry;
use crate::repository;

/// What the publish phase pushed: the digest under every tag, and what it cost.
#[derive(Debug, Clone)]
pub struct Published {
    /// The image manifest's digest (one platform) or the index's (several); `None` for
    /// a leg of a shared build that left the index to the others.
    pub digest: Option<String>,
    /// Which pusher sent it, for the log and the job summary.
    pub engine_used: &'static str,
    /// What the direct push's blobs cost; `None` when the daemon's pusher sent them.
    pub blobs: Option<BlobStats>,
    /// Several platforms: each platform's image manifest, in index order.
    pub children: Vec<PublishedChild>,
    /// A leg of a shared build: what became of the index.
    pub leg: Option<Leg>,
    /// The direct push: what became of it at each registry, the primary first.
    pub targets: Vec<TargetPush>,
}

/// One platform's image manifest, pushed by digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishedChild {
    pub platform: Platform,
    pub digest: String,
    /// Its layers' and config's compressed size, when this run pushed them.
    pub compressed_bytes: Option<u64>,
    /// For a shared build: the progress of the leg that built it, when not this one.
    pub built_by: Option<String>,
}

/// A leg's part in a shared build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leg {
    /// This leg put the index under every tag.
    pub assembled: bool,
    /// Platforms no leg had recorded yet, left to the legs that build them.
    pub missing: Vec<Platform>,
    /// The build's ID, as in its record tags.
    pub build_id: String,
    /// Records removed once the index was put.
    pub records_removed: usize,
}

/// Pushes `images` under every tag of `inputs`: the one image along its engine's route,
/// or several as an index, or a leg's share of a shared build.
pub async fn publish(
    run: &PushRun<'_>,
    inputs: &Inputs,
    images: &[PlatformImage],
    repository_ref: &str,
    progress: &dyn Progress,
) -> anyhow::Result<Published> {
    match (images, run.shared) {
        (_, Some(build)) => Box::pin(leg(run, inputs, images, build, progress)).await,
        ([one], None) => {
            let route = Route::choose(inputs, &one.engine, run.network);
            let pushed = route::push(
                route,
                run,
                &one.engine,
                inputs,
                &one.built.image_id,
                repository_ref,
                progress,
            )
            .await?;
            Ok(Published {
                digest: Some(pushed.digest),
                engine_used: pushed.engine_used,
                blobs: pushed.blobs,
                children: Vec::new(),
                leg: None,
                targets: pushed.targets,
            })
        }
        (many, None) => Box::pin(index_of(run, inputs, many, repository_ref, progress)).await,
    }
}

/// Every platform's image by digest, side by side, then the index under every tag
/// (the tags that already hold it where they are immutable are left alone).
async fn index_of(
    run: &PushRun<'_>,
    inputs: &Inputs,
    images: &[PlatformImage],
    repository_ref: &str,
    progress: &dyn Progress,
) -> anyhow::Result<Published> {
    let started = Instant::now();
    let _group = progress.group(&format!(
        "Push {repository_ref} ({} platforms, direct)",
        images.len()
    ));
    let (fanout, destinations) = run.fanout(inputs)?;
    let (children, blobs, per_target) =
        push_by_digest(&fanout, run, inputs, images, progress).await?;
    let index = Index::of(&children.iter().map(|(c, _)| c.clone()).collect::<Vec<_>>());
    let mut primary_error = None;
    let mut targets = Vec::with_capacity(fanout.len());
    for (at, destination) in destinations.iter().enumerate() {
        if fanout.failure(at).is_none() {
            let prefix = fanout.prefix(at);
            let line = |line: &str| progress.line(&format!("{prefix}{line}"));
            let reg = fanout.reg(at);
            if let Err(err) = put_index(reg, &destination.present, inputs, &index, line).await {
                fanout.fail(at, format!("{err:#}"));
                if at == 0 {
                    primary_error = Some(err);
                }
            }
        }
        let stats = per_target.get(at).copied().unwrap_or_default();
        targets.push(fanout.outcome(at, &index.manifest.digest, stats));
    }
    if let Some(err) = primary_error.filter(|_| fanout.len() == 1) {
        return Err(err);
    }
    fanout.check_primary(&targets, None)?;
    let put = index.manifest.digest.clone();
    tracing::info!(
        "pushed {} tag(s) at index {put} ({}, {} platforms) in {:.1}s (direct)",
        inputs.tags.len(),
        index.kind.media_type(),
        children.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(Published {
        digest: Some(put),
        engine_used: "direct",
        blobs: Some(blobs),
        children: children
            .into_iter()
            .map(|(child, compressed)| PublishedChild {
                platform: child.platform,
                digest: child.digest,
                compressed_bytes: Some(compressed),
                built_by: None,
            })
            .collect(),
        leg: None,
        targets,
    })
}

/// A leg of a shared build: its share by digest, its records, and the index when the
/// records show every platform.
async fn leg(
    run: &PushRun<'_>,
    inputs: &Inputs,
    images: &[PlatformImage],
    build: &SharedBuild,
    progress: &dyn Progress,
) -> anyhow::Result<Published> {
    let started = Instant::now();
    let group = progress.group(&format!(
        "Push {} of {} (this leg's share, direct)",
        describe(&build.share),
        describe(&build.platforms)
    ));
    // Legs push to the primary registry only (`also-push-to` is refused with
    // `build-platforms`).
    let (fanout, _) = run.fanout(inputs)?;
    let reg = Arc::clone(fanout.lead());
    let (own, blobs, _) = push_by_digest(&fanout, run, inputs, images, progress).await?;
    let store = Records {
        reg: &reg,
        ecr: run.ecr,
        repository: &inputs.repository,
        registry_id: inputs.registry_id.as_deref(),
        build,
    };
    let children: Vec<Child> = own.iter().map(|(c, _)| c.clone()).collect();
    let outcome = store
        .record_and_gather(&children, &mut |line| progress.line(line))
        .await?;
    let compressed = |digest: &str| {
        own.iter()
            .find(|(c, _)| c.digest == digest)
            .map(|(_, bytes)| *bytes)
    };
    let mut leg = Leg {
        assembled: false,
        missing: Vec::new(),
        build_id: build.id.clone(),
        records_removed: 0,
    };
    let (digest, children) = match outcome {
        LegOutcome::Waiting { missing } => {
            leg.missing = missing;
            let children = own
                .iter()
                .map(|(child, bytes)| PublishedChild {
                    platform: child.platform.clone(),
                    digest: child.digest.clone(),
                    compressed_bytes: Some(*bytes),
                    built_by: None,
                })
                .collect();
            (None, children)
        }
        LegOutcome::Assembled {
            index,
            records,
            written,
        } => {
            let line = |line: &str| progress.line(line);
            let put = put_index(&reg, run.present, inputs, &index, line).await?;
            leg.assembled = true;
            match store.remove_all(&written).await {
                Ok(removed) => leg.records_removed = removed,
                Err(err) => progress.warning(&format!(
                    "the index is in place, but the legs' records (tags `ebp-leg-{}-*`) \
                     could not be removed: {err:#}; delete them by hand",
                    build.id
                )),
            }
            let children = records
                .into_iter()
                .map(|record| PublishedChild {
                    compressed_bytes: compressed(&record.child.digest),
                    built_by: (!build.share.contains(&record.child.platform))
                        .then_some(record.runner),
                    platform: record.child.platform,
                    digest: record.child.digest,
                })
                .collect();
            (Some(put), children)
        }
    };
    drop(group);
    if let Some(digest) = &digest {
        tracing::info!(
            "this leg completed the set: index {digest} of {} under {} tag(s) in {:.1}s",
            describe(&build.platforms),
            inputs.tags.len(),
            started.elapsed().as_secs_f64()
        );
    } else {
        tracing::info!(
            "pushed {} by digest; {} not recorded yet: leaving the index to the legs that \
             build {}",
            describe(&build.share),
            describe(&leg.missing),
            if leg.missing.len() == 1 { "it" } else { "them" }
        );
    }
    Ok(Published {
        digest,
        engine_used: "direct",
        blobs: Some(blobs),
        children,
        leg: Some(leg),
        targets: Vec::new(),
    })
}

fn describe(platforms: &[Platform]) -> String {
    platforms
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// Each image's blobs and manifest, by digest and untagged (the index names them), side
/// by side, in every registry of `fanout`; with each one's compressed size, what the
/// blobs cost at the primary, and at each registry.
async fn push_by_digest(
    fanout: &Fanout,
    run: &PushRun<'_>,
    inputs: &Inputs,
    images: &[PlatformImage],
    progress: &dyn Progress,
) -> anyhow::Result<(Vec<(Child, u64)>, BlobStats, Vec<BlobStats>)> {
    let cores = std::thread::available_parallelism().map_or(2, std::num::NonZero::get);
    let options = DirectOptions {
        reuse_from: run.reuse_from.clone(),
        // The platforms compress side by side: share the cores.
        threads: (cores / images.len()).max(1),
        compression: inputs.compression,
        spool_dir: run.spool_dir.clone(),
        network: run.network.clone(),
        mounting: run.mounting,
        // One proof per blob for all the platforms, which often share layers.
        proofs: super::verify::Proofs::default(),
    };
    let pushes = images.iter().map(|image| {
        let options = &options;
        async move {
            let platform = image
                .platform
                .clone()
                .context("an index entry needs its platform")?;
            let mut on_line = |line: &str| progress.line(&format!("[{platform}] {line}"));
            let uploaded = upload_image(
                &image.engine,
                &image.built.image_id,
                fanout,
                options,
                &mut on_line,
            )
            .await
            .with_context(|| format!("pushing the {platform} image failed"))?;
            for at in fanout.live() {
                let put = super::manifest::put(
                    fanout.reg(at),
                    std::slice::from_ref(&uploaded.manifest.digest),
                    &uploaded.manifest,
                    &mut on_line,
                )
                .await;
                match put {
                    Ok(()) => {}
                    Err(err) if fanout.len() > 1 => {
                        if !fanout.fail(at, crate::error_chain(&err)) {
                            return Err(anyhow::Error::new(err)
                                .context(format!("pushing the {platform} manifest failed")));
                        }
                    }
                    Err(err) => {
                        return Err(anyhow::Error::new(err)
                            .context(format!("pushing the {platform} manifest failed")))
                    }
                }
            }
            Ok::<_, anyhow::Error>((Child::of(platform, &uploaded.manifest), uploaded))
        }
    });
    let images_pushed = futures_util::future::try_join_all(pushes).await?;
    let mut blobs = BlobStats::default();
    let mut per_target = vec![BlobStats::default(); fanout.len()];
    for (_, uploaded) in &images_pushed {
        blobs += uploaded.stats;
        for (sum, stats) in per_target.iter_mut().zip(&uploaded.per_target) {
            *sum += *stats;
        }
    }
    Ok((
        images_pushed
            .into_iter()
            .map(|(child, uploaded)| (child, uploaded.stats.compressed_bytes))
            .collect(),
        blobs,
        per_target,
    ))
}

/// Puts `index` under every tag but those that already hold it where they are
/// immutable. A tag the registry refuses (`TAG_INVALID`: immutable) that holds this
/// very index by now is success: another leg of a shared build put the same bytes, and
/// may still be putting the other tags, so each is then put, or found, on its own.
async fn put_index(
    reg: &Registry,
    present: &[repository::PresentTag],
    inputs: &Inputs,
    index: &Index,
    line: impl Fn(&str),
) -> anyhow::Result<String> {
    let digest = index.manifest.digest.clone();
    let keep = repository::check_present(present, &digest)?;
    let tags = repository::without(&inputs.tags, &keep);
    match index.clone().put(reg, &tags, &line).await {
        Ok(put) => return Ok(put.digest),
        Err(err) if is_tag_invalid(&err) => {}
        Err(err) => return Err(err.into()),
    }
    for tag in &tags {
        if holds(reg, tag, &digest).await {
            continue;
        }
        match index
            .clone()
            .put(reg, std::slice::from_ref(tag), &line)
            .await
        {
            Ok(_) => {}
            Err(err) if is_tag_invalid(&err) && holds(reg, tag, &digest).await => {}
            Err(err) => return Err(err.into()),
        }
    }
    tracing::info!("every tag holds index {digest} (another leg put some of them)");
    Ok(digest)
}

fn is_tag_invalid(err: &DirectPushError) -> bool {
    matches!(err, DirectPushError::Registry { code: Some(code), .. } if code == "TAG_INVALID")
}

/// Whether `tag` serves the manifest `digest` now.
async fn holds(reg: &Registry, tag: &str, digest: &str) -> bool {
    matches!(
        reg.get_manifest(&reg.repository, tag).await,
        Ok((_, body)) if super::export::sha256_digest(&body) == digest
    )
}
