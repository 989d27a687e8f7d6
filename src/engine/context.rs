//! The build context as a streamed tar, built the way `docker build` builds it
//! (docker/cli `cli/command/image/build.go` and `build/context.go`, moby
//! `pkg/archive.TarWithOptions`), so that a build here sees the same files as a
//! build on a developer's machine. The tar is the classic builder's request body;
//! BuildKit builds get the same directory, ignore rules and Dockerfile
//! ([`PreparedContext::context_dir`], [`PreparedContext::matcher`],
//! [`PreparedContext::dockerfile_path`]) over their session instead
//! (`engine::buildkit`'s `FileSync`).
//!
//! [`prepare`] does every cheap check (paths, ignore file) so bad input fails
//! before any AWS call; [`PreparedContext::stream`] then walks the directory on a
//! blocking thread and hands the tar over in bounded chunks, so a context of any
//! size costs a fixed amount of memory.
//!
//! Where this differs from the CLI on purpose: an unreadable, vanished or shrinking
//! file fails the build with its path (older CLIs logged it and sent a corrupt tar);
//! FIFOs and devices are skipped with a warning instead of being sent; hard links
//! are sent as separate regular files; security xattrs are not sent.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use super::dockerignore::{DockerignoreError, IgnoreLine, PatternMatcher};

mod walk;
use walk::unix_mtime;

/// Size of each chunk handed to the HTTP upload.
pub const CHUNK_SIZE: usize = 64 * 1024;
/// Chunks that may wait in the channel; with the one being filled and the one being
/// uploaded, this bounds the context's memory to about 640 KiB.
pub const CHANNEL_CAPACITY: usize = 8;

const DOCKERIGNORE: &str = ".dockerignore";
/// Mode the CLI gives the files it adds itself.
const GENERATED_FILE_MODE: u32 = 0o600;

/// Why the build context cannot be prepared or sent.
#[derive(Debug, thiserror::Error)]
pub enum ContextError {
    #[error("build context {path} does not exist or cannot be resolved: {source}")]
    ContextMissing {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("build context {path} is not a directory")]
    ContextNotDirectory { path: PathBuf },
    #[error("Dockerfile {path} does not exist or cannot be resolved: {source}")]
    DockerfileMissing {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("Dockerfile {path} is a directory, not a file")]
    DockerfileIsDirectory { path: PathBuf },
    #[error("Dockerfile {path} is not a regular file")]
    DockerfileNotRegularFile { path: PathBuf },
    #[error("cannot read Dockerfile {path}: {source}")]
    DockerfileUnreadable {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot read ignore file {path}: {source}")]
    IgnoreFileUnreadable {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("invalid ignore file {path}: {source}")]
    IgnoreFileInvalid {
        path: PathBuf,
        #[source]
        source: DockerignoreError,
    },
    #[error("the build context cannot keep {pattern}, which Docker adds to keep the build files: {source}")]
    BuildFilePattern {
        pattern: String,
        #[source]
        source: DockerignoreError,
    },
    #[error("cannot read {path} in the build context: {source}")]
    Unreadable {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path} changed while it was being sent in the build context")]
    FileChanged { path: PathBuf },
    #[error("{path} cannot be sent over the BuildKit session: its name or link target is not valid UTF-8; rename it or list it in .dockerignore")]
    NameNotUtf8 { path: PathBuf },
    #[error("the build context upload stopped before the tar was complete")]
    ReceiverDropped,
    #[error("cannot write the build context tar: {source}")]
    Write {
        #[source]
        source: io::Error,
    },
}

impl ContextError {
    /// The action input whose value is at fault, for the error the user sees: an
    /// ignore file or a file in the tree belongs to the `context`.
    pub fn input_name(&self) -> &'static str {
        match self {
            Self::DockerfileMissing { .. }
            | Self::DockerfileIsDirectory { .. }
            | Self::DockerfileNotRegularFile { .. }
            | Self::DockerfileUnreadable { .. }
            | Self::BuildFilePattern { .. } => "dockerfile",
            _ => "context",
        }
    }

