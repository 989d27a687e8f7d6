//! Reads `docker save` output (the image export API) as a stream, on a blocking thread:
//! small JSON files (the image config, `manifest.json`, the OCI index and manifests) are
//! kept in memory; every other file is taken for a layer and compressed while it streams,
//! its parts handed to the uploader as they fill ([`super::stream`]), so no layer is ever
//! held in memory and the upload runs alongside the compression and the next layer.
//! Which files are layers is known only from `manifest.json`, which comes last in the
//! tar; a small layer that happened to look like JSON is compressed then. A layer the
//! registry already has ([`super::reuse`]) is recognised by its path (Docker 25+ exports
//! name layers `blobs/sha256/<diff_id>`) and only hashed on its way past.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{self, Read, Write};
use std::sync::Arc;

use bytes::{Buf as _, Bytes};
use sha2::{Digest as _, Sha256};

use super::compression::Compression;
use super::gzip::Pool;
use super::stream::{LayerEvent, PartSink};
use crate::network::stall::{human, StallTimeout, Stalled};

/// JSON files up to this size are kept in memory.
pub const JSON_LIMIT: u64 = 16 << 20;
/// Read size while streaming a layer.
const READ_BUFFER: usize = 256 << 10;
/// The export's bytes go to the reading thread in pieces of this size.
const FEED_PIECE: usize = 512 << 10;

pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

pub fn sha256_digest(data: &[u8]) -> String {
    format!("sha256:{}", hex(&Sha256::digest(data)))
}

/// A layer, compressed (and uploaded, or on its way: [`super::stream`]).
#[derive(Debug, Clone)]
pub struct CompressedLayer {
    /// Path inside the export tar.
    pub path: String,
    /// sha256 of the uncompressed tar (must be one of the config's `diff_ids`).
    pub diff_id: String,
    /// sha256 of the compressed stream.
    pub digest: String,
    pub size: u64,
    pub uncompressed: u64,
    /// From the layer's first byte read to its last byte compressed.
    pub seconds: f64,
}

/// What the export reader reports as it goes, in order, for each new layer.
#[derive(Debug)]
pub enum ExportEvent {
    /// A layer is being compressed: its parts come on `parts`, for the uploader.
    Layer {
        path: String,
        parts: tokio::sync::mpsc::Receiver<LayerEvent>,
    },
    /// That layer, compressed whole.
    Compressed(CompressedLayer),
}

/// Where a blob's bytes are (the registry client's type).
pub use crate::registry::BlobBody as Content;

/// What is left once the tar has been read.
#[derive(Debug, Default)]
pub struct ExportRest {
    /// Small files kept in memory, by path.
    pub files: HashMap<String, Vec<u8>>,
    /// Symbolic and hard links, path to target path.
    pub links: HashMap<String, String>,
    /// Layers streamed past without compressing, path to the `diff_id` they hashed to.
    pub passed: HashMap<String, String>,
}

/// Bytes from the async side, as a blocking `Read`.
#[derive(Debug)]
pub struct ChannelReader {
    rx: tokio::sync::mpsc::Receiver<io::Result<Bytes>>,
    current: Bytes,
}

impl ChannelReader {
    pub fn new(rx: tokio::sync::mpsc::Receiver<io::Result<Bytes>>) -> Self {
        Self {
            rx,
            current: Bytes::new(),
        }
    }
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(bytes)) => self.current = bytes,
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        self.current.advance(n);
        Ok(n)
    }
}

/// The export stream of one image, fed from the daemon to a blocking [`ChannelReader`]
/// through a small channel; the feeding stops when this is dropped, however the push ends.
/// The daemon may write its whole export to disk before the first byte: that wait is
/// kept, to be logged. From then on (or from the start, where the daemon streams at once),
/// a daemon that sends nothing for the stall timeout while the reader waits ends the
/// export with an error saying so; time the reader spends on its side does not count.
#[derive(Debug)]
pub struct Feeder {
    task: tokio::task::JoinHandle<()>,
    first_byte: Arc<std::sync::OnceLock<f64>>,
}

