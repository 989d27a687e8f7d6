//! Inputs, parsed in two stages: raw strings keyed by input name (from `INPUT_*`
//! variables or `--flags`, see [`cli`]), then typed, validated [`Inputs`]. The parser
//! takes a map, so tests never touch the process environment; defaults come from the
//! embedded `action.yml` ([`spec`]).

pub mod catalog;
pub mod cli;
pub mod mutability;
pub mod platforms;
pub mod scan;
pub mod settings;
pub mod signing_key;
pub mod spec;
pub mod supply;
pub mod targets;
pub mod validate;

use std::collections::BTreeMap;
use std::path::Path;

pub use catalog::Catalog;
pub use platforms::{Platform, PlatformHost};
pub use scan::{ScanSettings, Severity};
pub use settings::{
    BuildSettings, Builder, Encryption, OnTagExists, Policy, PushEngine, RepositorySettings,
    SecretSource, SecretSpec, TagMutability,
};
pub use spec::ActionSpec;
pub use supply::{ProvenanceMode, Signing, SupplySettings};

use crate::publish::Compression;

use crate::metadata::template::{Rendered, Template};
use crate::metadata::{self, Context};

/// A bad input: which input, which value, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InputError {
    #[error("input `{input}` is required: {hint}")]
    Missing { input: String, hint: String },
    #[error("invalid value `{value}` for input `{input}`: {reason}")]
    Invalid {
        input: String,
        value: String,
        reason: String,
    },
    #[error("unknown input `{0}`; the inputs are listed by --help and in action.yml")]
    Unknown(String),
}

impl InputError {
    pub fn invalid(input: &str, value: &str, reason: impl Into<String>) -> Self {
        // A 300-character value would bury the reason; show its start.
        const SHOWN: usize = 80;
        let value = if value.chars().count() > SHOWN {
            format!("{}…", value.chars().take(SHOWN).collect::<String>())
        } else {
            value.to_string()
        };
        Self::Invalid {
            input: input.to_string(),
            value,
            reason: reason.into(),
        }
    }

    /// The input the error is about.
    pub fn input(&self) -> &str {
        match self {
            Self::Missing { input, .. } | Self::Invalid { input, .. } | Self::Unknown(input) => {
                input
            }
        }
    }
}

/// Typed, validated inputs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inputs {
    pub repository: String,
    /// At least one tag, duplicates removed, in the order given.
    pub tags: Vec<String>,
    pub build: BuildSettings,
    pub push: bool,
    pub push_engine: PushEngine,
    /// How new layers are compressed (`compression`, `compression-level`).
    pub compression: Compression,
    pub on_tag_exists: OnTagExists,
    pub repository_settings: RepositorySettings,
    pub registry_id: Option<String>,
    /// `host[:port]` the direct push connects to instead of the registry host.
    pub registry_endpoint: Option<String>,
    pub aws_region: Option<String>,
    pub scan: ScanSettings,
    /// Provenance and signatures attached to the pushed manifests.
    pub supply: SupplySettings,
    /// `platforms` (or the deprecated `platform`), normalised: two or more make a
    /// multi-platform build set.
    pub platforms: Vec<Platform>,
    /// Engines that build a platform natively (`platform-hosts`).
    pub platform_hosts: Vec<PlatformHost>,
    /// This matrix leg's share of `platforms` (`build-platforms`); empty: all, here.
    pub build_platforms: Vec<Platform>,
    /// ECR Public's catalog data (`public-description`, `public-about`, `public-usage`,
    /// and the badges of `platforms`), for a push to ECR Public.
    pub public_catalog: Catalog,
    /// Warnings about the inputs themselves (a deprecated name), for the log.
    pub warnings: Vec<String>,
    /// `also-push-to`: registries beyond the primary that get the same image.
    pub also_push_to: Vec<targets::TargetSpec>,
    /// How long a `replicated` target waits for ECR's replication.
    pub replication_timeout: std::time::Duration,
}

