//! ECR Public's catalog data for a repository (`public-description`, `public-about`,
//! `public-usage`), and the architectures and operating systems the ECR Public Gallery
//! shows as badges, derived from the run's `platforms`. The lengths are the API model's
//! (`RepositoryCatalogDataInput`); a text input may name a file in the workspace with a
//! leading `@` (`public-about: '@docs/ABOUT.md'`), read here so a missing or too long
//! file fails before anything is built.

use std::path::Path;

use super::{InputError, Platform};

/// The most characters of `description` (the API model's `RepositoryDescription`).
pub const MAX_DESCRIPTION: usize = 1_024;
/// The most characters of `aboutText` and of `usageText` (markdown).
pub const MAX_MARKDOWN: usize = 25_600;

/// The catalog data the user asked for. A text left out is not touched in an existing
/// repository; the architectures and operating systems follow the platforms built
/// whenever they are known (empty: unknown, not touched).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Catalog {
    /// `description`: the short text in search results.
    pub description: Option<String>,
    /// `aboutText`: markdown.
    pub about: Option<String>,
    /// `usageText`: markdown.
    pub usage: Option<String>,
    /// ECR Public's names: `ARM`, `ARM 64`, `x86`, `x86-64`; each once, in platform order.
    pub architectures: Vec<String>,
    /// `Linux`, `Windows`; each once.
    pub operating_systems: Vec<String>,
}

impl Catalog {
    /// This catalog with the architectures and operating systems of `platforms`: for a
    /// caller that learns them late (no `platforms` input: the engine's own platform).
    #[must_use]
    pub fn for_platforms(&self, platforms: &[Platform]) -> Self {
        let (architectures, operating_systems) = badges(platforms);
        Self {
            architectures,
            operating_systems,
            ..self.clone()
        }
    }

    /// The fields that `current` (the repository's catalog data as ECR returns it)
    /// lacks or holds otherwise, by their API names; empty when nothing is to be put.
    /// Texts the user did not give, and badges not known, never count.
    pub fn differences(&self, current: &Catalog) -> Vec<&'static str> {
        let mut fields = Vec::new();
        for (name, wanted, held) in [
            ("description", &self.description, &current.description),
            ("aboutText", &self.about, &current.about),
            ("usageText", &self.usage, &current.usage),
        ] {
            if wanted.is_some() && wanted != held {
                fields.push(name);
            }
        }
        for (name, wanted, held) in [
            ("architectures", &self.architectures, &current.architectures),
            (
                "operatingSystems",
                &self.operating_systems,
                &current.operating_systems,
            ),
        ] {
            if !wanted.is_empty() && !same_set(wanted, held) {
                fields.push(name);
            }
        }
        fields
    }

    /// What to put so the repository holds this catalog: `current` with every field the
    /// user gave (and the badges, when known) in place of its own, so what the user did
    /// not give is sent back as it was.
    #[must_use]
    pub fn merged_over(&self, current: &Catalog) -> Catalog {
        let pick = |wanted: &Option<String>, held: &Option<String>| wanted.clone().or(held.clone());
        let pick_list = |wanted: &Vec<String>, held: &Vec<String>| {
            if wanted.is_empty() {
                held.clone()
            } else {
                wanted.clone()
            }
        };
        Catalog {
            description: pick(&self.description, &current.description),
            about: pick(&self.about, &current.about),
            usage: pick(&self.usage, &current.usage),
            architectures: pick_list(&self.architectures, &current.architectures),
            operating_systems: pick_list(&self.operating_systems, &current.operating_systems),
        }
    }
}

/// Order does not matter to the gallery, nor does a name given twice.
fn same_set(a: &[String], b: &[String]) -> bool {
    let sorted = |list: &[String]| {
        let mut list = list.to_vec();
        list.sort();
        list.dedup();
        list
    };
    sorted(a) == sorted(b)
}

/// ECR Public's architecture badge for a platform's architecture, if it has one.
pub fn architecture(platform: &Platform) -> Option<&'static str> {
    match platform.architecture.as_str() {
        "amd64" => Some("x86-64"),
        "arm64" => Some("ARM 64"),
        "arm" => Some("ARM"),
        "386" => Some("x86"),
        _ => None,
    }
}

/// ECR Public's operating system badge for a platform's OS, if it has one.
pub fn operating_system(platform: &Platform) -> Option<&'static str> {
    match platform.os.as_str() {
        "linux" => Some("Linux"),
        "windows" => Some("Windows"),
        _ => None,
    }
}

