//! Which pusher sends the built image ([`Route`], chosen once from the inputs, the engine
//! and the network), and the push along it: the daemon's pusher, the direct push (with
//! the daemon's as its fallback under `push-engine: auto`), or on the containerd store
//! both, the daemon's for the blobs and the direct push for the other tags.
//!
//! Why the containerd store's default is the daemon's pusher: there BuildKit has already
//! compressed every layer, so nothing is left for the action to do but carry the stored
//! blobs, and the daemon's pusher reads its content store faster than its export API
//! streams it to the action (BENCHMARKS.md, section 7: the whole push of 171 MB of blobs
//! in 1.41 s, against 3.08 s for the export's stream alone).

use crate::ecr::RegistryAuth;
use crate::engine::push::{self, PushError, PushTarget};
use crate::engine::{Engine, ImageStore};
use crate::inputs::{Inputs, PushEngine};
use crate::network::Network;
use crate::progress::Progress;
use crate::publish::targets::{Destination, Fanout, TargetPush};
use crate::publish::{self, Compression, DirectOptions};
use crate::registry::RetryPolicy;
use crate::repository::{self, PresentTag};

/// The first API version whose push takes `platform`, so that the daemon pushes the
/// platform's image manifest of a containerd-store image, as the direct push would,
/// rather than its index.
const PLATFORM_PUSH_API: (u32, u32) = (1, 46);

/// How the image's blobs and tags reach the registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// `push-engine: daemon`: the daemon's pusher, for every tag.
    Daemon,
    /// The direct push; under `push-engine: auto` the daemon's pusher is its fallback
    /// when the image cannot be read or handled.
    Direct { fallback: bool },
    /// `push-engine: auto` on the containerd store: the daemon's pusher sends the stored
    /// blobs and the image manifest under the first tag; the direct push's client puts
    /// that manifest under the other tags. If the daemon cannot reach the registry (no
    /// retries then: the action has just reached it itself), or fails other than by the
    /// registry's refusal or an exhausted retry, the direct push sends everything instead.
    DaemonBlobs,
}

impl Route {
    /// The route for `inputs` on `engine`. The daemon's pusher ignores the action's
    /// network settings (a proxy, `registry-endpoint`), so it carries the blobs only when
    /// there are none; and only on an API that pushes one platform's manifest.
    pub fn choose(inputs: &Inputs, engine: &Engine, network: &Network) -> Self {
        // Only the direct push compresses once for several registries.
        if inputs.also_push_to.iter().any(|t| !t.replicated) {
            return Self::Direct { fallback: false };
        }
        let pushes_one_platform = engine.api_at_least(PLATFORM_PUSH_API.0, PLATFORM_PUSH_API.1);
        Self::decide(
            inputs.push_engine,
            inputs.compression,
            engine.store,
            pushes_one_platform,
            network,
        )
    }

    fn decide(
        push_engine: PushEngine,
        compression: Compression,
        store: ImageStore,
        pushes_one_platform: bool,
        network: &Network,
    ) -> Self {
        let default_network = network.registry_endpoint.is_none() && network.proxies.is_empty();
        match push_engine {
            PushEngine::Daemon => Self::Daemon,
            PushEngine::Direct => Self::Direct { fallback: false },
            PushEngine::Auto
                if store == ImageStore::Containerd && pushes_one_platform && default_network =>
            {
                Self::DaemonBlobs
            }
            PushEngine::Auto => Self::Direct {
                fallback: network.registry_endpoint.is_none()
                    && daemon_keeps_compression(store, compression),
            },
        }
    }
}

/// Whether the daemon's pusher would push the layers compressed as asked: it gzips an
/// image of the classic store, and sends the stored blobs of the containerd store (which
/// BuildKit compressed as asked).
fn daemon_keeps_compression(store: ImageStore, compression: Compression) -> bool {
    store == ImageStore::Containerd || matches!(compression, Compression::Gzip { .. })
}

