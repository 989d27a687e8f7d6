//! BuildKit's `moby.filesync.v1.FileSync/DiffCopy`, served on the session: the daemon
//! asks for a directory by name (`dir-name`: `context` or `dockerfile`, as the Docker CLI
//! named them) and we send it as tonistiigi/fsutil's sender does (`send.go`):
//!
//! 1. a `STAT` packet per entry, in walk order ([`walk`]), then an empty `STAT`;
//! 2. meanwhile, for each `REQ` (the index of a regular file's `STAT`), that file's data
//!    in `DATA` packets of at most [`DATA_CHUNK`] bytes, then an empty `DATA`;
//! 3. when the daemon sends `FIN`, a `FIN` back, which ends the transfer.
//!
//! An `ERR` packet carries a failure either way. The daemon asks only for files it does
//! not have already (its cache is keyed on the session's shared key), and BuildKit's
//! Dockerfile frontend sends the `.dockerignore` patterns itself as `exclude-patterns`.
//! Memory stays bounded: one chunk being read, and [`QUEUED_PACKETS`] waiting.

mod walk;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Read as _;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use bollard_buildkit_proto::fsutil::types::packet::PacketType;
use bollard_buildkit_proto::fsutil::types::Packet;
use bollard_buildkit_proto::moby::filesync::v1::file_sync_server::FileSync;
use futures_util::{Stream, StreamExt as _};
use tokio::sync::mpsc;
use tonic::metadata::MetadataMap;
use tonic::{Response, Status, Streaming};

use crate::engine::context::ContextError;
use crate::engine::dockerignore::PatternMatcher;
use walk::{BaseFilter, Entry, FileRef, Filter};

/// File data per `DATA` packet (fsutil sends 32 KiB; gRPC allows 4 MiB).
pub const DATA_CHUNK: usize = 128 * 1024;
/// Packets waiting for the connection, per transfer.
pub const QUEUED_PACKETS: usize = 16;

/// The `dir-name` of the build context, as the Docker CLI and buildx call it.
pub const CONTEXT_DIR: &str = "context";
/// The `dir-name` of the Dockerfile's directory.
pub const DOCKERFILE_DIR: &str = "dockerfile";

/// A directory the session lends to the daemon.
#[derive(Debug, Clone)]
pub struct SyncedDir {
    root: PathBuf,
    base: BaseFilter,
    reset_owner: bool,
}

impl SyncedDir {
    /// The build context, with our ignore rules applied and owners sent as 0:0, as the
    /// Docker CLI sent it.
    pub fn context(root: &Path, ignore: &PatternMatcher) -> Self {
        Self {
            root: root.to_owned(),
            base: BaseFilter::Ignore(ignore.clone()),
            reset_owner: true,
        }
    }

    /// The directory of `dockerfile` (symlinks resolved), narrowed to the Dockerfile and
    /// its own `<name>.dockerignore`: nothing else of that directory is lent.
    pub fn dockerfile(dockerfile: &Path) -> Self {
        let root = dockerfile.parent().unwrap_or(Path::new("/")).to_owned();
        let name = dockerfile
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let names = BTreeSet::from([format!("{name}.dockerignore"), name]);
        Self {
            root,
            base: BaseFilter::Names(names),
            reset_owner: false,
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
}

/// What went over the session for one directory, for the log.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SentStats {
    /// `DiffCopy` calls for it (the frontend reads `.dockerignore` first, then the rest).
    pub transfers: u64,
    /// `STAT` packets sent.
    pub entries: u64,
    /// Files whose data the daemon asked for.
    pub files: u64,
    /// Bytes of file data sent.
    pub bytes: u64,
    /// Milliseconds the transfers took, each from the daemon's call to its `FIN`: the
    /// client's share of the build.
    pub millis: u64,
}

/// Shared between the service and the build: counts, and the first failure.
#[derive(Debug, Default)]
pub(crate) struct Ledger {
    sent: Mutex<BTreeMap<String, SentStats>>,
    failure: Mutex<Option<ContextError>>,
}

impl Ledger {
    fn count(&self, dir: &str, update: impl FnOnce(&mut SentStats)) {
        if let Ok(mut sent) = self.sent.lock() {
            update(sent.entry(dir.to_owned()).or_default());
        }
    }