impl Inputs {
    /// `linux/amd64,linux/arm64`: the platforms, for messages.
    pub fn build_platforms_text(&self) -> String {
        self.platforms
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// Looks up raw values with the defaults from `action.yml` applied; an empty value counts
/// as unset, as it does for the runner.
struct Raw<'a> {
    spec: &'a ActionSpec,
    values: &'a BTreeMap<String, String>,
    /// Names the parser asked for: a test checks they are exactly action.yml's inputs.
    read: std::cell::RefCell<std::collections::BTreeSet<String>>,
}

impl Raw<'_> {
    fn get(&self, name: &str) -> String {
        self.read.borrow_mut().insert(name.to_string());
        let spec = self.spec.input(name).unwrap_or_else(|| {
            panic!("input `{name}` is read by the parser but not declared in action.yml")
        });
        match self.values.get(name).map(|v| v.trim()) {
            Some(v) if !v.is_empty() => v.to_string(),
            _ => spec.default.clone(),
        }
    }

    fn optional(&self, name: &str) -> Option<String> {
        Some(self.get(name)).filter(|v| !v.is_empty())
    }

    fn boolean(&self, name: &str) -> Result<bool, InputError> {
        let value = self.get(name);
        validate::boolean(&value).map_err(|reason| InputError::invalid(name, &value, reason))
    }

    fn map(&self, name: &str) -> Result<BTreeMap<String, String>, InputError> {
        Ok(self.pairs(name)?.into_iter().collect())
    }

    fn pairs(&self, name: &str) -> Result<Vec<(String, String)>, InputError> {
        self.read.borrow_mut().insert(name.to_string());
        // Keep the raw text (not trimmed) so line numbers in messages match.
        let value = self.values.get(name).cloned().unwrap_or_default();
        validate::key_value_lines(&value)
            .map_err(|reason| InputError::invalid(name, &value, reason))
    }
}

impl Inputs {
    /// Validates raw input values outside any GitHub event: tag templates whose
    /// placeholders need one are dropped. See [`Inputs::parse_in`].
    pub fn parse(
        spec: &ActionSpec,
        values: &BTreeMap<String, String>,
        workdir: &Path,
    ) -> Result<Self, InputError> {
        Self::parse_in(spec, values, workdir, &Context::outside_runner())
    }

    /// Validates raw input values. `workdir` resolves relative paths (the workspace in a
    /// runner); policy files are read here so a bad policy fails before any AWS call.
    /// `context` fills the tag templates and the default labels.
    pub fn parse_in(
        spec: &ActionSpec,
        values: &BTreeMap<String, String>,
        workdir: &Path,
        context: &Context,
    ) -> Result<Self, InputError> {
        Self::parse_tracked(spec, values, workdir, context).0
    }

    /// [`Inputs::parse_in`], also returning the input names it read.
    fn parse_tracked(
        spec: &ActionSpec,
        values: &BTreeMap<String, String>,
        workdir: &Path,
        context: &Context,
    ) -> (Result<Self, InputError>, std::collections::BTreeSet<String>) {
        let raw = Raw {
            spec,
            values,
            read: std::cell::RefCell::default(),
        };
        let result = Self::parse_raw(&raw, workdir, context);
        (result, raw.read.into_inner())
    }