/// The architecture and operating system badges of `platforms`, each once, in order. A
/// platform part ECR Public has no badge for is left out, with a debug line.
pub fn badges(platforms: &[Platform]) -> (Vec<String>, Vec<String>) {
    let mut architectures: Vec<String> = Vec::new();
    let mut systems: Vec<String> = Vec::new();
    for platform in platforms {
        match architecture(platform) {
            Some(name) if !architectures.iter().any(|a| a == name) => {
                architectures.push(name.to_string());
            }
            Some(_) => {}
            None => tracing::debug!(
                "{platform}: ECR Public has no architecture badge for `{}`; left out of \
                 the catalog data",
                platform.architecture
            ),
        }
        match operating_system(platform) {
            Some(name) if !systems.iter().any(|s| s == name) => systems.push(name.to_string()),
            Some(_) => {}
            None => tracing::debug!(
                "{platform}: ECR Public has no operating system badge for `{}`; left out \
                 of the catalog data",
                platform.os
            ),
        }
    }
    (architectures, systems)
}

/// The catalog inputs, with the badges of `platforms`.
pub(super) fn parse(
    raw: &super::Raw<'_>,
    workdir: &Path,
    platforms: &[Platform],
) -> Result<Catalog, InputError> {
    let (architectures, operating_systems) = badges(platforms);
    Ok(Catalog {
        description: text(raw, "public-description", workdir, MAX_DESCRIPTION)?,
        about: text(raw, "public-about", workdir, MAX_MARKDOWN)?,
        usage: text(raw, "public-usage", workdir, MAX_MARKDOWN)?,
        architectures,
        operating_systems,
    })
}

/// One text input: the value itself, or with a leading `@` the file it names (relative
/// to the workspace), at most `max` characters either way.
fn text(
    raw: &super::Raw<'_>,
    input: &str,
    workdir: &Path,
    max: usize,
) -> Result<Option<String>, InputError> {
    let Some(value) = raw.optional(input) else {
        return Ok(None);
    };
    read_text(input, &value, workdir, max).map(Some)
}