/// What the push needs beyond the inputs.
#[derive(Debug)]
pub struct PushRun<'a> {
    pub auth: &'a RegistryAuth,
    /// Images in the registry whose layers ours may share (for the direct push).
    pub reuse_from: Vec<String>,
    pub network: &'a Network,
    pub retry: RetryPolicy,
    pub spool_dir: std::path::PathBuf,
    /// ECR's `BLOB_MOUNTING` setting, read once per run.
    pub mounting: crate::registry::Mounting,
    /// Requested tags that exist where they are immutable: left alone when they hold
    /// this image already, refused otherwise ([`repository::check_present`]).
    pub present: &'a [PresentTag],
    /// The ECR API, for a shared build's records.
    pub ecr: &'a crate::ecr::Ecr,
    /// `build-platforms`: this run is one leg of a build shared by matrix legs.
    pub shared: Option<&'a super::legs::SharedBuild>,
    /// `also-push-to`: the registries beyond the primary, ready to push to.
    pub extra: &'a [Destination],
}

impl PushRun<'_> {
    /// Every registry of the push, the primary first.
    pub fn destinations(&self, inputs: &Inputs) -> Vec<Destination> {
        let primary = Destination {
            label: format!("{}/{}", self.auth.registry, inputs.repository),
            login: self.auth.login(),
            repository: inputs.repository.clone(),
            present: self.present.to_vec(),
            primary: true,
        };
        std::iter::once(primary)
            .chain(self.extra.iter().cloned())
            .collect()
    }

    /// Connects to every registry of the push.
    pub fn fanout(
        &self,
        inputs: &Inputs,
    ) -> Result<(Fanout, Vec<Destination>), publish::DirectPushError> {
        let destinations = self.destinations(inputs);
        let fanout = Fanout::connect(&destinations, self.retry, self.network)?;
        Ok((fanout, destinations))
    }

    /// The requested tags a pusher must put: all but the present ones.
    fn tags_to_put(&self, tags: &[String]) -> Vec<String> {
        let present: Vec<String> = self.present.iter().map(|p| p.tag.clone()).collect();
        repository::without(tags, &present)
    }

    /// After a pusher that could not ask first (the daemon's) pushed `digest`: whether
    /// the present tags agree with it.
    fn check_present_after(&self, digest: &str) -> anyhow::Result<()> {
        repository::check_present(self.present, digest).map(drop)
    }
}

/// A pushed image: its manifest digest, and which pusher sent it (for the log and the
/// job summary).
#[derive(Debug)]
pub struct Pushed {
    pub digest: String,
    pub engine_used: &'static str,
    /// What the direct push's blobs cost; `None` when the daemon's pusher sent them.
    pub blobs: Option<publish::BlobStats>,
    /// The direct push: what became of it at each registry, the primary first.
    pub targets: Vec<TargetPush>,
}

/// How long a token handed to the daemon's pusher must still be valid.
const DAEMON_PUSH_MARGIN: std::time::Duration = std::time::Duration::from_secs(3600);

/// Pushes `image_id` under every tag along `route`.
pub async fn push(
    route: Route,
    run: &PushRun<'_>,
    engine: &Engine,
    inputs: &Inputs,
    image_id: &str,
    repository_ref: &str,
    progress: &dyn Progress,
) -> anyhow::Result<Pushed> {
    // The daemon's pusher cannot renew a token mid-push as the registry client does: it
    // gets one that lasts the push (a build can outlast the 12 hours of the first).
    let auth = run.auth.fresh_for(DAEMON_PUSH_MARGIN).await?;
    let target = PushTarget {
        repository_ref,
        image_id,
        auth: &auth,
    };
    match route {
        Route::Daemon => daemon(run, engine, target, &inputs.tags, progress).await,
        Route::Direct { fallback } => {
            let pushed = {
                let _group = progress.group(&format!("Push {repository_ref} (direct)"));
                direct_push(run, engine, inputs, image_id, progress).await
            };
            match pushed {
                Ok(pushed) => Ok(pushed),
                Err(err) if fallback && err.daemon_may_succeed() => {
                    progress.warning(&format!(
                        "the direct push cannot send this image ({err}); pushing through the \
                         Docker daemon instead"
                    ));
                    let pushed = daemon(run, engine, target, &inputs.tags, progress).await?;
                    Ok(Pushed {
                        engine_used: "daemon (fallback)",
                        ..pushed
                    })
                }
                Err(err) => Err(err.into()),
            }
        }
        Route::DaemonBlobs => daemon_blobs(run, engine, inputs, target, progress).await,
    }
}