    fn parse_raw(raw: &Raw<'_>, workdir: &Path, context: &Context) -> Result<Self, InputError> {
        if let Some(unknown) = raw.values.keys().find(|k| raw.spec.input(k).is_none()) {
            return Err(InputError::Unknown(unknown.clone()));
        }

        let repository = raw.get("repository");
        if repository.is_empty() {
            return Err(InputError::Missing {
                input: "repository".into(),
                hint: "name the ECR repository to push to, e.g. `repository: team/app`".into(),
            });
        }
        validate::repository_name(&repository)
            .map_err(|reason| InputError::invalid("repository", &repository, reason))?;

        let tags = parse_tags(&raw.get("tags"), context)?;
        let mut labels = if raw.boolean("default-labels")? {
            metadata::labels::defaults(context, &tags[0])
        } else {
            BTreeMap::new()
        };
        // The `labels` input overrides the defaults.
        labels.extend(raw.map("labels")?);
        let push = raw.boolean("push")?;
        let scan = scan::parse(raw)?;
        let supply = supply::parse(raw)?;
        if !push && supply.signing != Signing::None {
            let sign = raw.get("sign");
            return Err(InputError::invalid(
                "sign",
                &sign,
                "nothing is signed when nothing is pushed: set `push: true`, or remove `sign`",
            ));
        }
        let (platforms, warnings) = platforms::parse_platform_inputs(raw)?;
        let platform_hosts =
            platforms::parse_platform_hosts(&raw.get("platform-hosts"), &platforms)?;
        let build_platforms =
            platforms::parse_build_platforms(&raw.get("build-platforms"), &platforms, push)?;
        let public_catalog = catalog::parse(raw, workdir, &platforms)?;

        let context = raw.get("context");
        let dockerfile = raw.optional("dockerfile");
        for (input, value) in [
            ("context", Some(&context)),
            ("dockerfile", dockerfile.as_ref()),
        ] {
            if let Some(value) = value {
                validate::local_path(value)
                    .map_err(|reason| InputError::invalid(input, value, reason))?;
            }
        }
        let build = BuildSettings {
            context: workdir.join(context),
            dockerfile: dockerfile.map(|d| workdir.join(d)),
            build_args: raw.map("build-args")?,
            labels,
            target: raw.optional("target"),
            platform: match platforms.as_slice() {
                [one] => Some(one.to_string()),
                _ => None,
            },
            pull: raw.boolean("pull")?,
            no_cache: raw.boolean("no-cache")?,
            builder: match raw.get("builder").to_ascii_lowercase().as_str() {
                "auto" => Builder::Auto,
                "buildkit" => Builder::Buildkit,
                "classic" => Builder::Classic,
                _ => {
                    return Err(InputError::invalid(
                        "builder",
                        &raw.get("builder"),
                        "expected `auto`, `buildkit` or `classic`",
                    ))
                }
            },
            secrets: parse_secrets(&raw.get("secrets"), workdir)?,
            cache_from: parse_cache_from(&raw.get("cache-from"))?,
        };
        if build.builder == Builder::Classic && !build.secrets.is_empty() {
            return Err(InputError::invalid(
                "secrets",
                &build
                    .secrets
                    .iter()
                    .map(|s| s.id.as_str())
                    .collect::<Vec<_>>()
                    .join(","),
                "build secrets need BuildKit; remove `builder: classic`",
            ));
        }
        if build.builder == Builder::Classic && platforms.len() > 1 {
            return Err(InputError::invalid(
                "platforms",
                &raw.get("platforms"),
                "a multi-platform build needs BuildKit; remove `builder: classic`",
            ));
        }
        if let Some(target) = &build.target {
            if target.chars().any(char::is_whitespace) {
                return Err(InputError::invalid(
                    "target",
                    target,
                    "a stage name has no white space",
                ));
            }
        }

        let (tag_mutability, tag_mutability_exclusions) = mutability::parse(raw)?;
        let repository_settings = RepositorySettings {
            create: raw.boolean("create-repository")?,
            tag_mutability,
            tag_mutability_exclusions,
            scan_on_push: raw.boolean("scan-on-push")?,
            encryption: parse_encryption(raw)?,
            tags: raw.pairs("repository-tags")?,
            lifecycle_policy: parse_policy(raw, "lifecycle-policy", workdir)?,
            repository_policy: parse_policy(raw, "repository-policy", workdir)?,
        };

        let registry_id = raw.optional("registry-id");
        if let Some(id) = &registry_id {
            validate::account_id(id)
                .map_err(|reason| InputError::invalid("registry-id", id, reason))?;
        }
        let registry_endpoint = raw.optional("registry-endpoint");
        if let Some(endpoint) = &registry_endpoint {
            validate::host_port(endpoint)
                .map_err(|reason| InputError::invalid("registry-endpoint", endpoint, reason))?;
        }
        let aws_region = raw.optional("aws-region");
        if let Some(region) = &aws_region {
            validate::region(region)
                .map_err(|reason| InputError::invalid("aws-region", region, reason))?;
        }

        let push_engine = match raw.get("push-engine").to_ascii_lowercase().as_str() {
            "auto" => PushEngine::Auto,
            "direct" => PushEngine::Direct,
            "daemon" => PushEngine::Daemon,
            _ => {
                return Err(InputError::invalid(
                    "push-engine",
                    &raw.get("push-engine"),
                    "expected `auto`, `direct` or `daemon`",
                ))
            }
        };
        let compression = parse_compression(raw, push_engine)?;
        let also_push_to =
            targets::parse_input(raw, push, push_engine, !build_platforms.is_empty())?;
        let timeout_text = raw.get("replication-timeout");
        let replication_timeout = validate::duration(&timeout_text)
            .map_err(|reason| InputError::invalid("replication-timeout", &timeout_text, reason))?;

        Ok(Self {
            repository,
            tags,
            build,
            push,
            push_engine,
            compression,
            on_tag_exists: match raw.get("on-tag-exists").to_ascii_lowercase().as_str() {
                "fail" => OnTagExists::Fail,
                "skip" => OnTagExists::Skip,
                "overwrite" => OnTagExists::Overwrite,
                _ => {
                    return Err(InputError::invalid(
                        "on-tag-exists",
                        &raw.get("on-tag-exists"),
                        "expected `fail`, `skip` or `overwrite`",
                    ))
                }
            },
            repository_settings,
            registry_id,
            registry_endpoint,
            aws_region,
            platforms,
            platform_hosts,
            build_platforms,
            public_catalog,
            warnings,
            scan,
            supply,
            also_push_to,
            replication_timeout,
        })
    }
}

