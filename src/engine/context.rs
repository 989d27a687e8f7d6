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

use std::ffi::OsString;
use std::fs::{self, File, Metadata};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use futures_util::Stream;
use sha2::{Digest as _, Sha256};
use tar::{EntryType, Header};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::dockerignore::{go_lossy, DockerignoreError, IgnoreLine, MatchInfo, PatternMatcher};

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

    /// Starts the walk on a blocking thread; must be called inside a Tokio runtime.
    /// The stream yields the tar in chunks of at most [`CHUNK_SIZE`] and ends with
    /// an `Err` item if the walk fails, so the upload fails too; the handle gives the
    /// typed outcome. Dropping the stream stops the walk with
    /// [`ContextError::ReceiverDropped`].
    pub fn stream(
        self,
    ) -> (
        impl Stream<Item = io::Result<Bytes>> + Send + 'static,
        JoinHandle<Result<ContextStats, ContextError>>,
    ) {
        let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
        let handle = tokio::task::spawn_blocking(move || self.write_tar(tx));
        let stream = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        });
        (stream, handle)
    }

    fn write_tar(self, tx: mpsc::Sender<io::Result<Bytes>>) -> Result<ContextStats, ContextError> {
        let mut tar = TarWriter {
            builder: tar::Builder::new(ChunkWriter::new(tx)),
            stats: ContextStats::default(),
            prepared: &self,
            wrote_dockerignore: false,
        };
        let outcome = tar.write_all_entries();
        let TarWriter {
            mut builder,
            mut stats,
            ..
        } = tar;
        let outcome = outcome.and_then(|()| {
            builder
                .finish()
                .map_err(|e| builder.get_ref().error_for(e))?;
            builder
                .get_mut()
                .send_rest()
                .map_err(|e| builder.get_ref().error_for(e))
        });
        let writer = builder.get_mut();
        stats.tar_bytes = writer.total_bytes;
        stats.peak_queued_chunks = writer.peak_queued;
        match outcome {
            Ok(()) => Ok(stats),
            Err(err) => {
                writer.abort(&err);
                Err(err)
            }
        }
    }
}

/// The walk, writing entries into the tar as it goes.
struct TarWriter<'a> {
    builder: tar::Builder<ChunkWriter>,
    stats: ContextStats,
    prepared: &'a PreparedContext,
    wrote_dockerignore: bool,
}

/// One directory being walked: its remaining entries, sorted as Go's `WalkDir` sorts.
struct Frame {
    abs: PathBuf,
    rel: Option<PathBuf>,
    info: MatchInfo,
    names: std::vec::IntoIter<OsString>,
}