impl Feeder {
    /// Starts the export of `image` (`GET /images/{image}/get`), watched for stalls as
    /// `start` says.
    pub fn start(
        docker: &bollard::Docker,
        image: &str,
        started: std::time::Instant,
        stall: StallTimeout,
        start: ExportStart,
    ) -> (Self, ChannelReader) {
        use futures_util::StreamExt as _;
        let (bytes_tx, bytes_rx) = tokio::sync::mpsc::channel::<io::Result<Bytes>>(8);
        let first_byte = Arc::new(std::sync::OnceLock::<f64>::new());
        let docker = crate::engine::long_call(docker);
        let image = image.to_string();
        let first = Arc::clone(&first_byte);
        let task = tokio::spawn(async move {
            let watchdog = stall.watchdog();
            let mut stream = watchdog.incoming(docker.export_image(&image));
            // The daemon's frames are small (kilobytes): gathered into pieces of
            // FEED_PIECE, the reading thread wakes a few hundred times per 100 MB, not
            // tens of thousands.
            let mut piece = bytes::BytesMut::new();
            let mut watched = start == ExportStart::AtOnce;
            let mut received = 0u64;
            loop {
                let next = if watched {
                    watchdog.guard(stream.next()).await
                } else {
                    Ok(stream.next().await)
                };
                watched = true;
                let item = match next {
                    Ok(Some(item)) => item,
                    Ok(None) => break,
                    Err(stalled) => {
                        let _ = bytes_tx.send(Err(export_stalled(received, stalled))).await;
                        return;
                    }
                };
                first.get_or_init(|| started.elapsed().as_secs_f64());
                let item = match item {
                    Ok(bytes) => {
                        received += bytes.len() as u64;
                        piece.extend_from_slice(&bytes);
                        if piece.len() < FEED_PIECE {
                            continue;
                        }
                        Ok(piece.split().freeze())
                    }
                    Err(e) => Err(io::Error::other(crate::error_chain(&e))),
                };
                let failed = item.is_err();
                if bytes_tx.send(item).await.is_err() || failed {
                    return;
                }
            }
            if !piece.is_empty() {
                let _ = bytes_tx.send(Ok(piece.freeze())).await;
            }
        });
        (Self { task, first_byte }, ChannelReader::new(bytes_rx))
    }

    /// Seconds from the push's start to the export's first byte, once it came.
    pub fn first_byte(&self) -> Option<f64> {
        self.first_byte.get().copied()
    }
}

impl Drop for Feeder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// When a daemon's export starts, which decides when its stall timeout starts counting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportStart {
    /// After a silence as long as the image is large: the classic store writes the whole
    /// export to disk before its first byte (moby `image/tarexport/save.go`). Counted from
    /// the first byte on.
    AfterSilence,
    /// At once: the containerd store streams from its content store
    /// (`daemon/containerd/image_exporter.go`). Counted from the request on.
    AtOnce,
}

/// The daemon stopped sending the export, `received` bytes in.
fn export_stalled(received: u64, stalled: Stalled) -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        format!(
            "the Docker daemon sent nothing more of the export for {} ({} in): it \
             seems hung; check it (`docker info`, its log), or raise {}",
            human(stalled.limit),
            super::mb(received),
            crate::env::STALL_TIMEOUT
        ),
    )
}

/// Hashes what passes through.
#[derive(Debug)]
pub struct HashingWriter<W> {
    inner: W,
    sha: Sha256,
}

impl<W> HashingWriter<W> {
    pub fn new(inner: W) -> Self {
        Self {
            inner,
            sha: Sha256::new(),
        }
    }

