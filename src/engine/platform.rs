//! Which platforms an engine runs natively, and how it runs the others: its own platform
//! comes from `docker info` (`OSType`, `Architecture`); a foreign one runs only through a
//! QEMU binfmt handler in the engine host's kernel. The action installs no emulator, it
//! only says, before building, what each build will run on.

use std::path::Path;

use crate::platform::Platform;

/// Where the kernel lists its binfmt handlers (`binfmt_misc`).
pub const BINFMT_MISC_DIR: &str = "/proc/sys/fs/binfmt_misc";

/// How an engine runs a platform's `RUN` steps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Execution {
    /// The engine's own platform (or one its CPU runs as well, as 386 on amd64).
    Native,
    /// Under QEMU: the local kernel has an enabled handler.
    Emulated { handler: String },
    /// Foreign, and the local kernel has no enabled handler for it: `RUN` steps fail.
    NoEmulator { handler: String },
    /// Foreign, and the engine's kernel cannot be inspected from here: a remote engine,
    /// or `binfmt_misc` not mounted where the action runs (inside a job container).
    Unknown,
}

impl Execution {
    /// How `engine_platform`'s engine (reached at `host`) runs `wanted`; `binfmt_dir` is
    /// [`BINFMT_MISC_DIR`] outside tests.
    pub fn of(
        wanted: &Platform,
        engine_platform: Option<&Platform>,
        host: &str,
        binfmt_dir: &Path,
    ) -> Self {
        let native = engine_platform.is_some_and(|own| {
            own.os == wanted.os
                && (own.architecture == wanted.architecture
                    || matches!(
                        (own.architecture.as_str(), wanted.architecture.as_str()),
                        ("amd64", "386") | ("arm64", "arm")
                    ))
        });
        if native {
            return Self::Native;
        }
        let handler = format!("qemu-{}", qemu_name(&wanted.architecture));
        // A unix socket is an engine on this machine's kernel; a tcp one may not be. In
        // a container, binfmt_misc is usually not mounted (no `status` file): unknown.
        if !host.starts_with("unix://") || !binfmt_dir.join("status").exists() {
            return Self::Unknown;
        }
        let enabled = std::fs::read_to_string(binfmt_dir.join(&handler))
            .is_ok_and(|text| text.lines().next() == Some("enabled"));
        if enabled {
            Self::Emulated { handler }
        } else {
            Self::NoEmulator { handler }
        }
    }

    /// For the log and the summary: `native`, `QEMU (qemu-aarch64)`, …
    pub fn describe(&self) -> String {
        match self {
            Self::Native => "native".into(),
            Self::Emulated { handler } => format!("emulated by QEMU ({handler})"),
            Self::NoEmulator { handler } => format!(
                "not native, and no QEMU handler `{handler}` is enabled on this machine: `RUN` \
                 steps will fail (install qemu-user-static and binfmt-support, or run \
                 `docker run --privileged --rm tonistiigi/binfmt --install all`, or name a \
                 native engine in `platform-hosts`)"
            ),
            Self::Unknown => {
                "not native; it builds only if that engine's host has a QEMU binfmt handler".into()
            }
        }
    }
}

/// QEMU's name for a Go architecture (`qemu-<name>` is the binfmt handler).
fn qemu_name(architecture: &str) -> &str {
    match architecture {
        "amd64" => "x86_64",
        "arm64" => "aarch64",
        "386" => "i386",
        "mips64le" => "mips64el",
        "mipsle" => "mipsel",
        "loong64" => "loongarch64",
        other => other,
    }
}

/// The engine's own platform from `docker info`; `None` when it does not say.
pub async fn engine_platform(docker: &bollard::Docker) -> Option<Platform> {
    let info = docker.info().await.ok()?;
    Platform::from_parts(&info.os_type?, &info.architecture?, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn platform(text: &str) -> Platform {
        Platform::parse(text).unwrap()
    }

    /// The engine's own platform is native; a foreign one is emulated only when the
    /// handler file says `enabled`; a remote engine's kernel, or one whose `binfmt_misc` is
    /// not mounted here, is not guessed at.
    #[test]
    fn foreign_platforms_need_an_enabled_handler() {
        let dir = tempfile::tempdir().unwrap();
        let unmounted = Execution::of(
            &platform("linux/arm64"),
            Platform::from_parts("linux", "x86_64", None).as_ref(),
            "unix:///var/run/docker.sock",
            dir.path(),
        );
        assert_eq!(
            unmounted,
            Execution::Unknown,
            "binfmt_misc not mounted here"
        );
        std::fs::write(dir.path().join("status"), "enabled\n").unwrap();
        let amd64 = platform("linux/x86_64");
        let arm64 = platform("linux/arm64");
        let local = "unix:///var/run/docker.sock";
        assert_eq!(
            Execution::of(&amd64, Some(&amd64), local, dir.path()),
            Execution::Native
        );
        assert_eq!(
            Execution::of(&platform("linux/386"), Some(&amd64), local, dir.path()),
            Execution::Native
        );
        let missing = Execution::of(&arm64, Some(&amd64), local, dir.path());
        assert!(
            matches!(missing, Execution::NoEmulator { .. }),
            "{missing:?}"
        );
        std::fs::write(dir.path().join("qemu-aarch64"), "disabled\n").unwrap();
        let disabled = Execution::of(&arm64, Some(&amd64), local, dir.path());
        assert!(matches!(disabled, Execution::NoEmulator { .. }));
        std::fs::write(dir.path().join("qemu-aarch64"), "enabled\nflags: PF\n").unwrap();
        assert_eq!(
            Execution::of(&arm64, Some(&amd64), local, dir.path()),
            Execution::Emulated {
                handler: "qemu-aarch64".into()
            }
        );
        assert_eq!(
            Execution::of(&arm64, Some(&amd64), "tcp://far:2376", dir.path()),
            Execution::Unknown
        );
    }
}