    /// The file or directory the error is about, if it is about one.
    pub fn path(&self) -> Option<&Path> {
        match self {
            Self::ContextMissing { path, .. }
            | Self::ContextNotDirectory { path }
            | Self::DockerfileMissing { path, .. }
            | Self::DockerfileIsDirectory { path }
            | Self::DockerfileNotRegularFile { path }
            | Self::DockerfileUnreadable { path, .. }
            | Self::IgnoreFileUnreadable { path, .. }
            | Self::IgnoreFileInvalid { path, .. }
            | Self::Unreadable { path, .. }
            | Self::FileChanged { path }
            | Self::NameNotUtf8 { path } => Some(path),
            Self::BuildFilePattern { .. } | Self::ReceiverDropped | Self::Write { .. } => None,
        }
    }
}

/// What was sent, for the log and for tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ContextStats {
    pub files: u64,
    pub directories: u64,
    pub symlinks: u64,
    /// Bytes of regular file content (not counting tar headers).
    pub bytes: u64,
    /// Entries left out by the ignore file; a pruned directory counts once.
    pub excluded: u64,
    /// FIFOs, sockets and devices, which cannot be sent.
    pub skipped_special: u64,
    /// Size of the whole tar stream.
    pub tar_bytes: u64,
    /// Most chunks ever waiting in the channel: at most [`CHANNEL_CAPACITY`].
    pub peak_queued_chunks: usize,
}

/// A Dockerfile that lives outside the context, sent under a generated name.
#[derive(Debug)]
struct OutsideDockerfile {
    content: Vec<u8>,
    mtime: u64,
}

/// A validated context, ready to stream.
#[derive(Debug)]
pub struct PreparedContext {
    context_dir: PathBuf,
    /// The Dockerfile with symlinks resolved.
    dockerfile_path: PathBuf,
    dockerfile_name: String,
    ignore_file: Option<PathBuf>,
    matcher: PatternMatcher,
    outside: Option<OutsideDockerfile>,
}

/// Validates the context and Dockerfile and reads the ignore file, without walking.
/// Relative paths are taken from the current directory.
pub fn prepare(context: &Path, dockerfile: &Path) -> Result<PreparedContext, ContextError> {
    let context_dir = resolve_context(context)?;
    let dockerfile_real = resolve_dockerfile(dockerfile)?;
    let (ignore_file, mut matcher) = read_ignore_file(&context_dir, dockerfile)?;

    let inside_name = dockerfile_real
        .strip_prefix(&context_dir)
        .ok()
        .and_then(|rel| rel.to_str())
        .filter(|rel| !rel.is_empty())
        .map(str::to_owned);
    let (dockerfile_name, outside) = if let Some(name) = inside_name {
        (name, None)
    } else {
        let (name, outside) = read_outside_dockerfile(&dockerfile_real)?;
        (name, Some(outside))
    };

    keep_build_files(
        &mut matcher,
        outside.is_none().then_some(dockerfile_name.as_str()),
    )?;
    Ok(PreparedContext {
        context_dir,
        dockerfile_path: dockerfile_real,
        dockerfile_name,
        ignore_file,
        matcher,
        outside,
    })
}

/// A Dockerfile outside the context (or not nameable in the API's UTF-8) is sent
/// under a name derived from its bytes, as the CLI's `AddDockerfileToBuildContext`
/// does (with a random name there; a content hash keeps our tar reproducible).
fn read_outside_dockerfile(path: &Path) -> Result<(String, OutsideDockerfile), ContextError> {
    let content = fs::read(path).map_err(|source| ContextError::DockerfileUnreadable {
        path: path.to_owned(),
        source,
    })?;
    let mtime = fs::metadata(path).map_or(0, |m| unix_mtime(&m));
    let name = format!(
        ".dockerfile.{}",
        &hex(Sha256::digest(&content).as_slice())[..20]
    );
    Ok((name, OutsideDockerfile { content, mtime }))
}

fn resolve_context(context: &Path) -> Result<PathBuf, ContextError> {
    // The root alone may be a symlink: resolve it once, never again below.
    let real = fs::canonicalize(context).map_err(|source| ContextError::ContextMissing {
        path: context.to_owned(),
        source,
    })?;
    let meta = fs::metadata(&real).map_err(|source| ContextError::ContextMissing {
        path: context.to_owned(),
        source,
    })?;
    if !meta.is_dir() {
        return Err(ContextError::ContextNotDirectory {
            path: context.to_owned(),
        });
    }
    Ok(real)
}

