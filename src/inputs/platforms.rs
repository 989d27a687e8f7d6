//! `platforms` (and its deprecated alias `platform`) and `platform-hosts`: target
//! platforms as `os/arch[/variant]` ([`Platform`], normalised as containerd does), and
//! the engine that builds a platform natively.

use super::InputError;
pub use crate::platform::Platform;

/// Splits a list on commas and newlines, dropping empty entries.
fn entries(text: &str) -> impl Iterator<Item = &str> {
    text.split([',', '\n'])
        .map(str::trim)
        .filter(|e| !e.is_empty())
}

/// Parses `platforms` (or the alias named `input`): every entry valid, none twice after
/// normalisation, in the order given.
pub fn parse_platforms(input: &str, text: &str) -> Result<Vec<Platform>, InputError> {
    let mut platforms: Vec<Platform> = Vec::new();
    for entry in entries(text) {
        let platform =
            Platform::parse(entry).map_err(|reason| InputError::invalid(input, entry, reason))?;
        if platforms.contains(&platform) {
            return Err(InputError::invalid(
                input,
                entry,
                format!("{platform} is listed twice (names are normalised as containerd does)"),
            ));
        }
        platforms.push(platform);
    }
    Ok(platforms)
}

/// `platforms`, or the deprecated `platform` with a warning; not both.
pub(super) fn parse_platform_inputs(
    raw: &super::Raw<'_>,
) -> Result<(Vec<Platform>, Vec<String>), InputError> {
    match (raw.optional("platforms"), raw.optional("platform")) {
        (Some(_), Some(old)) => Err(InputError::invalid(
            "platform",
            &old,
            "`platform` is the deprecated name of `platforms`; give only `platforms`",
        )),
        (None, Some(old)) => Ok((
            parse_platforms("platform", &old)?,
            vec!["input `platform` is deprecated: use `platforms` (same format, a list)".into()],
        )),
        (list, None) => Ok((
            parse_platforms("platforms", &list.unwrap_or_default())?,
            Vec::new(),
        )),
    }
}

/// Parses `build-platforms`: this matrix leg's share of `platforms` (empty: all of them,
/// built here). A share splits a multi-platform image across runners, so it needs two
/// or more `platforms`, each share platform among them, and a push (the legs meet in
/// the repository).
pub fn parse_build_platforms(
    text: &str,
    platforms: &[Platform],
    push: bool,
) -> Result<Vec<Platform>, InputError> {
    const INPUT: &str = "build-platforms";
    let share = parse_platforms(INPUT, text)?;
    if share.is_empty() {
        return Ok(share);
    }
    if platforms.len() < 2 {
        return Err(InputError::invalid(
            INPUT,
            text.trim(),
            "a share of the platforms needs two or more `platforms` (the whole image, \
             the same in every leg); with one platform, leave `build-platforms` out",
        ));
    }
    if let Some(stray) = share.iter().find(|p| !platforms.contains(p)) {
        return Err(InputError::invalid(
            INPUT,
            text.trim(),
            format!(
                "{stray} is not one of `platforms` ({}); `platforms` lists the whole image, \
                 the same in every leg, and `build-platforms` this leg's share of it",
                platforms
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(",")
            ),
        ));
    }
    if !push {
        return Err(InputError::invalid(
            INPUT,
            text.trim(),
            "the legs of a shared build meet in the repository, so `push` must be true",
        ));
    }
    Ok(share)
}

/// One `platform-hosts` line: the platform built on the engine at `host`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlatformHost {
    pub platform: Platform,
    /// A `DOCKER_HOST` value: `unix://…`, `tcp://…` (TLS as for `DOCKER_HOST`) or
    /// `https://…`.
    pub host: String,
}

