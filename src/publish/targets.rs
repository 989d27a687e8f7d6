//! The registries one push goes to: the primary, then each of `also-push-to`
//! ([`Destination`]). The image is read and each new layer compressed once; its blobs go
//! to every registry at the same time ([`Fanout`], which [`super::upload::Uploads`]
//! drives), and the same manifest bytes are put in each, so every registry gets the same
//! digest. A registry that fails is dropped from the rest of the push, and the others go
//! on: the failure is the caller's to report ([`TargetPush`]).

use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::{BlobStats, DirectPushError};
use crate::registry::{Login, Registry, RetryPolicy, SetupError};
use crate::repository::PresentTag;

/// One registry and repository the run pushes to.
#[derive(Debug, Clone)]
pub struct Destination {
    /// `<host>/<repository>`: how messages, the summary and the `targets` output name it.
    pub label: String,
    pub login: Login,
    /// The repository's path in the registry (`<alias>/<name>` on ECR Public).
    pub repository: String,
    /// Requested tags that exist there where they are immutable.
    pub present: Vec<PresentTag>,
    /// Whether the network's `registry-endpoint` applies: only to the primary, the
    /// registry that endpoint serves.
    pub primary: bool,
}

/// What became of one destination's push.
#[derive(Debug, Clone, PartialEq)]
pub struct TargetPush {
    pub label: String,
    /// The digest under every tag there; `None` when it failed.
    pub digest: Option<String>,
    /// What its blobs cost there.
    pub blobs: BlobStats,
    pub seconds: f64,
    /// Why it failed, in one line.
    pub error: Option<String>,
}

/// The connected registries of one push, the primary first, and which have failed.
/// Cloned cheaply: the images of a multi-platform push share one, so a registry that
/// failed for one platform is left out of the others'.
#[derive(Debug, Clone)]
pub struct Fanout {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    regs: Vec<Arc<Registry>>,
    labels: Vec<String>,
    failed: Mutex<Vec<Option<String>>>,
    started: Instant,
}

impl Fanout {
    /// One registry: the push as it always was.
    pub fn one(reg: Arc<Registry>) -> Self {
        let label = format!("{}/{}", reg.host, reg.repository);
        Self::of(vec![(reg, label)])
    }

    fn of(regs: Vec<(Arc<Registry>, String)>) -> Self {
        let failed = Mutex::new(vec![None; regs.len()]);
        let (regs, labels) = regs.into_iter().unzip();
        Self {
            inner: Arc::new(Inner {
                regs,
                labels,
                failed,
                started: Instant::now(),
            }),
        }
    }