    fn fail(&self, err: ContextError) {
        if let Ok(mut failure) = self.failure.lock() {
            failure.get_or_insert(err);
        }
    }

    /// What was sent, by directory name.
    pub(crate) fn sent(&self) -> BTreeMap<String, SentStats> {
        self.sent.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// The first failure to read or send a file, which is the real cause of the build
    /// failing.
    pub(crate) fn take_failure(&self) -> Option<ContextError> {
        self.failure.lock().ok().and_then(|mut f| f.take())
    }
}

/// The `FileSync` service of one session.
#[derive(Debug)]
pub(crate) struct FileSyncService {
    dirs: HashMap<String, SyncedDir>,
    ledger: Arc<Ledger>,
}

impl FileSyncService {
    pub(crate) fn new(dirs: Vec<(String, SyncedDir)>, ledger: Arc<Ledger>) -> Self {
        Self {
            dirs: dirs.into_iter().collect(),
            ledger,
        }
    }
}

type PacketStream = Pin<Box<dyn Stream<Item = Result<Packet, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl FileSync for FileSyncService {
    type DiffCopyStream = PacketStream;
    type TarStreamStream = PacketStream;

    async fn diff_copy(
        &self,
        request: tonic::Request<Streaming<Packet>>,
    ) -> Result<Response<Self::DiffCopyStream>, Status> {
        let metadata = request.metadata();
        let name = first_value(metadata, "dir-name").unwrap_or_default();
        let Some(dir) = self.dirs.get(&name).cloned() else {
            tracing::debug!(dir = %name, "session: a directory that is not lent was asked for");
            return Err(Status::not_found(format!(
                "no access allowed to dir \"{name}\""
            )));
        };
        let asked = walk::Request {
            include_patterns: values(metadata, "include-patterns"),
            exclude_patterns: values(metadata, "exclude-patterns"),
            follow_paths: values(metadata, "followpaths"),
        };
        tracing::debug!(dir = %name, ?asked, "session: directory asked for");
        let filter = Filter::new(&dir.root, &dir.base, &asked).map_err(Status::invalid_argument)?;
        self.ledger.count(&name, |s| s.transfers += 1);

        let (tx, rx) = mpsc::channel(QUEUED_PACKETS);
        let transfer = Transfer {
            name,
            dir,
            ledger: Arc::clone(&self.ledger),
            tx,
        };
        tokio::spawn(transfer.run(filter, request.into_inner()));
        Ok(Response::new(Box::pin(receiver_stream(rx))))
    }

    async fn tar_stream(
        &self,
        _request: tonic::Request<Streaming<Packet>>,
    ) -> Result<Response<Self::TarStreamStream>, Status> {
        Err(Status::unimplemented("only DiffCopy is served"))
    }
}

/// The metadata values of `key`, decoded as BuildKit's `decodeOpts` does: when
/// `<key>-encoded` is true, each value is URL-query-escaped (non-ASCII patterns).
fn values(metadata: &MetadataMap, key: &str) -> Vec<String> {
    let encoded = first_raw(metadata, &format!("{key}-encoded"))
        .is_some_and(|v| matches!(v.as_str(), "1" | "t" | "T" | "true" | "TRUE" | "True"));
    metadata
        .get_all(key)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(|v| {
            if encoded {
                query_unescape(v)
            } else {
                v.to_owned()
            }
        })
        .collect()
}

fn first_raw(metadata: &MetadataMap, key: &str) -> Option<String> {
    metadata
        .get(key)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

fn first_value(metadata: &MetadataMap, key: &str) -> Option<String> {
    values(metadata, key).into_iter().next()
}

/// Go's `url.QueryUnescape`, leniently: `+` is a space, `%XX` a byte, and a stray `%`
/// stays as it is.
fn query_unescape(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| bytes.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok());
        match (bytes[i], escaped) {
            (_, Some(byte)) => {
                out.push(byte);
                i += 3;
                continue;
            }
            (b'+', None) => out.push(b' '),
            (other, None) => out.push(other),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn receiver_stream<T: Send + 'static>(rx: mpsc::Receiver<T>) -> impl Stream<Item = T> + Send {
    futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    })
}

fn packet(kind: PacketType) -> Packet {
    Packet {
        r#type: kind as i32,
        ..Packet::default()
    }
}

/// One `DiffCopy` exchange.
struct Transfer {
    name: String,
    dir: SyncedDir,
    ledger: Arc<Ledger>,
    tx: mpsc::Sender<Result<Packet, Status>>,
}

/// Why an exchange ended.
enum End {
    /// The daemon said `FIN`: it has everything it wanted.
    Finished,
    /// The daemon sent `ERR`, broke the stream, or asked for a file that is no file.
    Daemon(String),
    /// The connection went away.
    Gone,
}

impl Transfer {
    async fn run(
        self,
        filter: Filter,
        incoming: impl Stream<Item = Result<Packet, Status>> + Send + 'static,
    ) {
        let started = std::time::Instant::now();
        let mut incoming = std::pin::pin!(incoming);
        let files: Arc<Mutex<HashMap<u32, FileRef>>> = Arc::default();
        let walker = {
            let (dir, ledger, tx, files, name) = (
                self.dir.clone(),
                Arc::clone(&self.ledger),
                self.tx.clone(),
                Arc::clone(&files),
                self.name.clone(),
            );
            tokio::task::spawn_blocking(move || {
                send_stats(&dir, &filter, &files, &tx, &ledger, &name);
            })
        };
        let (requests, queue) = mpsc::unbounded_channel::<(u32, FileRef)>();
        let sender = {
            let (ledger, tx, name) = (Arc::clone(&self.ledger), self.tx.clone(), self.name.clone());
            tokio::task::spawn_blocking(move || send_files(queue, &tx, &ledger, &name))
        };

        let end = loop {
            let message = match incoming.next().await {
                Some(Ok(message)) => message,
                None => break End::Gone,
                Some(Err(status)) => break End::Daemon(status.message().to_owned()),
            };
            match PacketType::try_from(message.r#type) {
                Ok(PacketType::PacketReq) => {
                    let file = files.lock().ok().and_then(|mut f| f.remove(&message.id));
                    match file {
                        Some(file) => {
                            if requests.send((message.id, file)).is_err() {
                                break End::Gone;
                            }
                        }
                        None => break End::Daemon(format!("invalid file id {}", message.id)),
                    }
                }
                Ok(PacketType::PacketFin) => break End::Finished,
                Ok(PacketType::PacketErr) => {
                    break End::Daemon(String::from_utf8_lossy(&message.data).into_owned())
                }
                _ => {}
            }
        };
        drop(requests);
        // The queue is empty by now on a FIN: the daemon asks for nothing more after it.
        let _ = sender.await;
        match end {
            End::Finished => {
                let _ = walker.await;
                let _ = self.tx.send(Ok(packet(PacketType::PacketFin))).await;
                let millis = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
                self.ledger.count(&self.name, |s| s.millis += millis);
                tracing::debug!(dir = %self.name, "session: directory sent");
            }
            End::Daemon(message) => {
                walker.abort();
                tracing::debug!(dir = %self.name, "session: the daemon ended the transfer: {message}");
            }
            End::Gone => walker.abort(),
        }
    }
}

/// Walks the directory and sends a `STAT` per entry, then the empty `STAT`. Regular
/// files are registered under their index before their `STAT` goes out, so a `REQ` for
/// one always finds it.
fn send_stats(
    dir: &SyncedDir,
    filter: &Filter,
    files: &Mutex<HashMap<u32, FileRef>>,
    tx: &mpsc::Sender<Result<Packet, Status>>,
    ledger: &Ledger,
    name: &str,
) {
    let mut index: u32 = 0;
    let result = walk::walk(&dir.root, filter, dir.reset_owner, |entry: Entry| {
        if entry.stat.mode & walk::go_mode::TYPE == 0 {
            if let (Some(file), Ok(mut files)) = (entry.file, files.lock()) {
                files.insert(index, file);
            }
        }
        index = index.wrapping_add(1);
        let mut stat = packet(PacketType::PacketStat);
        stat.stat = Some(entry.stat);
        tx.blocking_send(Ok(stat))
            .map_err(|_| ContextError::ReceiverDropped)?;
        ledger.count(name, |s| s.entries += 1);
        Ok(())
    })
    .and_then(|()| {
        tx.blocking_send(Ok(packet(PacketType::PacketStat)))
            .map_err(|_| ContextError::ReceiverDropped)
    });
    if let Err(err) = result {
        fail(err, tx, ledger);
    }
}

/// Sends each requested file's data, in order of request.
fn send_files(
    mut queue: mpsc::UnboundedReceiver<(u32, FileRef)>,
    tx: &mpsc::Sender<Result<Packet, Status>>,
    ledger: &Ledger,
    name: &str,
) {
    let mut buffer = vec![0u8; DATA_CHUNK];
    while let Some((id, file)) = queue.blocking_recv() {
        match send_file(id, &file, &mut buffer, tx) {
            Ok(bytes) => ledger.count(name, |s| {
                s.files += 1;
                s.bytes += bytes;
            }),
            Err(err) => {
                fail(err, tx, ledger);
                return;
            }
        }
    }
}

fn send_file(
    id: u32,
    file: &FileRef,
    buffer: &mut [u8],
    tx: &mpsc::Sender<Result<Packet, Status>>,
) -> Result<u64, ContextError> {
    let unreadable = |source| ContextError::Unreadable {
        path: file.path.clone(),
        source,
    };
    let mut opened = std::fs::File::open(&file.path).map_err(unreadable)?;
    let meta = opened.metadata().map_err(unreadable)?;
    if meta.dev() != file.dev || meta.ino() != file.ino {
        return Err(ContextError::FileChanged {
            path: file.path.clone(),
        });
    }
    let mut sent = 0u64;
    loop {
        let n = match opened.read(buffer) {
            Ok(0) => break,
            Ok(n) => n,
            Err(err) if err.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(err) => return Err(unreadable(err)),
        };
        let mut data = packet(PacketType::PacketData);
        data.id = id;
        data.data = buffer[..n].to_vec();
        tx.blocking_send(Ok(data))
            .map_err(|_| ContextError::ReceiverDropped)?;
        sent += n as u64;
    }
    let mut end = packet(PacketType::PacketData);
    end.id = id;
    tx.blocking_send(Ok(end))
        .map_err(|_| ContextError::ReceiverDropped)?;
    Ok(sent)
}

/// Tells the daemon (an `ERR` packet, which fails the build with our message) and keeps
/// the error for our own report. A dropped connection is no error of ours.
fn fail(err: ContextError, tx: &mpsc::Sender<Result<Packet, Status>>, ledger: &Ledger) {
    if matches!(err, ContextError::ReceiverDropped) {
        return;
    }
    let mut packet = packet(PacketType::PacketErr);
    packet.data = err.to_string().into_bytes();
    // Kept first: the daemon fails the build as soon as it reads the packet.
    ledger.fail(err);
    let _ = tx.blocking_send(Ok(packet));
}

/// A directory holding `files` (relative paths and contents), for the unit tests.
#[cfg(test)]
fn test_tree(files: &[(&str, &[u8])]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, content) in files {
        let path = dir.path().join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }
    dir
}

#[cfg(test)]
mod tests;
