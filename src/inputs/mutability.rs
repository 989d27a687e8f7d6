//! `image-tag-mutability` and `image-tag-mutability-exclusions`: ECR's four tag
//! mutability settings, and the wildcard filters the two `*_WITH_EXCLUSION` ones take,
//! checked as ECR checks them (`ImageTagMutabilityExclusionFilter`: 1 to 5 filters, each
//! `[0-9a-zA-Z._*-]{1,128}`).

use super::{InputError, Raw, TagMutability};

const MUTABILITY: &str = "image-tag-mutability";
const EXCLUSIONS: &str = "image-tag-mutability-exclusions";

/// ECR's limits on exclusion filters.
pub const MAX_FILTERS: usize = 5;
pub const MAX_FILTER_LEN: usize = 128;

/// The setting and its filters (empty unless the setting is a `*_WITH_EXCLUSION` one).
pub(super) fn parse(raw: &Raw<'_>) -> Result<(TagMutability, Vec<String>), InputError> {
    let name = raw.get(MUTABILITY);
    let mutability = TagMutability::parse(&name).ok_or_else(|| {
        InputError::invalid(
            MUTABILITY,
            &name,
            format!("expected {}", names(&TagMutability::ALL)),
        )
    })?;
    let text = raw.get(EXCLUSIONS);
    let filters =
        parse_filters(&text).map_err(|reason| InputError::invalid(EXCLUSIONS, &text, reason))?;
    match (mutability.has_exclusions(), filters.is_empty()) {
        (true, true) => Err(InputError::invalid(
            MUTABILITY,
            &name,
            format!(
                "{} needs the tags it excludes: list 1 to {MAX_FILTERS} wildcard filters in \
                 `{EXCLUSIONS}`, e.g. `latest` or `dev-*`",
                mutability.as_str()
            ),
        )),
        (false, false) => Err(InputError::invalid(
            EXCLUSIONS,
            &text,
            format!(
                "exclusion filters apply only with `{MUTABILITY}: IMMUTABLE_WITH_EXCLUSION` or \
                 `MUTABLE_WITH_EXCLUSION` (it is `{}`): set one of those, or remove this input",
                mutability.as_str()
            ),
        )),
        _ => Ok((mutability, filters)),
    }
}

/// Filters separated by commas or newlines, trimmed, duplicates dropped in order; each
/// checked against ECR's pattern, and 5 at most.
pub fn parse_filters(text: &str) -> Result<Vec<String>, String> {
    let mut filters: Vec<String> = Vec::new();
    for filter in text
        .split([',', '\n'])
        .map(str::trim)
        .filter(|f| !f.is_empty())
    {
        check_filter(filter)?;
        if !filters.iter().any(|f| f == filter) {
            filters.push(filter.to_string());
        }
    }
    if filters.len() > MAX_FILTERS {
        return Err(format!(
            "{} filters given; ECR allows 1 to {MAX_FILTERS} per repository (a `*` in one \
             filter can cover several tags, e.g. `dev-*`)",
            filters.len()
        ));
    }
    Ok(filters)
}

/// One filter: `[0-9a-zA-Z._*-]{1,128}`, `*` matching any run of characters.
fn check_filter(filter: &str) -> Result<(), String> {
    let length = filter.chars().count();
    if length > MAX_FILTER_LEN {
        return Err(format!(
            "filter `{}…` has {length} characters; ECR allows at most {MAX_FILTER_LEN}",
            filter.chars().take(20).collect::<String>()
        ));
    }
    if let Some(bad) = filter
        .chars()
        .find(|&c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '*')))
    {
        let shown = if bad.is_whitespace() {
            "white space".to_string()
        } else {
            format!("`{bad}`")
        };
        return Err(format!(
            "filter `{filter}` has {shown}, which ECR does not allow: a filter is letters, \
             digits, `.`, `_`, `-` and the wildcard `*`"
        ));
    }
    Ok(())
}

fn names(all: &[TagMutability]) -> String {
    let quoted: Vec<String> = all.iter().map(|m| format!("`{}`", m.as_str())).collect();
    match quoted.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
        _ => quoted.join(""),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Commas and newlines separate filters; blanks and duplicates go.
    #[test]
    fn filters_split_on_commas_and_newlines() {
        assert_eq!(
            parse_filters("latest, dev-*\nrelease-*.rc,latest\n\n").unwrap(),
            ["latest", "dev-*", "release-*.rc"]
        );
        assert_eq!(parse_filters(" \n , ").unwrap(), Vec::<String>::new());
    }

    /// ECR's pattern `[0-9a-zA-Z._*-]{1,128}` and its limit of 5 filters.
    #[test]
    fn filters_follow_ecrs_pattern_and_limit() {
        for good in ["*", "a", "v1.2_3-rc*", "*-SNAPSHOT", &"x".repeat(128)] {
            assert!(parse_filters(good).is_ok(), "{good}");
        }
        for (bad, reason) in [
            ("dev/*", "`/`"),
            ("v?", "`?`"),
            ("a b", "white space"),
            ("ünï", "`ü`"),
            ("tag:1", "`:`"),
        ] {
            let err = parse_filters(bad).unwrap_err();
            assert!(err.contains(reason) && err.contains(bad), "{bad}: {err}");
        }
        let long = parse_filters(&"y".repeat(129)).unwrap_err();
        assert!(long.contains("129 characters"), "{long}");
        assert!(parse_filters("a,b,c,d,e").is_ok());
        let six = parse_filters("a,b,c,d,e,f").unwrap_err();
        assert!(six.contains("6 filters") && six.contains("1 to 5"), "{six}");
        // Duplicates count once.
        assert!(parse_filters("a,b,c,d,e,a").is_ok());
    }

    #[test]
    fn names_lists_every_setting() {
        assert_eq!(
            names(&TagMutability::ALL),
            "`MUTABLE`, `IMMUTABLE`, `MUTABLE_WITH_EXCLUSION` or `IMMUTABLE_WITH_EXCLUSION`"
        );
    }
}