async fn daemon(
    run: &PushRun<'_>,
    engine: &Engine,
    target: PushTarget<'_>,
    tags: &[String],
    progress: &dyn Progress,
) -> anyhow::Result<Pushed> {
    let tags = run.tags_to_put(tags);
    if tags.is_empty() {
        anyhow::bail!(
            "every tag already exists where it is immutable, and the Docker daemon's pusher \
             cannot tell before pushing whether this build is the same image: use \
             `push-engine: auto` or `direct`, which check the digest before any tag moves, \
             or `on-tag-exists: skip`"
        );
    }
    let pushed = push::push(engine, target, &tags, run.retry, progress).await?;
    run.check_present_after(&pushed.digest)?;
    Ok(Pushed {
        digest: pushed.digest,
        engine_used: "daemon",
        blobs: None,
        targets: Vec::new(),
    })
}

async fn direct_push(
    run: &PushRun<'_>,
    engine: &Engine,
    inputs: &Inputs,
    image_id: &str,
    progress: &dyn Progress,
) -> Result<Pushed, publish::DirectPushError> {
    let options = DirectOptions {
        reuse_from: run.reuse_from.clone(),
        network: run.network.clone(),
        compression: inputs.compression,
        spool_dir: run.spool_dir.clone(),
        mounting: run.mounting,
        ..DirectOptions::default()
    };
    let (fanout, destinations) = run.fanout(inputs)?;
    let mut on_line = |line: &str| progress.line(line);
    let image = publish::upload_image(engine, image_id, &fanout, &options, &mut on_line).await?;
    let targets = publish::targets::put_everywhere(
        &fanout,
        &destinations,
        &inputs.tags,
        &image,
        &mut on_line,
    )
    .await?;
    let blobs = image.stats;
    tracing::info!(
        "direct push of one {}: {} bytes compressed, {} uploaded, {} blob(s) already there, \
         {} mounted, {} layer(s) reused without compressing",
        image.manifest.media_type,
        blobs.compressed_bytes,
        blobs.uploaded_bytes,
        blobs.skipped_blobs,
        blobs.mounted_blobs,
        blobs.reused_layers
    );
    Ok(Pushed {
        blobs: Some(blobs),
        digest: image.manifest.digest,
        engine_used: "direct",
        targets,
    })
}

/// [`Route::DaemonBlobs`].
async fn daemon_blobs(
    run: &PushRun<'_>,
    engine: &Engine,
    inputs: &Inputs,
    target: PushTarget<'_>,
    progress: &dyn Progress,
) -> anyhow::Result<Pushed> {
    let tags = run.tags_to_put(&inputs.tags);
    let Some((first, others)) = tags.split_first() else {
        // Every tag holds an image already: only the direct push can tell, before
        // moving any, whether it is this one.
        let _group = progress.group(&format!("Push {} (direct)", target.repository_ref));
        return Ok(direct_push(run, engine, inputs, target.image_id, progress).await?);
    };
    let group = progress.group(&format!(
        "Push {} (the daemon's pusher sends the stored blobs, the direct push the other tags)",
        target.repository_ref
    ));
    match push::push_one(engine, target, first, run.retry, progress).await {
        // One tag: the daemon's push was the whole of it.
        Ok(pushed) if others.is_empty() => {
            run.check_present_after(&pushed.digest)?;
            Ok(Pushed {
                digest: pushed.digest,
                engine_used: "daemon (blobs and tag)",
                blobs: None,
                targets: Vec::new(),
            })
        }
        Ok(pushed) => {
            run.check_present_after(&pushed.digest)?;
            let tagged = publish::tag_pushed(
                &pushed.digest,
                &inputs.repository,
                others,
                &run.auth.login(),
                run.retry,
                run.network,
                |line| progress.line(line),
            )
            .await?;
            tracing::info!(
                "the daemon's pusher sent one {} ({} bytes of blobs) under {first}; {} other \
                 tag(s) put by the direct push",
                tagged.media_type,
                tagged.compressed_bytes,
                others.len()
            );
            Ok(Pushed {
                digest: tagged.digest,
                engine_used: "daemon (blobs), direct (tags)",
                blobs: None,
                targets: Vec::new(),
            })
        }
        Err(err) if falls_back(&err) => {
            drop(group);
            progress.warning(&format!(
                "the Docker daemon's pusher cannot send this image ({err}); pushing it \
                 directly instead"
            ));
            let _group = progress.group(&format!("Push {} (direct)", target.repository_ref));
            let pushed = direct_push(run, engine, inputs, target.image_id, progress).await?;
            Ok(Pushed {
                engine_used: "direct (fallback)",
                ..pushed
            })
        }
        Err(err) => Err(err.into()),
    }
}