    /// What it wrote, and the `sha256:` digest of it.
    pub fn finish(self) -> (W, String) {
        (self.inner, format!("sha256:{}", hex(&self.sha.finalize())))
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.sha.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A spool file that is unlinked at once, so nothing is left behind whatever happens.
pub fn spool_file(dir: &std::path::Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt as _;
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    // Not guessable (random), never an existing file or link (`create_new`), readable by
    // its owner only (0600) for the moment it has a name.
    let name = dir.join(format!(
        ".ecr-build-push-layer-{}-{}-{:016x}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
        crate::random::u64()
    ));
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&name)?;
    std::fs::remove_file(&name)?;
    Ok(file)
}

/// The uploader stopped taking the export's data: a consequence of its own failure,
/// never a cause ([`outcome`]).
#[derive(Debug)]
struct Abandoned;

impl std::fmt::Display for Abandoned {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the push was abandoned")
    }
}

impl std::error::Error for Abandoned {}

/// The error the export's reader stops with when the uploader went away; takes any
/// `SendError` so it fits `map_err`.
pub fn abandoned<T>(_: T) -> io::Error {
    io::Error::other(Abandoned)
}

/// What a push that read an export comes to: the reader's error when it has one of its
/// own (the cause of the uploads' failing), else the uploads' error, else what it read.
pub fn outcome<T, E>(
    read: io::Result<T>,
    failed: Option<E>,
    export_error: impl FnOnce(&io::Error) -> E,
) -> Result<T, E> {
    let abandoned = |e: &io::Error| {
        e.get_ref()
            .and_then(|inner| inner.downcast_ref::<Abandoned>())
            .is_some()
    };
    match (read, failed) {
        (Err(e), Some(failed)) if abandoned(&e) => Err(failed),
        (Err(e), _) => Err(export_error(&e)),
        (Ok(_), Some(failed)) => Err(failed),
        (Ok(rest), None) => Ok(rest),
    }
}

/// Compresses `reader` (a layer at `path` whose first bytes are `head`) as it streams,
/// handing its parts to the uploader as they fill ([`PartSink`]), and reports it.
#[allow(clippy::too_many_arguments)]
fn compress_layer(
    pool: &Pool,
    compression: Compression,
    spool_dir: &std::path::Path,
    path: String,
    head: &[u8],
    reader: &mut dyn Read,
    events: &tokio::sync::mpsc::Sender<ExportEvent>,
) -> io::Result<()> {
    let started = std::time::Instant::now();
    let (parts_tx, parts) = tokio::sync::mpsc::channel(super::stream::STREAM_QUEUE);
    events
        .blocking_send(ExportEvent::Layer {
            path: path.clone(),
            parts,
        })
        .map_err(abandoned)?;
    let sink = PartSink::new(parts_tx, spool_dir);
    let parts_tx = sink.sender();
    let mut writer = compression.writer(pool, sink)?;
    let mut raw_sha = Sha256::new();
    raw_sha.update(head);
    writer.write_all(head)?;
    let mut buf = vec![0u8; READ_BUFFER];
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        raw_sha.update(&buf[..n]);
        writer.write_all(&buf[..n])?;
    }
    let (sink, sizes) = writer.finish()?;
    let end = sink.finish();
    let layer = CompressedLayer {
        path,
        diff_id: format!("sha256:{}", hex(&raw_sha.finalize())),
        digest: end.digest.clone(),
        size: end.size,
        uncompressed: sizes.input_bytes,
        seconds: started.elapsed().as_secs_f64(),
    };
    parts_tx
        .blocking_send(LayerEvent::End(end))
        .map_err(abandoned)?;
    events
        .blocking_send(ExportEvent::Compressed(layer))
        .map_err(abandoned)
}

