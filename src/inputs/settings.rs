//! What the typed inputs are made of: repository settings, build settings, and the
//! choices the inputs name (builder, pusher, what to do with an existing tag).

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

/// `image-tag-mutability`: ECR's four settings. The two `*_WITH_EXCLUSION` ones come with
/// the wildcard filters of `image-tag-mutability-exclusions`
/// ([`RepositorySettings::tag_mutability_exclusions`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TagMutability {
    Mutable,
    Immutable,
    /// Tags are mutable, except those an exclusion filter matches.
    MutableWithExclusion,
    /// Tags are immutable, except those an exclusion filter matches.
    ImmutableWithExclusion,
}

impl TagMutability {
    pub const ALL: [Self; 4] = [
        Self::Mutable,
        Self::Immutable,
        Self::MutableWithExclusion,
        Self::ImmutableWithExclusion,
    ];

    /// ECR's name of the setting.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Mutable => "MUTABLE",
            Self::Immutable => "IMMUTABLE",
            Self::MutableWithExclusion => "MUTABLE_WITH_EXCLUSION",
            Self::ImmutableWithExclusion => "IMMUTABLE_WITH_EXCLUSION",
        }
    }

    /// ECR's name, in any case.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|m| m.as_str().eq_ignore_ascii_case(name))
    }

    /// Whether the setting takes exclusion filters (and needs at least one).
    pub fn has_exclusions(self) -> bool {
        matches!(
            self,
            Self::MutableWithExclusion | Self::ImmutableWithExclusion
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Encryption {
    Aes256,
    /// `key` is a KMS key ARN or ID; `None` uses the AWS managed key.
    Kms {
        key: Option<String>,
    },
}

impl Encryption {
    pub fn type_str(&self) -> &'static str {
        match self {
            Self::Aes256 => "AES256",
            Self::Kms { .. } => "KMS",
        }
    }
}

/// Which builder the daemon uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Builder {
    /// BuildKit when the daemon supports it, else classic.
    Auto,
    Buildkit,
    Classic,
}

/// Where a build secret's value comes from; read just before the build, never logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    File(PathBuf),
    /// An environment variable of the step.
    Env(String),
}

/// One `secrets` line: `id=NAME,src=PATH` or `id=NAME,env=VAR`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretSpec {
    pub id: String,
    pub source: SecretSource,
}

/// Which pusher sends the image to the registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushEngine {
    /// Direct, with the daemon's pusher as the fallback.
    Auto,
    Direct,
    Daemon,
}

/// What to do when a requested tag already exists in ECR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnTagExists {
    Fail,
    Skip,
    Overwrite,
}

/// A JSON policy document, normalised from a file, inline JSON or inline YAML.
#[derive(Clone, PartialEq, Eq)]
pub struct Policy {
    pub json: serde_json::Value,
    /// Where it came from, for messages: `inline` or the file path.
    pub source: String,
}

impl fmt::Debug for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Policy({})", self.source)
    }
}

impl Policy {
    pub fn to_json_string(&self) -> String {
        self.json.to_string()
    }
}

/// What the repository should look like. Creation settings apply only when the action
/// creates the repository; policies are applied on every run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepositorySettings {
    pub create: bool,
    pub tag_mutability: TagMutability,
    /// `image-tag-mutability-exclusions`: ECR's wildcard filters (1 to 5 with a
    /// `*_WITH_EXCLUSION` setting, none otherwise).
    pub tag_mutability_exclusions: Vec<String>,
    pub scan_on_push: bool,
    pub encryption: Encryption,
    pub tags: Vec<(String, String)>,
    pub lifecycle_policy: Option<Policy>,
    pub repository_policy: Option<Policy>,
}

/// Everything the build needs from the inputs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildSettings {
    pub context: PathBuf,
    /// Absolute or relative to the working directory; `None` means `Dockerfile` in the
    /// context.
    pub dockerfile: Option<PathBuf>,
    pub build_args: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
    pub target: Option<String>,
    /// The one target platform of a single-platform build (a build set sets it per
    /// build).
    pub platform: Option<String>,
    pub pull: bool,
    pub no_cache: bool,
    pub builder: Builder,
    pub secrets: Vec<SecretSpec>,
    /// Explicit `cache-from` references; empty means "the first tag, if it exists".
    pub cache_from: Vec<String>,
}

impl BuildSettings {
    /// The Dockerfile path the build uses.
    pub fn dockerfile_path(&self) -> PathBuf {
        self.dockerfile
            .clone()
            .unwrap_or_else(|| self.context.join("Dockerfile"))
    }
}