/// The Dockerfile with symlinks resolved, as the CLI's getDockerfileRelPath, so a
/// symlinked Dockerfile that points out of the context is treated as outside.
fn resolve_dockerfile(dockerfile: &Path) -> Result<PathBuf, ContextError> {
    let real = fs::canonicalize(dockerfile).map_err(|source| ContextError::DockerfileMissing {
        path: dockerfile.to_owned(),
        source,
    })?;
    let meta = fs::metadata(&real).map_err(|source| ContextError::DockerfileMissing {
        path: dockerfile.to_owned(),
        source,
    })?;
    if meta.is_dir() {
        return Err(ContextError::DockerfileIsDirectory {
            path: dockerfile.to_owned(),
        });
    }
    if !meta.is_file() {
        return Err(ContextError::DockerfileNotRegularFile {
            path: dockerfile.to_owned(),
        });
    }
    Ok(real)
}

/// `BuildKit`'s `<Dockerfile>.dockerignore` wins over the context's `.dockerignore`.
fn read_ignore_file(
    context_dir: &Path,
    dockerfile: &Path,
) -> Result<(Option<PathBuf>, PatternMatcher), ContextError> {
    let mut specific = std::path::absolute(dockerfile)
        .unwrap_or_else(|_| dockerfile.to_owned())
        .into_os_string();
    specific.push(".dockerignore");
    for candidate in [PathBuf::from(specific), context_dir.join(DOCKERIGNORE)] {
        let content = match fs::read(&candidate) {
            Ok(content) => content,
            Err(err) if err.kind() == io::ErrorKind::NotFound => continue,
            Err(source) => {
                return Err(ContextError::IgnoreFileUnreadable {
                    path: candidate,
                    source,
                })
            }
        };
        return match PatternMatcher::parse(&content) {
            Ok(matcher) => Ok((Some(candidate), matcher)),
            Err(source) => Err(ContextError::IgnoreFileInvalid {
                path: candidate,
                source,
            }),
        };
    }
    Ok((None, PatternMatcher::default()))
}

/// The CLI's `TrimBuildFilesFromExcludes`: if the ignore file would leave out
/// `.dockerignore` or the Dockerfile, an exception for it is appended.
fn keep_build_files(
    matcher: &mut PatternMatcher,
    dockerfile: Option<&str>,
) -> Result<(), ContextError> {
    for path in std::iter::once(DOCKERIGNORE).chain(dockerfile) {
        if matcher.is_excluded(path) {
            let pattern = format!("!{path}");
            matcher
                .push(&IgnoreLine::synthetic(pattern.clone()))
                .map_err(|source| ContextError::BuildFilePattern { pattern, source })?;
        }
    }
    Ok(())
}

impl PreparedContext {
    /// The resolved context directory.
    pub fn context_dir(&self) -> &Path {
        &self.context_dir
    }

    /// The Dockerfile, symlinks resolved: what a BuildKit session serves as its own
    /// directory, wherever it is.
    pub fn dockerfile_path(&self) -> &Path {
        &self.dockerfile_path
    }

    /// The ignore rules the context is sent with (the ignore file's patterns, plus the
    /// exceptions that keep `.dockerignore` and an inside Dockerfile, as the CLI adds).
    pub fn matcher(&self) -> &PatternMatcher {
        &self.matcher
    }

    /// Whether the Dockerfile travels in the tar under a generated name (it lives outside
    /// the context). Only the classic daemon removes such a file from the context again.
    pub fn dockerfile_is_generated(&self) -> bool {
        self.outside.is_some()
    }

    /// The `dockerfile` build parameter of the tar context: a slash path relative to the
    /// context root.
    pub fn dockerfile_name(&self) -> &str {
        &self.dockerfile_name
    }

    /// The ignore file in use, if any.
    pub fn ignore_file(&self) -> Option<&Path> {
        self.ignore_file.as_deref()
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut out, b| {
            let _ = write!(out, "{b:02x}");
            out
        })
}

#[cfg(test)]
mod tests;