/// [`text`] for one value; split out so it is tested without an input map.
pub fn read_text(
    input: &str,
    value: &str,
    workdir: &Path,
    max: usize,
) -> Result<String, InputError> {
    let (text, whence) = match value.strip_prefix('@') {
        Some(name) => {
            let name = name.trim();
            if name.is_empty() {
                return Err(InputError::invalid(
                    input,
                    value,
                    "`@` names a file in the workspace, e.g. `@docs/ABOUT.md`; none is given",
                ));
            }
            let path = workdir.join(name);
            let text = std::fs::read_to_string(&path).map_err(|e| {
                InputError::invalid(
                    input,
                    value,
                    format!(
                        "the file {} cannot be read ({e}): check the path, relative to the \
                         workspace, and that the repository is checked out",
                        path.display()
                    ),
                )
            })?;
            (text, format!("the file {}", path.display()))
        }
        None => (value.to_string(), "it".to_string()),
    };
    let length = text.chars().count();
    if length > max {
        return Err(InputError::invalid(
            input,
            value,
            format!(
                "ECR Public takes at most {max} characters here, and {whence} has {length}: \
                 shorten it"
            ),
        ));
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn platforms(list: &str) -> Vec<Platform> {
        list.split(',')
            .map(|p| Platform::parse(p).unwrap())
            .collect()
    }

    fn strings(list: &[&str]) -> Vec<String> {
        list.iter().map(ToString::to_string).collect()
    }

    /// Each platform maps to ECR Public's badge names, once each, in order; one with no
    /// badge is left out rather than sent under a name the gallery does not know.
    #[test]
    fn platforms_map_to_ecr_public_badges() {
        let (arch, os) = badges(&platforms(
            "linux/amd64,linux/arm64,linux/arm/v7,linux/arm/v6,linux/386,linux/s390x,windows/amd64",
        ));
        assert_eq!(arch, strings(&["x86-64", "ARM 64", "ARM", "x86"]));
        assert_eq!(os, strings(&["Linux", "Windows"]));
        let (arch, os) = badges(&platforms("linux/ppc64le,darwin/arm64"));
        assert_eq!(arch, strings(&["ARM 64"]));
        assert_eq!(os, strings(&["Linux"]));
        assert_eq!(badges(&[]), (Vec::new(), Vec::new()));
    }

    /// A late-known platform fills the badges and keeps the texts.
    #[test]
    fn badges_can_be_filled_in_later() {
        let catalog = Catalog {
            description: Some("d".into()),
            ..Catalog::default()
        };
        let filled = catalog.for_platforms(&platforms("linux/arm64"));
        assert_eq!(filled.description.as_deref(), Some("d"));
        assert_eq!(filled.architectures, strings(&["ARM 64"]));
        assert_eq!(filled.operating_systems, strings(&["Linux"]));
    }

    /// Only the fields the user gave count, badges as sets; the same catalog is no change.
    #[test]
    fn differences_name_the_fields_to_put() {
        let current = Catalog {
            description: Some("old".into()),
            about: Some("# About".into()),
            usage: None,
            architectures: strings(&["ARM 64", "x86-64"]),
            operating_systems: strings(&["Linux"]),
        };
        let same = Catalog {
            about: Some("# About".into()),
            architectures: strings(&["x86-64", "ARM 64"]),
            operating_systems: strings(&["Linux"]),
            ..Catalog::default()
        };
        assert!(same.differences(&current).is_empty());
        assert!(Catalog::default().differences(&current).is_empty());
        let wanted = Catalog {
            description: Some("new".into()),
            usage: Some("docker pull".into()),
            architectures: strings(&["x86-64"]),
            ..Catalog::default()
        };
        assert_eq!(
            wanted.differences(&current),
            ["description", "usageText", "architectures"]
        );
        let emptied = Catalog {
            description: Some(String::new()),
            ..Catalog::default()
        };
        assert_eq!(emptied.differences(&current), ["description"]);
    }

    /// What is put keeps the fields the user left out as ECR had them.
    #[test]
    fn the_put_catalog_keeps_what_was_not_given() {
        let current = Catalog {
            description: Some("old".into()),
            about: Some("# About".into()),
            usage: Some("usage".into()),
            architectures: strings(&["ARM"]),
            operating_systems: strings(&["Linux"]),
        };
        let wanted = Catalog {
            description: Some("new".into()),
            ..Catalog::default()
        };
        let put = wanted.merged_over(&current);
        assert_eq!(put.description.as_deref(), Some("new"));
        assert_eq!(put.about.as_deref(), Some("# About"));
        assert_eq!(put.usage.as_deref(), Some("usage"));
        assert_eq!(put.architectures, strings(&["ARM"]));
        let put = current
            .for_platforms(&platforms("linux/amd64"))
            .merged_over(&current);
        assert_eq!(put.architectures, strings(&["x86-64"]));
    }

    /// `@path` reads a workspace file; a missing or too long one is an input error that
    /// names the input and the value; a plain value is itself, checked the same way.
    #[test]
    fn texts_are_values_or_workspace_files_within_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("docs")).unwrap();
        std::fs::write(dir.path().join("docs/ABOUT.md"), "# App\n\nIt runs.\n").unwrap();
        let read = read_text("public-about", "@docs/ABOUT.md", dir.path(), MAX_MARKDOWN);
        assert_eq!(read.unwrap(), "# App\n\nIt runs.\n");
        assert_eq!(
            read_text("public-about", "plain *text*", dir.path(), MAX_MARKDOWN).unwrap(),
            "plain *text*"
        );

        let missing = read_text("public-usage", "@docs/USAGE.md", dir.path(), MAX_MARKDOWN)
            .unwrap_err()
            .to_string();
        assert!(
            missing.starts_with("invalid value `@docs/USAGE.md` for input `public-usage`: "),
            "{missing}"
        );
        assert!(missing.contains("cannot be read"), "{missing}");

        std::fs::write(dir.path().join("big.md"), "é".repeat(MAX_MARKDOWN + 1)).unwrap();
        let long = read_text("public-about", "@big.md", dir.path(), MAX_MARKDOWN)
            .unwrap_err()
            .to_string();
        assert!(long.contains("for input `public-about`"), "{long}");
        assert!(
            long.contains("at most 25600") && long.contains("25601"),
            "{long}"
        );
        // The limit counts characters, not bytes.
        std::fs::write(dir.path().join("fits.md"), "é".repeat(MAX_MARKDOWN)).unwrap();
        assert!(read_text("public-about", "@fits.md", dir.path(), MAX_MARKDOWN).is_ok());

        let description = "d".repeat(MAX_DESCRIPTION + 1);
        let err = read_text(
            "public-description",
            &description,
            dir.path(),
            MAX_DESCRIPTION,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("for input `public-description`: ECR Public takes at most 1024"));
        assert!(read_text("public-about", "@", dir.path(), MAX_MARKDOWN).is_err());
    }
}
