//! Tag templates: `{{version}}`, `sha-{{sha}}`… filled from the [`Context`].
//!
//! An entry whose placeholder has no value in this event is dropped (the caller logs
//! it); an unknown placeholder is an input error, whatever the event.

use super::Context;

/// Docker's limit on a tag's length.
const MAX_TAG: usize = 128;

/// The placeholders, in the order the error message lists them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placeholder {
    Sha,
    ShaLong,
    Branch,
    Tag,
    Version,
    Major,
    Minor,
    Patch,
    Pr,
    Run,
    Date,
}

impl Placeholder {
    const ALL: [Self; 11] = [
        Self::Sha,
        Self::ShaLong,
        Self::Branch,
        Self::Tag,
        Self::Version,
        Self::Major,
        Self::Minor,
        Self::Patch,
        Self::Pr,
        Self::Run,
        Self::Date,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::Sha => "sha",
            Self::ShaLong => "sha_long",
            Self::Branch => "branch",
            Self::Tag => "tag",
            Self::Version => "version",
            Self::Major => "major",
            Self::Minor => "minor",
            Self::Patch => "patch",
            Self::Pr => "pr",
            Self::Run => "run",
            Self::Date => "date",
        }
    }

    fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.name() == name)
    }

    /// The value in this context, if the event has one.
    fn value(self, context: &Context) -> Option<String> {
        let version = || context.tag.as_deref().and_then(semver_of);
        // A prerelease moves only `{{version}}`, never `{{major}}` or `{{major}}.{{minor}}`.
        let release = || version().filter(|v| v.pre.is_empty());
        match self {
            Self::Sha => context.sha.as_ref().map(|s| s.chars().take(7).collect()),
            Self::ShaLong => context.sha.clone(),
            Self::Branch => context
                .branch
                .as_deref()
                .map(sanitise)
                .filter(|b| !b.is_empty()),
            Self::Tag => context
                .tag
                .as_deref()
                .map(sanitise)
                .filter(|t| !t.is_empty()),
            // `+` (build metadata) is not allowed in a Docker tag; metadata-action uses `-`.
            Self::Version => version().map(|v| v.to_string().replace('+', "-")),
            Self::Major => release().map(|v| v.major.to_string()),
            Self::Minor => release().map(|v| v.minor.to_string()),
            Self::Patch => release().map(|v| v.patch.to_string()),
            Self::Pr => context.pr_number.map(|n| n.to_string()),
            Self::Run => context.run_number.clone(),
            Self::Date => Some(super::utc_date(context.now)),
        }
    }
}

/// A git tag as semver: `v1.4.2` or `1.4.2` (a leading `v` or `V` is dropped); `None`
/// when it is not semver.
fn semver_of(tag: &str) -> Option<semver::Version> {
    let bare = tag.strip_prefix(['v', 'V']).unwrap_or(tag);
    semver::Version::parse(bare).ok()
}

/// A branch or tag name as a Docker tag: each character a tag may not hold becomes `-`,
/// leading `.` and `-` go (a tag cannot start with them), and the result is cut at 128.
pub fn sanitise(name: &str) -> String {
    let replaced: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect();
    replaced
        .trim_start_matches(['.', '-'])
        .chars()
        .take(MAX_TAG)
        .collect()
}

/// One entry of the `tags` input, split into text and placeholders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    pub source: String,
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Placeholder(Placeholder),
}

/// What a template gives in a context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rendered {
    Tag(String),
    /// A placeholder has no value in this event.
    Dropped {
        missing: Placeholder,
    },
}

impl Template {
    /// Parses `sha-{{sha}}`; the error is the reason, for an `InputError`.
    pub fn parse(source: &str) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut rest = source;
        while let Some(open) = rest.find("{{") {
            if open > 0 {
                parts.push(Part::Text(rest[..open].to_string()));
            }
            let after = &rest[open + 2..];
            let close = after
                .find("}}")
                .ok_or_else(|| "a `{{` without its `}}`".to_string())?;
            let name = after[..close].trim();
            let placeholder = Placeholder::parse(name).ok_or_else(|| {
                format!(
                    "unknown placeholder `{{{{{name}}}}}`; the placeholders are {}",
                    Placeholder::ALL
                        .iter()
                        .map(|p| format!("`{{{{{}}}}}`", p.name()))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })?;
            parts.push(Part::Placeholder(placeholder));
            rest = &after[close + 2..];
        }
        if rest.contains("}}") {
            return Err("a `}}` without its `{{`".into());
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_string()));
        }
        Ok(Self {
            source: source.to_string(),
            parts,
        })
    }

    pub fn has_placeholders(&self) -> bool {
        self.parts.iter().any(|p| matches!(p, Part::Placeholder(_)))
    }

    /// Fills the placeholders. A result longer than a tag may be is cut at 128
    /// characters (a long branch name after a prefix).
    pub fn render(&self, context: &Context) -> Rendered {
        let mut tag = String::new();
        for part in &self.parts {
            match part {
                Part::Text(text) => tag.push_str(text),
                Part::Placeholder(placeholder) => match placeholder.value(context) {
                    Some(value) => tag.push_str(&value),
                    None => {
                        return Rendered::Dropped {
                            missing: *placeholder,
                        }
                    }
                },
            }
        }
        if self.has_placeholders() {
            tag = tag.chars().take(MAX_TAG).collect();
        }
        Rendered::Tag(tag)
    }
}
