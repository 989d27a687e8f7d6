//! What manifests and indexes name their blobs and images with (the OCI descriptor), and
//! how an index entry is chosen for a platform: the one attestation filter and the one
//! platform match of the push (the containerd store's export, reused images, and an
//! existing index read back).

use std::collections::HashMap;

use serde::Deserialize;

use crate::platform::Platform;

/// The annotation BuildKit puts on an index entry that is not an image but refers to one
/// (moby/buildkit docs/attestations/attestation-storage.md, "Attestation Manifest
/// Descriptor": set to `attestation-manifest`, and "if any other value is specified, the
/// entire manifest should be ignored").
const REFERENCE_TYPE: &str = "vnd.docker.reference.type";

/// A manifest's config or layer, or an index's entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Descriptor {
    #[serde(default)]
    pub media_type: String,
    pub digest: String,
    #[serde(default)]
    pub size: u64,
    pub platform: Option<DescriptorPlatform>,
    #[serde(default)]
    pub annotations: HashMap<String, String>,
}

/// An index entry's `platform`, as written (not normalised).
#[derive(Debug, Clone, Deserialize)]
pub(super) struct DescriptorPlatform {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

impl Descriptor {
    /// Whether this index entry is an attestation manifest (or any other entry BuildKit
    /// marks as referring to an image) rather than an image: it has a
    /// `vnd.docker.reference.type`, or its platform is `unknown/unknown`, which BuildKit
    /// sets "to prevent container runtimes from accidentally pulling or running" it
    /// (attestation-storage.md, as above).
    pub fn is_attestation(&self) -> bool {
        self.annotations.contains_key(REFERENCE_TYPE)
            || self
                .platform
                .as_ref()
                .is_some_and(|p| p.os == "unknown" || p.architecture == "unknown")
    }

    /// The entry's platform, normalised; `None` when it names none, or none known.
    pub fn platform(&self) -> Option<Platform> {
        let p = self.platform.as_ref()?;
        Platform::from_parts(&p.os, &p.architecture, p.variant.as_deref())
    }
}

/// The image among an index's `entries` for `platform`: never an attestation; the entry
/// of exactly that platform (normalised, so `arm64/v8` is `arm64`), else one of its os and
/// architecture where one side names no variant (an `amd64` image and an `amd64/v3`
/// entry). With no platform known, the only image, if there is one only.
pub(super) fn pick_image<'d>(
    entries: &'d [Descriptor],
    platform: Option<&Platform>,
) -> Option<&'d Descriptor> {
    let images: Vec<(&Descriptor, Option<Platform>)> = entries
        .iter()
        .filter(|d| !d.is_attestation())
        .map(|d| (d, d.platform()))
        .collect();
    let Some(wanted) = platform else {
        return (images.len() == 1).then(|| images[0].0);
    };
    let exact = images.iter().find(|(_, p)| p.as_ref() == Some(wanted));
    let loose = || {
        images.iter().find(|(_, p)| {
            p.as_ref().is_some_and(|p| {
                p.os == wanted.os
                    && p.architecture == wanted.architecture
                    && (p.variant.is_empty() || wanted.variant.is_empty())
            })
        })
    };
    exact.or_else(loose).map(|(d, _)| *d)
}

/// `os/architecture[/variant]` of `platform`, for messages.
pub(super) fn describe(platform: Option<&Platform>) -> String {
    platform.map_or_else(|| "the engine's platform".into(), ToString::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An index as BuildKit writes one: two platforms, an attestation manifest for one
    /// (`unknown/unknown` and the reference annotation), and the shapes of entries that
    /// are attestations by one mark only (an annotation without a platform; an
    /// `unknown/unknown` platform without the annotation).
    fn buildkit_index() -> Vec<Descriptor> {
        serde_json::from_str(
            r#"[
              {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": "amd64",
               "platform": {"os": "linux", "architecture": "amd64"}},
              {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": "arm64",
               "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}},
              {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": "att",
               "platform": {"os": "unknown", "architecture": "unknown"},
               "annotations": {"vnd.docker.reference.type": "attestation-manifest",
                               "vnd.docker.reference.digest": "amd64"}},
              {"digest": "annotated", "annotations": {"vnd.docker.reference.type": "other"}},
              {"digest": "unknown", "platform": {"os": "unknown", "architecture": "unknown"}}
            ]"#,
        )
        .unwrap()
    }

    /// The digest of the entry [`pick_image`] chooses for the platform named `text`.
    fn pick_for<'d>(index: &'d [Descriptor], text: &str) -> Option<&'d str> {
        let platform = Platform::parse(text).unwrap();
        pick_image(index, Some(&platform)).map(|d| d.digest.as_str())
    }

    /// Each shape of attestation entry is one, by either mark; images are not.
    #[test]
    fn attestations_are_known_by_either_mark() {
        let attestations: Vec<String> = buildkit_index()
            .into_iter()
            .filter(Descriptor::is_attestation)
            .map(|d| d.digest)
            .collect();
        assert_eq!(attestations, ["att", "annotated", "unknown"]);
    }

    /// A platform is matched after normalisation (`arm64/v8` is `arm64`, `aarch64` is
    /// `arm64`); an attestation is never the image, not even for `unknown/unknown`.
    #[test]
    fn entries_are_picked_by_normalised_platform() {
        let index = buildkit_index();
        let pick = |text: &str| pick_for(&index, text);
        assert_eq!(pick("linux/amd64"), Some("amd64"));
        assert_eq!(pick("linux/arm64"), Some("arm64"));
        assert_eq!(pick("linux/aarch64/v8"), Some("arm64"));
        assert_eq!(
            pick("linux/amd64/v3"),
            Some("amd64"),
            "one side names no variant"
        );
        assert_eq!(pick("linux/arm/v7"), None);
        assert_eq!(pick("linux/s390x"), None);
    }

    /// The exact platform wins over an entry matched only for naming no variant; two
    /// variants that differ never match.
    #[test]
    fn an_exact_variant_wins() {
        let index: Vec<Descriptor> = serde_json::from_str(
            r#"[
              {"digest": "plain", "platform": {"os": "linux", "architecture": "amd64"}},
              {"digest": "v3", "platform": {"os": "linux", "architecture": "amd64", "variant": "v3"}},
              {"digest": "v6", "platform": {"os": "linux", "architecture": "arm", "variant": "v6"}}
            ]"#,
        )
        .unwrap();
        let pick = |text: &str| pick_for(&index, text);
        assert_eq!(pick("linux/amd64/v3"), Some("v3"));
        assert_eq!(pick("linux/amd64"), Some("plain"));
        assert_eq!(pick("linux/arm/v6"), Some("v6"));
        assert_eq!(pick("linux/arm/v7"), None);
    }

    /// With no platform known, the only image is chosen (attestations do not count), and
    /// none when there are two.
    #[test]
    fn without_a_platform_only_a_lone_image_is_chosen() {
        let index = buildkit_index();
        assert!(pick_image(&index, None).is_none(), "two images");
        let lone: Vec<Descriptor> = index.into_iter().filter(|d| d.digest != "arm64").collect();
        assert_eq!(
            pick_image(&lone, None).map(|d| d.digest.as_str()),
            Some("amd64")
        );
        assert_eq!(describe(None), "the engine's platform");
        let arm64 = Platform::parse("linux/arm64/v8").unwrap();
        assert_eq!(describe(Some(&arm64)), "linux/arm64");
    }
}