    /// Connects to every destination.
    pub fn connect(
        destinations: &[Destination],
        retry: RetryPolicy,
        network: &crate::network::Network,
    ) -> Result<Self, SetupError> {
        // `registry-endpoint` is the primary registry's VPC endpoint: the others are
        // reached by their own names.
        let elsewhere = crate::network::Network {
            registry_endpoint: None,
            ..network.clone()
        };
        let regs = destinations
            .iter()
            .map(|d| {
                let network = if d.primary { network } else { &elsewhere };
                Registry::connect(&d.login, &d.repository, retry, network)
                    .map(|reg| (Arc::new(reg), d.label.clone()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self::of(regs))
    }

    pub fn len(&self) -> usize {
        self.inner.regs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.inner.regs.is_empty()
    }

    /// The primary registry: reuse is looked up there, and errors of the image itself
    /// name it.
    pub fn lead(&self) -> &Arc<Registry> {
        &self.inner.regs[0]
    }

    pub fn reg(&self, index: usize) -> &Arc<Registry> {
        &self.inner.regs[index]
    }

    pub fn label(&self, index: usize) -> &str {
        &self.inner.labels[index]
    }

    /// `[label] `, to tell the registries' lines apart when there are several.
    pub fn prefix(&self, index: usize) -> String {
        if self.len() > 1 {
            format!("[{}] ", self.label(index))
        } else {
            String::new()
        }
    }

    fn failed(&self) -> std::sync::MutexGuard<'_, Vec<Option<String>>> {
        self.inner
            .failed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The registries still in the push.
    pub fn live(&self) -> Vec<usize> {
        let failed = self.failed();
        (0..self.len()).filter(|i| failed[*i].is_none()).collect()
    }

    /// Why `index` failed, if it has.
    pub fn failure(&self, index: usize) -> Option<String> {
        self.failed()[index].clone()
    }

    /// Drops `index` from the rest of the push, for `why` (the first reason stays).
    /// Returns whether any registry is still in it.
    pub fn fail(&self, index: usize, why: String) -> bool {
        let mut failed = self.failed();
        if failed[index].is_none() {
            tracing::warn!(
                "pushing to {} failed; the other registries go on: {why}",
                self.label(index)
            );
            failed[index] = Some(why);
        }
        failed.iter().any(Option::is_none)
    }

    /// Whether every registry still in the push has the blob `digest`.
    pub async fn all_have_blob(&self, digest: &str) -> bool {
        for index in self.live() {
            if !self.has_blob_at(index, digest).await {
                return false;
            }
        }
        true
    }

    /// Whether the primary registry (the first) has the blob `digest`.
    pub async fn lead_has_blob(&self, digest: &str) -> bool {
        self.has_blob_at(0, digest).await
    }

    /// Whether registry `index` has the blob `digest`; an answer lost after its retries
    /// counts as no.
    async fn has_blob_at(&self, index: usize, digest: &str) -> bool {
        let reg = self.reg(index);
        matches!(
            reg.with_retry("checking a blob", || reg.has_blob(digest))
                .await,
            Ok(true)
        )
    }

    /// Whether every registry still in the push but the lead has the manifest `digest`
    /// (so it has every blob the manifest lists).
    pub async fn others_have_manifest(&self, digest: &str) -> bool {
        for index in self.live().into_iter().filter(|i| *i != 0) {
            let reg = self.reg(index);
            if reg.get_manifest(&reg.repository, digest).await.is_err() {
                return false;
            }
        }
        true
    }

    /// Seconds since the push started, for each registry's row.
    pub fn seconds(&self) -> f64 {
        self.inner.started.elapsed().as_secs_f64()
    }
}

/// Puts `image`'s manifest under `tags` in every registry still in the push, each
/// leaving alone the tags it holds already where they are immutable (and failing, alone,
/// when such a tag holds another image); what became of each. The primary's failure is
/// the push's error, once every other registry has had its tags.
pub async fn put_everywhere(
    fanout: &Fanout,
    destinations: &[Destination],
    tags: &[String],
    image: &super::UploadedImage,
    on_line: &mut dyn FnMut(&str),
) -> Result<Vec<TargetPush>, DirectPushError> {
    let mut primary_error = None;
    let mut pushes = Vec::with_capacity(fanout.len());
    for (index, destination) in destinations.iter().enumerate() {
        if fanout.failure(index).is_none() {
            let prefix = fanout.prefix(index);
            let mut on_line = |line: &str| on_line(&format!("{prefix}{line}"));
            let reg = fanout.reg(index);
            if let Err(err) = put_one(reg, destination, tags, &image.manifest, &mut on_line).await {
                fanout.fail(index, crate::error_chain(&err));
                if index == 0 {
                    primary_error = Some(err);
                }
            }
        }
        let blobs = image.per_target.get(index).copied().unwrap_or_default();
        pushes.push(fanout.outcome(index, &image.manifest.digest, blobs));
    }
    fanout.check_primary(&pushes, primary_error)?;
    Ok(pushes)
}

/// One registry's tags: the present ones checked and kept, the others put.
async fn put_one(
    reg: &Registry,
    destination: &Destination,
    tags: &[String],
    manifest: &super::PushedManifest,
    on_line: &mut dyn FnMut(&str),
) -> Result<(), DirectPushError> {
    let kept =
        crate::repository::check_present(&destination.present, &manifest.digest).map_err(|e| {
            DirectPushError::Refused {
                registry: reg.host.clone(),
                message: format!("{e:#}"),
            }
        })?;
    for tag in &kept {
        on_line(&format!(
            "{tag}: already at {} (not put again)",
            manifest.digest
        ));
    }
    let tags = crate::repository::without(tags, &kept);
    super::manifest::put(reg, &tags, manifest, &mut |line: &str| on_line(line)).await
}

impl Fanout {
    /// What became of registry `index`, whose manifest would be `digest`.
    pub fn outcome(&self, index: usize, digest: &str, blobs: BlobStats) -> TargetPush {
        let error = self.failure(index);
        TargetPush {
            label: self.label(index).to_string(),
            digest: error.is_none().then(|| digest.to_string()),
            blobs,
            seconds: self.seconds(),
            error,
        }
    }

    /// The primary's failure as the push's error: its own when it was the only registry
    /// (`error`, typed), else one that names where the image did go.
    pub fn check_primary(
        &self,
        pushes: &[TargetPush],
        error: Option<DirectPushError>,
    ) -> Result<(), DirectPushError> {
        match (self.failure(0), error) {
            (None, _) => Ok(()),
            (Some(_), Some(err)) if self.len() == 1 => Err(err),
            (Some(why), _) => Err(DirectPushError::Refused {
                registry: self.lead().host.clone(),
                message: format!(
                    "pushing to {} failed: {}",
                    self.label(0),
                    Self::primary_failure(why, pushes)
                ),
            }),
        }
    }

    fn primary_failure(why: String, pushes: &[TargetPush]) -> String {
        let elsewhere: Vec<&str> = pushes
            .iter()
            .filter(|p| p.digest.is_some())
            .map(|p| p.label.as_str())
            .collect();
        if elsewhere.is_empty() {
            why
        } else {
            format!(
                "{why} (the image did reach {}, which the step's outputs do not list: \
                 re-run once the primary registry's problem is fixed)",
                elsewhere.join(", ")
            )
        }
    }
}
