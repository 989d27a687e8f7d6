//! `platforms` (and its deprecated alias `platform`) and `platform-hosts`: target
//! platforms as `os/arch[/variant]`, normalised as containerd's `platforms` package does
//! (so `linux/arm64/v8` and `linux/aarch64` are both `linux/arm64`), and the engine that
//! builds a platform natively.

use std::fmt;

use super::InputError;

/// A normalised target platform.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    /// Empty when the architecture has none (or its default, as `v8` for arm64).
    pub variant: String,
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.variant.is_empty() {
            write!(f, "{}/{}", self.os, self.architecture)
        } else {
            write!(f, "{}/{}/{}", self.os, self.architecture, self.variant)
        }
    }
}

/// Operating systems Go (and so containerd) knows.
const KNOWN_OS: [&str; 17] = [
    "aix",
    "android",
    "darwin",
    "dragonfly",
    "freebsd",
    "hurd",
    "illumos",
    "ios",
    "js",
    "linux",
    "nacl",
    "netbsd",
    "openbsd",
    "plan9",
    "solaris",
    "windows",
    "zos",
];

/// Architectures Go (and so containerd) knows, after normalisation.
const KNOWN_ARCH: [&str; 24] = [
    "386",
    "amd64",
    "amd64p32",
    "arm",
    "armbe",
    "arm64",
    "arm64be",
    "ppc64",
    "ppc64le",
    "loong64",
    "mips",
    "mipsle",
    "mips64",
    "mips64le",
    "mips64p32",
    "mips64p32le",
    "ppc",
    "riscv",
    "riscv64",
    "s390",
    "s390x",
    "sparc",
    "sparc64",
    "wasm",
];

impl Platform {
    /// Parses `os/arch[/variant]` and normalises it as containerd's `platforms.Parse`
    /// and `Normalize` do.
    pub fn parse(text: &str) -> Result<Self, String> {
        let parts: Vec<&str> = text.split('/').collect();
        if !(2..=3).contains(&parts.len()) || parts.iter().any(|p| p.is_empty()) {
            return Err("expected `os/arch` or `os/arch/variant`, e.g. `linux/amd64`".into());
        }
        if let Some(bad) = parts.iter().find(|p| {
            !p.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        }) {
            return Err(format!(
                "`{bad}` may contain only letters, digits, `_`, `-` and `.`"
            ));
        }
        let os = match parts[0].to_ascii_lowercase().as_str() {
            "macos" => "darwin".to_string(),
            other => other.to_string(),
        };
        if !KNOWN_OS.contains(&os.as_str()) {
            return Err(format!(
                "unknown operating system `{}`: expected one such as `linux` or `windows`",
                parts[0]
            ));
        }
        let (architecture, variant) =
            normalize_arch(parts[1], parts.get(2).copied().unwrap_or_default());
        if !KNOWN_ARCH.contains(&architecture.as_str()) {
            return Err(format!(
                "unknown architecture `{}`: expected one such as `amd64`, `arm64`, `arm`, \
                 `386`, `ppc64le`, `s390x` or `riscv64`",
                parts[1]
            ));
        }
        Ok(Self {
            os,
            architecture,
            variant,
        })
    }

    /// The platform of an engine (`docker info`'s `OSType` and `Architecture`, e.g.
    /// `linux` and `x86_64`), normalised; `None` when it names no known one.
    pub fn of_engine(os: &str, architecture: &str) -> Option<Self> {
        Self::parse(&format!("{os}/{architecture}")).ok()
    }

    /// `linux-arm-v7`: for local tags and file names.
    pub fn slug(&self) -> String {
        self.to_string().replace('/', "-")
    }
}

/// containerd's `normalizeArch`.
fn normalize_arch(arch: &str, variant: &str) -> (String, String) {
    let (arch, variant) = (arch.to_ascii_lowercase(), variant.to_ascii_lowercase());
    match arch.as_str() {
        "i386" => ("386".into(), String::new()),
        "x86_64" | "x86-64" | "amd64" => (
            "amd64".into(),
            if variant == "v1" {
                String::new()
            } else {
                variant
            },
        ),
        "aarch64" | "arm64" => (
            "arm64".into(),
            match variant.as_str() {
                "8" | "v8" | "v8.0" => String::new(),
                "9" | "9.0" | "v9.0" => "v9".into(),
                _ => variant,
            },
        ),
        "armhf" => ("arm".into(), "v7".into()),
        "armel" => ("arm".into(), "v6".into()),
        "arm" => (
            "arm".into(),
            match variant.as_str() {
                "" | "7" => "v7".into(),
                "5" | "6" | "8" => format!("v{variant}"),
                _ => variant,
            },
        ),
        _ => (arch, variant),
    }
}

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

    fn p(text: &str) -> String {
        Platform::parse(text).map_or_else(|e| format!("error: {e}"), |p| p.to_string())
    }

    /// Names normalise as containerd's do: `aarch64` and `arm64/v8` are `arm64`, `x86_64` is
    /// amd64, bare arm is arm/v7, armhf is arm/v7, macos is darwin.
    #[test]
    fn platforms_normalise_as_containerd_does() {
        assert_eq!(p("linux/arm64/v8"), "linux/arm64");
        assert_eq!(p("linux/aarch64"), "linux/arm64");
        assert_eq!(p("Linux/X86_64"), "linux/amd64");
        assert_eq!(p("linux/amd64/v1"), "linux/amd64");
        assert_eq!(p("linux/amd64/v3"), "linux/amd64/v3");
        assert_eq!(p("linux/arm"), "linux/arm/v7");
        assert_eq!(p("linux/arm/6"), "linux/arm/v6");
        assert_eq!(p("linux/armhf"), "linux/arm/v7");
        assert_eq!(p("linux/i386"), "linux/386");
        assert_eq!(p("macos/arm64"), "darwin/arm64");
        assert_eq!(p("linux/arm64/v9.0"), "linux/arm64/v9");
        for bad in [
            "linux",
            "linux/",
            "/amd64",
            "linux/amd64/v8/x",
            "linux/x99",
            "plan10/amd64",
        ] {
            assert!(p(bad).starts_with("error:"), "{bad}");
        }
        assert!(p("linux/am d64").contains("may contain only"));
    }

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
