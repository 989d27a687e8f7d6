//! A platform (`os/arch[/variant]`), normalised as containerd's `platforms` package
//! normalises it (so `linux/arm64/v8` and `linux/aarch64` are both `linux/arm64`): the
//! one type for the `platforms` input, an engine's platform, a built image's, and an
//! index entry's, so two spellings of one platform are always equal.

use std::fmt;

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

    /// The platform named by parts, as an image config, an index entry or `docker info`
    /// (`OSType`, `Architecture`: `linux`, `x86_64`) give them, an empty variant being
    /// none; normalised, and `None` when it names no known platform (an attestation's
    /// `unknown/unknown`).
    pub fn from_parts(os: &str, architecture: &str, variant: Option<&str>) -> Option<Self> {
        let text = match variant.filter(|v| !v.is_empty()) {
            Some(variant) => format!("{os}/{architecture}/{variant}"),
            None => format!("{os}/{architecture}"),
        };
        Self::parse(&text).ok()
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

    /// Parts as an image config or an index entry give them are normalised as text is;
    /// an empty variant is none, and an attestation's `unknown/unknown` is no platform.
    #[test]
    fn parts_normalise_as_text_does() {
        let parts =
            |os, arch, variant| Platform::from_parts(os, arch, variant).map(|p| p.to_string());
        assert_eq!(
            parts("linux", "arm64", Some("v8")).as_deref(),
            Some("linux/arm64")
        );
        assert_eq!(
            parts("linux", "x86_64", None).as_deref(),
            Some("linux/amd64")
        );
        assert_eq!(
            parts("linux", "amd64", Some("")).as_deref(),
            Some("linux/amd64")
        );
        assert_eq!(parts("linux", "arm", None).as_deref(), Some("linux/arm/v7"));
        assert_eq!(
            parts("linux", "arm", Some("v6")).as_deref(),
            Some("linux/arm/v6")
        );
        assert_eq!(parts("unknown", "unknown", None), None);
        assert_eq!(parts("", "", None), None);
    }
}