/// Whether the direct push could succeed where the daemon's pusher failed: not when the
/// registry kept failing until the retries ran out, nor when it refused the push.
fn falls_back(err: &PushError) -> bool {
    !err.transient && !push::is_refusal(&err.message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::ProxyUrl;

    const GZIP: Compression = Compression::Gzip { level: 6 };
    const ZSTD: Compression = Compression::Zstd { level: 3 };

    fn behind_proxy() -> Network {
        let mut network = Network::default();
        network.proxies.https =
            Some(ProxyUrl::parse("HTTPS_PROXY", "http://proxy.internal:3128").unwrap());
        network
    }

    fn with_endpoint() -> Network {
        Network {
            registry_endpoint: Some("vpce-1.dkr.ecr.eu-west-1.vpce.amazonaws.com".into()),
            ..Network::default()
        }
    }

    /// `auto` on the containerd store of an API that pushes one platform: the daemon's
    /// pusher carries the blobs; not on Docker 26's API (it would push the index), nor
    /// where the action's own network settings would be ignored by the daemon.
    #[test]
    fn the_containerd_store_sends_its_blobs_through_the_daemon_on_a_default_network() {
        let plain = Network::default();
        let auto = |store, api, network: &Network| {
            Route::decide(PushEngine::Auto, GZIP, store, api, network)
        };
        assert_eq!(
            auto(ImageStore::Containerd, true, &plain),
            Route::DaemonBlobs
        );
        assert_eq!(
            Route::decide(PushEngine::Auto, ZSTD, ImageStore::Containerd, true, &plain),
            Route::DaemonBlobs
        );
        assert_eq!(
            auto(ImageStore::Containerd, false, &plain),
            Route::Direct { fallback: true }
        );
        assert_eq!(
            auto(ImageStore::Containerd, true, &behind_proxy()),
            Route::Direct { fallback: true }
        );
        assert_eq!(
            auto(ImageStore::Containerd, true, &with_endpoint()),
            Route::Direct { fallback: false }
        );
        assert_eq!(
            auto(ImageStore::Classic, true, &plain),
            Route::Direct { fallback: true }
        );
    }

    /// `direct` and `daemon` are taken at their word; `auto` on the classic store falls
    /// back to the daemon only where it would write the compression asked for (gzip).
    #[test]
    fn explicit_engines_are_kept_and_zstd_on_the_classic_store_has_no_fallback() {
        let plain = Network::default();
        for store in [ImageStore::Classic, ImageStore::Containerd] {
            assert_eq!(
                Route::decide(PushEngine::Direct, GZIP, store, true, &plain),
                Route::Direct { fallback: false }
            );
            assert_eq!(
                Route::decide(PushEngine::Daemon, GZIP, store, true, &plain),
                Route::Daemon
            );
        }
        assert_eq!(
            Route::decide(PushEngine::Auto, ZSTD, ImageStore::Classic, true, &plain),
            Route::Direct { fallback: false }
        );
    }

    /// An exhausted retry and a refusal are final; anything else (the daemon cannot
    /// verify the registry's certificate, say) leaves the direct push to try.
    #[test]
    fn the_daemon_pusher_falls_back_only_when_the_registry_did_not_decide() {
        let failed = |message: &str, transient| PushError {
            reference: "r:latest".into(),
            registry: "r".into(),
            message: message.into(),
            transient,
        };
        assert!(!falls_back(&failed(
            "503 Service Unavailable (after 4 attempts)",
            true
        )));
        assert!(!falls_back(&failed("denied: not authorized", false)));
        assert!(!falls_back(&failed("tag invalid: immutable", false)));
        assert!(falls_back(&failed(
            "tls: failed to verify certificate: x509: certificate signed by unknown authority",
            false
        )));
    }
}