/// Parses `platform-hosts`: `PLATFORM=DOCKER_HOST` per line, each platform one of
/// `platforms` and named once.
pub fn parse_platform_hosts(
    text: &str,
    platforms: &[Platform],
) -> Result<Vec<PlatformHost>, InputError> {
    const INPUT: &str = "platform-hosts";
    let mut hosts: Vec<PlatformHost> = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let Some((platform, host)) = line.split_once('=') else {
            return Err(InputError::invalid(
                INPUT,
                line,
                "expected `PLATFORM=DOCKER_HOST`, e.g. `linux/arm64=tcp://arm-builder:2376`",
            ));
        };
        let (platform, host) = (platform.trim(), host.trim());
        let parsed =
            Platform::parse(platform).map_err(|reason| InputError::invalid(INPUT, line, reason))?;
        if !platforms.contains(&parsed) {
            return Err(InputError::invalid(
                INPUT,
                line,
                format!("{parsed} is not one of `platforms`; add it there or remove this line"),
            ));
        }
        if hosts.iter().any(|h| h.platform == parsed) {
            return Err(InputError::invalid(
                INPUT,
                line,
                format!("{parsed} is given a host twice"),
            ));
        }
        let schemes = ["unix://", "tcp://", "http://", "https://"];
        if !schemes.iter().any(|s| host.starts_with(s)) || host.len() <= "unix://".len() {
            return Err(InputError::invalid(
                INPUT,
                line,
                "the host is a DOCKER_HOST value: unix:///path, tcp://host:port or \
                 https://host:port",
            ));
        }
        hosts.push(PlatformHost {
            platform: parsed,
            host: host.to_string(),
        });
    }
    Ok(hosts)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The list splits on commas and newlines; a platform named twice, even in two
    /// spellings, is an error naming the input.
    #[test]
    fn duplicates_after_normalisation_are_errors() {
        let list = parse_platforms("platforms", "linux/amd64,\nlinux/arm64 , ").unwrap();
        assert_eq!(list.len(), 2);
        let err = parse_platforms("platforms", "linux/arm64,linux/arm64/v8").unwrap_err();
        assert!(err.to_string().contains("listed twice"), "{err}");
        assert!(err.to_string().contains("input `platforms`"), "{err}");
    }

    /// `build-platforms` is a share of `platforms`: each of its platforms listed there,
    /// two or more platforms in all, and a push; empty means all, built here.
    #[test]
    fn build_platforms_are_a_share_of_platforms() {
        let platforms = parse_platforms("platforms", "linux/amd64,linux/arm64").unwrap();
        let share = parse_build_platforms("linux/arm64/v8", &platforms, true).unwrap();
        assert_eq!(share, vec![Platform::parse("linux/arm64").unwrap()]);
        assert!(parse_build_platforms("", &platforms, true)
            .unwrap()
            .is_empty());
        for (text, list, push, why) in [
            (
                "linux/s390x",
                "linux/amd64,linux/arm64",
                true,
                "not one of `platforms`",
            ),
            (
                "linux/amd64",
                "linux/amd64",
                true,
                "two or more `platforms`",
            ),
            (
                "linux/amd64",
                "linux/amd64,linux/arm64",
                false,
                "`push` must be true",
            ),
            (
                "linux/amd64,linux/amd64",
                "linux/amd64,linux/arm64",
                true,
                "listed twice",
            ),
        ] {
            let platforms = parse_platforms("platforms", list).unwrap();
            let err = parse_build_platforms(text, &platforms, push).unwrap_err();
            assert!(err.to_string().contains(why), "{text}: {err}");
            assert!(err.to_string().contains("input `build-platforms`"), "{err}");
        }
    }

    /// A host line names one of `platforms`, once, with a `DOCKER_HOST` value.
    #[test]
    fn platform_hosts_name_listed_platforms() {
        let platforms = parse_platforms("platforms", "linux/amd64,linux/arm64").unwrap();
        let hosts = parse_platform_hosts("linux/arm64/v8 = tcp://arm:2376\n", &platforms).unwrap();
        assert_eq!(hosts[0].platform.to_string(), "linux/arm64");
        assert_eq!(hosts[0].host, "tcp://arm:2376");
        for bad in [
            "linux/s390x=tcp://x:1",
            "linux/arm64",
            "linux/arm64=arm:2376",
            "linux/arm64=tcp://a:1\nlinux/aarch64=tcp://b:1",
        ] {
            assert!(parse_platform_hosts(bad, &platforms).is_err(), "{bad}");
        }
    }
}