/// Reads the whole export tar. Each layer is compressed and streamed to the uploader as
/// it is read ([`ExportEvent`]); the small files come back at the end. Layers whose
/// `diff_id` is in `pass` are not compressed.
pub fn read_export(
    reader: impl Read,
    pool: &Pool,
    compression: Compression,
    spool_dir: &std::path::Path,
    pass: &HashSet<String, impl std::hash::BuildHasher>,
    events: &tokio::sync::mpsc::Sender<ExportEvent>,
) -> io::Result<ExportRest> {
    let mut rest = ExportRest::default();
    let mut archive = tar::Archive::new(reader);
    for entry in archive.entries()? {
        let mut entry = entry?;
        let path = normalize(&entry.path()?.to_string_lossy());
        let kind = entry.header().entry_type();
        if kind.is_symlink() || kind.is_hard_link() {
            if let Some(target) = entry.link_name()? {
                let target = target.to_string_lossy();
                let resolved = if kind.is_symlink() {
                    resolve_relative(&path, &target)
                } else {
                    normalize(&target)
                };
                rest.links.insert(path, resolved);
            }
            continue;
        }
        if !kind.is_file() {
            continue;
        }
        if let Some(name) = path.strip_prefix("blobs/sha256/") {
            if pass.contains(&format!("sha256:{name}")) {
                let mut sha = HashingWriter::new(io::sink());
                io::copy(&mut entry, &mut sha)?;
                let (_, diff_id) = sha.finish();
                rest.passed.insert(path, diff_id);
                continue;
            }
        }
        let size = entry.size();
        // Peek: JSON (config, manifests) stays in memory; anything else is a layer.
        let mut head = vec![0u8; usize::try_from(size.min(4096)).unwrap_or(4096)];
        entry.read_exact(&mut head)?;
        let looks_json = head.first() == Some(&b'{') || head.first() == Some(&b'[');
        if size <= JSON_LIMIT && (looks_json || size == 0 || is_metadata(&path)) {
            let mut data = head;
            entry.read_to_end(&mut data)?;
            rest.files.insert(path, data);
            continue;
        }
        compress_layer(
            pool,
            compression,
            spool_dir,
            path,
            &head,
            &mut entry,
            events,
        )?;
    }
    Ok(rest)
}

pub fn is_metadata(path: &str) -> bool {
    matches!(
        path,
        "manifest.json" | "index.json" | "oci-layout" | "repositories"
    ) || path.ends_with("/json")
        || path.ends_with("/VERSION")
}

/// `./a//b` to `a/b`.
pub fn normalize(path: &str) -> String {
    path.split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect::<Vec<_>>()
        .join("/")
}

/// A symlink target relative to the link's directory, as a tar path.
pub fn resolve_relative(link: &str, target: &str) -> String {
    if target.starts_with('/') {
        return normalize(target);
    }
    let mut parts: Vec<&str> = link.split('/').collect();
    parts.pop();
    for piece in target.split('/') {
        match piece {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            other => parts.push(other),
        }
    }
    parts.join("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression: "spool files get predictable names with default permissions". A spool
    /// file is its owner's alone (0600) whatever the umask, and gone from the folder at
    /// once; two files never share a name.
    #[test]
    fn spool_files_are_private_and_unnamed() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let first = spool_file(dir.path()).unwrap();
        let second = spool_file(dir.path()).unwrap();
        for file in [&first, &second] {
            let mode = file.metadata().unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{mode:o}");
        }
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    /// Regression: an upload that failed made the reader stop with "the push was
    /// abandoned", which hid the upload's own error. The reader's error wins only when it
    /// is a cause of its own.
    #[test]
    fn the_uploads_error_wins_over_an_abandoned_reader() {
        let export_error = |e: &io::Error| format!("export: {e}");
        let failed = Some("upload: lost".to_string());
        assert_eq!(
            outcome::<(), _>(Err(abandoned(())), failed.clone(), export_error),
            Err("upload: lost".into())
        );
        assert_eq!(
            outcome::<(), _>(
                Err(io::Error::other("daemon hung up")),
                failed,
                export_error
            ),
            Err("export: daemon hung up".into())
        );
        assert_eq!(outcome(Ok(1), None::<String>, export_error), Ok(1));
    }

    /// Links in old-style exports point at the layer they share.
    #[test]
    fn links_resolve_inside_the_tar() {
        assert_eq!(
            resolve_relative("abc/layer.tar", "../def/layer.tar"),
            "def/layer.tar"
        );
        assert_eq!(normalize("./blobs//sha256/x"), "blobs/sha256/x");
    }
}