impl TarWriter<'_> {
    fn write_all_entries(&mut self) -> Result<(), ContextError> {
        self.walk()?;
        if let Some(outside) = &self.prepared.outside {
            let name = self.prepared.dockerfile_name.clone();
            self.append_generated(&name, &outside.content, GENERATED_FILE_MODE, outside.mtime)?;
            if !self.wrote_dockerignore {
                let content = format!("{DOCKERIGNORE}\n{name}\n");
                self.append_generated(
                    DOCKERIGNORE,
                    content.as_bytes(),
                    GENERATED_FILE_MODE,
                    outside.mtime,
                )?;
            }
        }
        Ok(())
    }

    /// Depth-first, parents before children, with an explicit stack so a deep tree
    /// cannot overflow the blocking thread's stack.
    fn walk(&mut self) -> Result<(), ContextError> {
        let root = self.prepared.context_dir.clone();
        let mut stack = vec![open_frame(root, None, MatchInfo::default())?];
        while let Some(frame) = stack.last_mut() {
            let Some(name) = frame.names.next() else {
                stack.pop();
                continue;
            };
            let abs = frame.abs.join(&name);
            let rel = frame
                .rel
                .as_ref()
                .map_or_else(|| PathBuf::from(&name), |dir| dir.join(&name));
            if let Some(info) = self.visit(&abs, &rel, &frame.info)? {
                stack.push(open_frame(abs, Some(rel), info)?);
            }
        }
        Ok(())
    }

    /// Sends one entry if it is not ignored; returns the match info to descend with
    /// when it is a directory to walk into.
    fn visit(
        &mut self,
        abs: &Path,
        rel: &Path,
        parent: &MatchInfo,
    ) -> Result<Option<MatchInfo>, ContextError> {
        let meta = fs::symlink_metadata(abs).map_err(|source| unreadable(abs, source))?;
        let rel_text = go_lossy(rel.as_os_str().as_bytes());
        let matcher = &self.prepared.matcher;
        let (excluded, info) = matcher.matches_using_parent_results(&rel_text, parent);
        let is_dir = meta.file_type().is_dir();
        if excluded {
            self.stats.excluded += 1;
            // Walked without a header of its own, as Docker does: the daemon creates
            // the parents of a re-included file itself.
            let descend =
                is_dir && matcher.has_exclusions() && matcher.may_reinclude_below(&rel_text);
            return Ok(descend.then_some(info));
        }
        if self.replace_generated(abs, rel, &meta)? {
            return Ok(None);
        }
        self.append_entry(abs, rel, &meta)?;
        Ok(is_dir.then_some(info))
    }

    /// With the Dockerfile outside the context, the root's `.dockerignore` also
    /// names the generated Dockerfile, so the daemon drops both from the context.
    fn replace_generated(
        &mut self,
        abs: &Path,
        rel: &Path,
        meta: &Metadata,
    ) -> Result<bool, ContextError> {
        let Some(outside) = &self.prepared.outside else {
            return Ok(false);
        };
        if rel.as_os_str() == self.prepared.dockerfile_name.as_str() {
            // A context file with the generated name gives way to the Dockerfile,
            // which is appended after the walk.
            return Ok(true);
        }
        if rel.as_os_str() != DOCKERIGNORE {
            return Ok(false);
        }
        // The CLI keeps the original entry's header and content, and only appends.
        let (mut content, mode, mtime) = if meta.file_type().is_file() {
            let mut content = Vec::new();
            open_checked(abs, meta)?
                .read_to_end(&mut content)
                .map_err(|source| unreadable(abs, source))?;
            (content, meta.mode() & 0o7777, unix_mtime(meta))
        } else {
            let content = DOCKERIGNORE.as_bytes().to_vec();
            (content, GENERATED_FILE_MODE, outside.mtime)
        };
        content.extend_from_slice(format!("\n{}\n", self.prepared.dockerfile_name).as_bytes());
        self.append_generated(DOCKERIGNORE, &content, mode, mtime)?;
        Ok(true)
    }

    fn append_generated(
        &mut self,
        name: &str,
        content: &[u8],
        mode: u32,
        mtime: u64,
    ) -> Result<(), ContextError> {
        let mut header = new_header(EntryType::Regular, mode, mtime);
        header.set_size(content.len() as u64);
        self.builder
            .append_data(&mut header, name, content)
            .map_err(|e| self.builder.get_ref().error_for(e))?;
        self.stats.files += 1;
        self.stats.bytes += content.len() as u64;
        self.wrote_dockerignore |= name == DOCKERIGNORE;
        Ok(())
    }

    fn append_entry(
        &mut self,
        abs: &Path,
        rel: &Path,
        meta: &Metadata,
    ) -> Result<(), ContextError> {
        let kind = meta.file_type();
        if kind.is_dir() {
            self.append_dir(rel, meta)
        } else if kind.is_symlink() {
            self.append_symlink(abs, rel, meta)
        } else if kind.is_file() {
            self.append_file(abs, rel, meta)
        } else {
            let what = if kind.is_fifo() {
                "FIFO"
            } else if kind.is_socket() {
                "socket"
            } else {
                "device"
            };
            tracing::warn!(path = %abs.display(), "skipping {what}: it cannot be sent in a build context");
            self.stats.skipped_special += 1;
            Ok(())
        }
    }

    fn append_dir(&mut self, rel: &Path, meta: &Metadata) -> Result<(), ContextError> {
        let mut header = header_from(meta, EntryType::Directory);
        let mut name = rel.as_os_str().to_owned();
        name.push("/");
        self.builder
            .append_data(&mut header, Path::new(&name), io::empty())
            .map_err(|e| self.builder.get_ref().error_for(e))?;
        self.stats.directories += 1;
        Ok(())
    }

    /// Never followed: the link itself is sent, whatever it points at.
    fn append_symlink(
        &mut self,
        abs: &Path,
        rel: &Path,
        meta: &Metadata,
    ) -> Result<(), ContextError> {
        let target = fs::read_link(abs).map_err(|source| unreadable(abs, source))?;
        let mut header = header_from(meta, EntryType::Symlink);
        let raw = target.as_os_str().as_bytes();
        let written = if raw.len() <= header.as_old().linkname.len() {
            // Literal, so the target's bytes are sent exactly as readlink gave them.
            header
                .set_link_name_literal(raw)
                .and_then(|()| self.builder.append_data(&mut header, rel, io::empty()))
        } else {
            self.builder.append_link(&mut header, rel, &target)
        };
        written.map_err(|e| self.builder.get_ref().error_for(e))?;
        self.stats.symlinks += 1;
        Ok(())
    }

    fn append_file(&mut self, abs: &Path, rel: &Path, meta: &Metadata) -> Result<(), ContextError> {
        let file = open_checked(abs, meta)?;
        let mut header = header_from(meta, EntryType::Regular);
        header.set_size(meta.len());
        let mut reader = SizedReader {
            file,
            remaining: meta.len(),
            failure: None,
        };
        if let Err(err) = self.builder.append_data(&mut header, rel, &mut reader) {
            return Err(match reader.failure.take() {
                Some(ReadFailure::Io(source)) => unreadable(abs, source),
                Some(ReadFailure::Shrunk) => ContextError::FileChanged {
                    path: abs.to_owned(),
                },
                None => self.builder.get_ref().error_for(err),
            });
        }
        self.stats.files += 1;
        self.stats.bytes += meta.len();
        Ok(())
    }
}

