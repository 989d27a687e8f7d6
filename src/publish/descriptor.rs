//! What manifests and indexes name their blobs and images with (the OCI descriptor), and
//! the platform an index entry is chosen by.

use std::collections::HashMap;

use serde::Deserialize;

use super::reuse::Platform;

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

#[derive(Debug, Clone, Deserialize)]
pub(super) struct DescriptorPlatform {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

impl Platform {
    /// Whether an index entry is for this platform: os and architecture, and the variant
    /// when both name one.
    pub(super) fn matches(&self, entry: &Descriptor) -> bool {
        entry.platform.as_ref().is_some_and(|p| {
            p.os == self.os
                && p.architecture == self.architecture
                && match (&p.variant, &self.variant) {
                    (Some(a), Some(b)) => a == b,
                    _ => true,
                }
        })
    }

    /// `os/architecture[/variant]`, for messages.
    pub(super) fn describe(&self) -> String {
        match &self.variant {
            Some(variant) => format!("{}/{}/{variant}", self.os, self.architecture),
            None if self.os.is_empty() => "the engine's platform".into(),
            None => format!("{}/{}", self.os, self.architecture),
        }
    }
}
