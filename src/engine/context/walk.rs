//! The walk that writes the context as a tar, in the order and with the headers the
//! CLI's `TarWithOptions` gives, into bounded chunks for the HTTP upload. A second path
//! to a file already written is a hard link entry to the first, as there, so the daemon
//! recreates the link and the file's bytes are sent once.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs::{self, File, Metadata};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use futures_util::Stream;
use tar::{EntryType, Header};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::{
    ContextError, ContextStats, PreparedContext, CHANNEL_CAPACITY, CHUNK_SIZE, DOCKERIGNORE,
    GENERATED_FILE_MODE,
};
use crate::engine::dockerignore::{go_lossy, MatchInfo};

impl PreparedContext {
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
            first_paths: HashMap::new(),
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
    /// The first path written for each multiply linked file, by device and inode.
    first_paths: HashMap<(u64, u64), PathBuf>,
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
        if meta.nlink() > 1 {
            let inode = (meta.dev(), meta.ino());
            if let Some(first) = self.first_paths.get(&inode) {
                let mut header = header_from(meta, EntryType::Link);
                return self
                    .builder
                    .append_link(&mut header, rel, first)
                    .map_err(|e| self.builder.get_ref().error_for(e))
                    .map(|()| self.stats.files += 1);
            }
            self.first_paths.insert(inode, rel.to_owned());
        }
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

pub(super) fn unix_mtime(meta: &Metadata) -> u64 {
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