fn open_frame(abs: PathBuf, rel: Option<PathBuf>, info: MatchInfo) -> Result<Frame, ContextError> {
    let mut names = fs::read_dir(&abs)
        .and_then(|entries| {
            entries
                .map(|entry| entry.map(|e| e.file_name()))
                .collect::<io::Result<Vec<_>>>()
        })
        .map_err(|source| unreadable(&abs, source))?;
    // Byte order, as Go's os.ReadDir, so the tar is the same on every run.
    names.sort();
    Ok(Frame {
        abs,
        rel,
        info,
        names: names.into_iter(),
    })
}

/// Opens a file seen by lstat as a regular file, refusing it if it was swapped
/// (say, for a symlink out of the context) between the lstat and the open.
fn open_checked(abs: &Path, meta: &Metadata) -> Result<File, ContextError> {
    let file = File::open(abs).map_err(|source| unreadable(abs, source))?;
    let opened = file.metadata().map_err(|source| unreadable(abs, source))?;
    if opened.dev() != meta.dev() || opened.ino() != meta.ino() {
        return Err(ContextError::FileChanged {
            path: abs.to_owned(),
        });
    }
    Ok(file)
}

fn unreadable(path: &Path, source: io::Error) -> ContextError {
    ContextError::Unreadable {
        path: path.to_owned(),
        source,
    }
}

fn unix_mtime(meta: &Metadata) -> u64 {
    u64::try_from(meta.mtime()).unwrap_or(0)
}