/// `compression` and `compression-level`. zstd needs an OCI manifest, which the daemon's
/// pusher does not write for an image of the classic store (it gzips into Docker schema 2).
fn parse_compression(raw: &Raw<'_>, push_engine: PushEngine) -> Result<Compression, InputError> {
    let name = raw.get("compression").to_ascii_lowercase();
    if !Compression::NAMES.contains(&name.as_str()) {
        return Err(InputError::invalid(
            "compression",
            &raw.get("compression"),
            format!(
                "expected {}",
                Compression::NAMES.map(|n| format!("`{n}`")).join(" or ")
            ),
        ));
    }
    let level_text = raw.optional("compression-level");
    let level = match &level_text {
        Some(text) => Some(text.parse::<u32>().map_err(|_| {
            InputError::invalid("compression-level", text, "expected a whole number")
        })?),
        None => None,
    };
    let compression = Compression::new(&name, level).map_err(|reason| {
        InputError::invalid(
            "compression-level",
            level_text.as_deref().unwrap_or_default(),
            reason,
        )
    })?;
    if matches!(compression, Compression::Zstd { .. }) && push_engine == PushEngine::Daemon {
        return Err(InputError::invalid(
            "compression",
            &name,
            "zstd layers need an OCI manifest, and `push-engine: daemon` pushes an image of \
             the classic store as gzip in Docker schema 2; use `push-engine: auto` (the \
             default) or `compression: gzip`",
        ));
    }
    Ok(compression)
}

/// The `tags` entries with their templates filled from `context`. An entry whose
/// placeholder has no value in this event is dropped with an info line; an unknown
/// placeholder, or nothing left, is an error.
fn parse_tags(value: &str, context: &Context) -> Result<Vec<String>, InputError> {
    let mut tags: Vec<String> = Vec::new();
    let mut dropped = Vec::new();
    for entry in value
        .split([',', '\n'])
        .map(str::trim)
        .filter(|t| !t.is_empty())
    {
        let template =
            Template::parse(entry).map_err(|reason| InputError::invalid("tags", entry, reason))?;
        let tag = match template.render(context) {
            Rendered::Tag(tag) => tag,
            Rendered::Dropped { missing } => {
                tracing::info!(
                    "tag `{entry}` left out: `{{{{{}}}}}` has no value for {}",
                    missing.name(),
                    context.event_description()
                );
                dropped.push(entry);
                continue;
            }
        };
        validate::tag(&tag).map_err(|reason| {
            let reason = if template.has_placeholders() {
                format!("it gives `{tag}` here, and {reason}")
            } else {
                reason
            };
            InputError::invalid("tags", entry, reason)
        })?;
        if !tags.contains(&tag) {
            tags.push(tag);
        }
    }
    if tags.is_empty() {
        let reason = if dropped.is_empty() {
            "no tags given; list at least one".to_string()
        } else {
            format!(
                "no tag is left for {}: every entry needs a value this event lacks; add one \
                 that every event has, such as `sha-{{{{sha}}}}`",
                context.event_description()
            )
        };
        return Err(InputError::invalid("tags", value, reason));
    }
    Ok(tags)
}

