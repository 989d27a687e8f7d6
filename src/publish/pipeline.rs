//! The publish phase: the built images go to the registry as one image manifest under
//! every tag (one platform), or as one image manifest per platform, by digest and
//! untagged, and one index under every tag (several). One platform's pusher is the
//! [`Route`] chosen for its engine; several platforms are always pushed directly (the
//! daemon's pusher cannot push by digest, and the classic store cannot hold an index).

use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;

use super::index::{self, Child};
use super::route::{self, PushRun, Route};
use super::{upload_image, BlobStats, DirectOptions};
use crate::builds::PlatformImage;
use crate::inputs::Inputs;
use crate::registry::Registry;
use crate::repository;
use crate::runner::Runner;

/// What the publish phase pushed: the digest under every tag, and what it cost.
#[derive(Debug, Clone)]
pub struct Published {
    /// The image manifest's digest (one platform) or the index's (several).
    pub digest: String,
    /// Which pusher sent it, for the log and the job summary.
    pub engine_used: &'static str,
    /// What the direct push's blobs cost; `None` when the daemon's pusher sent them.
    pub blobs: Option<BlobStats>,
    /// Several platforms: each one's image manifest digest and compressed size, in the
    /// order of the images.
    pub children: Vec<(String, u64)>,
}

/// Pushes `images` under every tag of `inputs`: the one image along its engine's route,
/// or several as an index.
pub async fn publish(
    run: &PushRun<'_>,
    inputs: &Inputs,
    images: &[PlatformImage],
    repository_ref: &str,
    runner: &Runner,
) -> anyhow::Result<Published> {
    match images {
        [one] => {
            let route = Route::choose(inputs, &one.engine, run.network);
            let pushed = route::push(
                route,
                run,
                &one.engine,
                inputs,
                &one.built.image_id,
                repository_ref,
                runner,
            )
            .await?;
            Ok(Published {
                digest: pushed.digest,
                engine_used: pushed.engine_used,
                blobs: pushed.blobs,
                children: Vec::new(),
            })
        }
        many => Box::pin(index_of(run, inputs, many, repository_ref, runner)).await,
    }
}

/// Every platform's image by digest, side by side, then the index under every tag
/// (the tags that already hold it where they are immutable are left alone).
async fn index_of(
    run: &PushRun<'_>,
    inputs: &Inputs,
    images: &[PlatformImage],
    repository_ref: &str,
    runner: &Runner,
) -> anyhow::Result<Published> {
    let started = Instant::now();
    let _group = runner.group(&format!(
        "Push {repository_ref} ({} platforms, direct)",
        images.len()
    ));
    let cores = std::thread::available_parallelism().map_or(2, std::num::NonZero::get);
    let reg = Arc::new(Registry::connect(
        &run.auth.login(),
        &inputs.repository,
        run.retry,
        run.network,
    )?);
    let options = DirectOptions {
        reuse_from: run.reuse_from.clone(),
        // The platforms compress side by side: share the cores.
        threads: (cores / images.len()).max(1),
        compression: inputs.compression,
        spool_dir: run.spool_dir.clone(),
        network: run.network.clone(),
        mounting: run.mounting,
    };
    let pushes = images.iter().map(|image| {
        let (reg, options) = (Arc::clone(&reg), &options);
        async move {
            let platform = image
                .platform
                .clone()
                .context("an index entry needs its platform")?;
            let mut on_line = |line: &str| runner.line(&format!("[{platform}] {line}"));
            // Each platform's image goes by digest, untagged: the index names it.
            let uploaded = upload_image(
                &image.engine,
                &image.built.image_id,
                &reg,
                options,
                &mut on_line,
            )
            .await
            .with_context(|| format!("pushing the {platform} image failed"))?;
            super::manifest::put(
                &reg,
                std::slice::from_ref(&uploaded.manifest.digest),
                &uploaded.manifest,
                &mut on_line,
            )
            .await
            .with_context(|| format!("pushing the {platform} manifest failed"))?;
            Ok::<_, anyhow::Error>((Child::of(platform, &uploaded.manifest), uploaded.stats))
        }
    });
    let images_pushed = futures_util::future::try_join_all(pushes).await?;
    let mut blobs = BlobStats::default();
    for (_, stats) in &images_pushed {
        blobs += *stats;
    }
    let children_rows = images_pushed
        .iter()
        .map(|(child, stats)| (child.digest.clone(), stats.compressed_bytes))
        .collect();
    let children: Vec<Child> = images_pushed.into_iter().map(|(child, _)| child).collect();
    let index = index::Index::of(&children);
    let keep = repository::check_present(run.present, &index.manifest.digest)?;
    let put = index
        .put(&reg, &repository::without(&inputs.tags, &keep), |line| {
            runner.line(line);
        })
        .await?;
    tracing::info!(
        "pushed {} tag(s) at index {} ({}, {} platforms) in {:.1}s (direct)",
        inputs.tags.len(),
        put.digest,
        put.kind.media_type(),
        children.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(Published {
        digest: put.digest,
        engine_used: "direct",
        blobs: Some(blobs),
        children: children_rows,
    })
}