/// A GNU header (long names and link targets go in GNU extension entries, which
/// Go's archive/tar reads) owned by root with no user or group names, as the CLI's
/// `ChownOpts` 0:0 produces.
fn new_header(kind: EntryType, mode: u32, mtime: u64) -> Header {
    let mut header = Header::new_gnu();
    header.set_entry_type(kind);
    header.set_mode(mode);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(mtime);
    header.set_size(0);
    header
}

fn header_from(meta: &Metadata, kind: EntryType) -> Header {
    new_header(kind, meta.mode() & 0o7777, unix_mtime(meta))
}

enum ReadFailure {
    Io(io::Error),
    Shrunk,
}

/// Reads exactly the size written in the header: a file that grows is cut at that
/// size (the tar stays valid) and one that shrinks is an error, instead of the tar
/// going out of step.
struct SizedReader {
    file: File,
    remaining: u64,
    failure: Option<ReadFailure>,
}

impl Read for SizedReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 || buf.is_empty() {
            return Ok(0);
        }
        let limit = usize::try_from(self.remaining)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        match self.file.read(&mut buf[..limit]) {
            Ok(0) => {
                self.failure = Some(ReadFailure::Shrunk);
                Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "file shrank while read",
                ))
            }
            Ok(n) => {
                self.remaining -= n as u64;
                Ok(n)
            }
            Err(err) if err.kind() == io::ErrorKind::Interrupted => Err(err),
            Err(err) => {
                let message = err.to_string();
                self.failure = Some(ReadFailure::Io(err));
                Err(io::Error::other(message))
            }
        }
    }
}

/// Cuts the tar into [`CHUNK_SIZE`] pieces and hands them to the async side,
/// blocking while the channel is full: that back-pressure is what keeps memory
/// bounded however large the context.
struct ChunkWriter {
    tx: mpsc::Sender<io::Result<Bytes>>,
    buf: Vec<u8>,
    closed: bool,
    receiver_dropped: bool,
    total_bytes: u64,
    peak_queued: usize,
}

impl ChunkWriter {
    fn new(tx: mpsc::Sender<io::Result<Bytes>>) -> Self {
        Self {
            tx,
            buf: Vec::with_capacity(CHUNK_SIZE),
            closed: false,
            receiver_dropped: false,
            total_bytes: 0,
            peak_queued: 0,
        }
    }

    fn send_rest(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            self.send_chunk()
        }
    }

    fn send_chunk(&mut self) -> io::Result<()> {
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK_SIZE));
        let len = chunk.len() as u64;
        if self.tx.blocking_send(Ok(Bytes::from(chunk))).is_err() {
            self.closed = true;
            self.receiver_dropped = true;
            return Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "build context receiver dropped",
            ));
        }
        self.total_bytes += len;
        let queued = self.tx.max_capacity() - self.tx.capacity();
        self.peak_queued = self.peak_queued.max(queued);
        Ok(())
    }

    /// Ends the stream with an error item, so the upload fails rather than sending
    /// a truncated tar as if it were complete.
    fn abort(&mut self, err: &ContextError) {
        if !self.receiver_dropped {
            let _ = self
                .tx
                .blocking_send(Err(io::Error::other(err.to_string())));
        }
        // The tar builder's drop would otherwise append its trailer after the error.
        self.closed = true;
    }

    /// Types a failed tar write: a dropped receiver is not an I/O fault.
    fn error_for(&self, source: io::Error) -> ContextError {
        if self.receiver_dropped {
            ContextError::ReceiverDropped
        } else {
            ContextError::Write { source }
        }
    }
}

impl Write for ChunkWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.closed {
            return Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "build context stream closed",
            ));
        }
        let taken = (CHUNK_SIZE - self.buf.len()).min(data.len());
        self.buf.extend_from_slice(&data[..taken]);
        if self.buf.len() == CHUNK_SIZE {
            self.send_chunk()?;
        }
        Ok(taken)
    }

    fn flush(&mut self) -> io::Result<()> {
        // Chunks go out when full or at the end; an early flush would only make
        // smaller HTTP frames.
        Ok(())
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