/// `id=NAME,src=PATH` or `id=NAME,env=VAR`, one per line. A file must exist now, so a
/// typo fails before anything else happens; values are read just before the build.
fn parse_secrets(text: &str, workdir: &Path) -> Result<Vec<SecretSpec>, InputError> {
    let mut secrets: Vec<SecretSpec> = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let bad = |reason: &str| InputError::invalid("secrets", line, reason);
        let mut id = None;
        let mut source = None;
        for field in line.split(',').map(str::trim) {
            let Some((key, value)) = field.split_once('=') else {
                return Err(bad("expected `id=NAME,src=PATH` or `id=NAME,env=VAR`"));
            };
            match key.trim() {
                "id" => id = Some(value.trim().to_string()),
                "src" | "source" => {
                    let path = workdir.join(value.trim());
                    if !path.is_file() {
                        return Err(bad(&format!(
                            "the secret file {} does not exist",
                            path.display()
                        )));
                    }
                    source = Some(SecretSource::File(path));
                }
                "env" => source = Some(SecretSource::Env(value.trim().to_string())),
                other => return Err(bad(&format!("unknown key `{other}`; use id, src or env"))),
            }
        }
        let id = id
            .filter(|id| {
                !id.is_empty()
                    && id
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
            })
            .ok_or_else(|| bad("a secret needs an `id` of letters, digits, `_`, `-` or `.`"))?;
        let source = source.ok_or_else(|| bad("a secret needs `src=PATH` or `env=VAR`"))?;
        if secrets.iter().any(|s| s.id == id) {
            return Err(bad(&format!("secret id `{id}` is given twice")));
        }
        secrets.push(SecretSpec { id, source });
    }
    Ok(secrets)
}

fn parse_cache_from(text: &str) -> Result<Vec<String>, InputError> {
    text.split([',', '\n'])
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .map(|reference| {
            if reference.chars().any(char::is_whitespace) || reference.starts_with(['-', '/']) {
                Err(InputError::invalid(
                    "cache-from",
                    reference,
                    "expected an image reference",
                ))
            } else {
                Ok(reference.to_string())
            }
        })
        .collect()
}

fn parse_encryption(raw: &Raw<'_>) -> Result<Encryption, InputError> {
    let kind = raw.get("encryption-type");
    let key = raw.optional("kms-key");
    match (kind.to_ascii_uppercase().as_str(), key) {
        ("AES256", None) => Ok(Encryption::Aes256),
        ("AES256", Some(key)) => Err(InputError::invalid(
            "kms-key",
            &key,
            "a KMS key needs `encryption-type: KMS` (it is `AES256`)",
        )),
        ("KMS", key) => Ok(Encryption::Kms { key }),
        _ => Err(InputError::invalid(
            "encryption-type",
            &kind,
            "expected `AES256` or `KMS`",
        )),
    }
}

/// A policy input is a file path, or inline JSON or YAML. Inline text is recognised by
/// its shape (a `{` or a `key:` line); anything else must name a readable file.
fn parse_policy(raw: &Raw<'_>, name: &str, workdir: &Path) -> Result<Option<Policy>, InputError> {
    let Some(value) = raw.optional(name) else {
        return Ok(None);
    };
    let looks_inline = value.starts_with('{') || value.contains('\n') || value.contains(": ");
    let (text, source) = if looks_inline {
        (value.clone(), "inline".to_string())
    } else {
        let path = workdir.join(&value);
        let text = std::fs::read_to_string(&path).map_err(|e| {
            InputError::invalid(
                name,
                &value,
                format!(
                    "not inline JSON or YAML, and the file {} cannot be read: {e}",
                    path.display()
                ),
            )
        })?;
        (text, path.display().to_string())
    };
    // JSON is (nearly) a subset of YAML, so one parser serves both.
    let json: serde_json::Value = serde_norway::from_str(&text)
        .map_err(|e| InputError::invalid(name, &value, format!("not valid JSON or YAML: {e}")))?;
    check_policy_shape(name, &json).map_err(|reason| InputError::invalid(name, &value, reason))?;
    Ok(Some(Policy { json, source }))
}

fn check_policy_shape(name: &str, json: &serde_json::Value) -> Result<(), String> {
    let object = json
        .as_object()
        .ok_or("a policy is a JSON object (a YAML mapping)")?;
    match name {
        "lifecycle-policy" => match object.get("rules") {
            Some(serde_json::Value::Array(rules)) if !rules.is_empty() => Ok(()),
            _ => Err("a lifecycle policy needs a non-empty `rules` list".into()),
        },
        _ => match object.get("Statement") {
            Some(serde_json::Value::Array(_) | serde_json::Value::Object(_)) => Ok(()),
            _ => Err("a repository policy needs a `Statement`".into()),
        },
    }
}

#[cfg(test)]
mod tests;
