use std::time::Duration;

use bollard_buildkit_proto::fsutil::types::Stat;

use super::*;

/// A transfer of `root` driven from the test as BuildKit's receiver would drive it.
struct Receiver {
    to_sender: mpsc::Sender<Result<Packet, Status>>,
    from_sender: mpsc::Receiver<Result<Packet, Status>>,
    ledger: Arc<Ledger>,
    done: tokio::task::JoinHandle<()>,
}

fn start(root: &Path, ignore: &str) -> Receiver {
    let dir = SyncedDir::context(root, &PatternMatcher::parse(ignore.as_bytes()).unwrap());
    let filter = Filter::new(&dir.root, &dir.base, &walk::Request::default()).unwrap();
    let ledger = Arc::new(Ledger::default());
    let (tx, from_sender) = mpsc::channel(QUEUED_PACKETS);
    let (to_sender, incoming) = mpsc::channel(4);
    let transfer = Transfer {
        name: CONTEXT_DIR.to_string(),
        dir,
        ledger: Arc::clone(&ledger),
        tx,
    };
    let done = tokio::spawn(transfer.run(filter, receiver_stream(incoming)));
    Receiver {
        to_sender,
        from_sender,
        ledger,
        done,
    }
}

impl Receiver {
    async fn next(&mut self) -> Option<Packet> {
        tokio::time::timeout(Duration::from_secs(10), self.from_sender.recv())
            .await
            .expect("the sender answers")
            .map(|item| item.expect("no status error"))
    }

    async fn send(&self, kind: PacketType, id: u32) {
        let mut p = packet(kind);
        p.id = id;
        let _ = self.to_sender.send(Ok(p)).await;
    }

    /// The `STAT`s up to the empty one, with their ids.
    async fn stats(&mut self) -> Vec<(u32, Stat)> {
        let mut stats = Vec::new();
        loop {
            let p = self.next().await.expect("a stat");
            assert_eq!(p.r#type, PacketType::PacketStat as i32);
            match p.stat {
                Some(stat) => stats.push((u32::try_from(stats.len()).unwrap(), stat)),
                None => return stats,
            }
        }
    }

    /// The data of file `id`, until its empty `DATA`, and how many packets it took.
    async fn data(&mut self, id: u32) -> (Vec<u8>, usize) {
        let (mut data, mut packets) = (Vec::new(), 0);
        loop {
            let p = self.next().await.expect("data");
            assert_eq!(p.r#type, PacketType::PacketData as i32, "{p:?}");
            assert_eq!(p.id, id);
            if p.data.is_empty() {
                return (data, packets);
            }
            assert!(p.data.len() <= DATA_CHUNK);
            packets += 1;
            data.extend_from_slice(&p.data);
        }
    }
}

fn tree(files: &[(&str, Vec<u8>)]) -> tempfile::TempDir {
    let files: Vec<(&str, &[u8])> = files.iter().map(|(n, c)| (*n, c.as_slice())).collect();
    test_tree(&files)
}

/// The exchange is fsutil's: every `STAT` then an empty one; a `REQ` by a file's index
/// brings its data in chunks of at most `DATA_CHUNK` and an empty `DATA`; `FIN` is
/// answered with `FIN` and ends the stream. Ignored files are never listed, and the
/// ledger counts what was sent.
#[tokio::test]
async fn stats_then_requested_data_then_fin() {
    let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let dir = tree(&[
        ("big.bin", big.clone()),
        ("sub/small.txt", b"small".to_vec()),
        ("skip.log", b"ignored".to_vec()),
    ]);
    let mut receiver = start(dir.path(), "*.log\n");
    let stats = receiver.stats().await;
    let listed: Vec<&str> = stats.iter().map(|(_, s)| s.path.as_str()).collect();
    assert_eq!(listed, ["big.bin", "sub", "sub/small.txt"]);

    // Asked out of order; answered in the order asked.
    receiver.send(PacketType::PacketReq, 2).await;
    receiver.send(PacketType::PacketReq, 0).await;
    assert_eq!(receiver.data(2).await, (b"small".to_vec(), 1));
    let (data, packets) = receiver.data(0).await;
    assert_eq!(data, big);
    assert_eq!(packets, big.len().div_ceil(DATA_CHUNK));

    receiver.send(PacketType::PacketFin, 0).await;
    let fin = receiver.next().await.expect("FIN back");
    assert_eq!(fin.r#type, PacketType::PacketFin as i32);
    assert!(receiver.next().await.is_none(), "the stream ends after FIN");
    receiver.done.await.unwrap();
    let sent = receiver.ledger.sent()[CONTEXT_DIR];
    assert_eq!(
        (sent.entries, sent.files, sent.bytes),
        (3, 2, big.len() as u64 + 5)
    );
    assert!(receiver.ledger.take_failure().is_none());
}

/// A `REQ` for an index that is no regular file (a directory here) ends the transfer
/// without a `FIN`, as fsutil's "invalid file id".
#[tokio::test]
async fn a_request_for_no_file_ends_the_transfer() {
    let dir = tree(&[("d/f", b"x".to_vec())]);
    let mut receiver = start(dir.path(), "");
    assert_eq!(receiver.stats().await.len(), 2);
    receiver.send(PacketType::PacketReq, 0).await;
    assert!(receiver.next().await.is_none(), "no FIN, no data");
    receiver.done.await.unwrap();
}

/// A file that vanished between its `STAT` and its `REQ` is reported to the daemon in an
/// `ERR` packet naming it, and kept in the ledger as the cause of the failure.
#[tokio::test]
async fn a_file_that_cannot_be_read_is_an_err_packet_naming_it() {
    let dir = tree(&[("gone.txt", b"x".to_vec())]);
    let mut receiver = start(dir.path(), "");
    assert_eq!(receiver.stats().await.len(), 1);
    std::fs::remove_file(dir.path().join("gone.txt")).unwrap();
    receiver.send(PacketType::PacketReq, 0).await;
    let err = receiver.next().await.expect("an ERR packet");
    assert_eq!(err.r#type, PacketType::PacketErr as i32);
    assert!(
        String::from_utf8_lossy(&err.data).contains("gone.txt"),
        "{err:?}"
    );
    let failure = receiver.ledger.take_failure().expect("kept for the report");
    assert!(failure.to_string().contains("gone.txt"), "{failure}");
}

/// A file swapped for another (here a symlink out of the context) after its `STAT` is
/// refused rather than followed.
#[tokio::test]
async fn a_file_swapped_for_a_symlink_is_not_followed() {
    let dir = tree(&[("f", b"inside".to_vec())]);
    let mut receiver = start(dir.path(), "");
    assert_eq!(receiver.stats().await.len(), 1);
    std::fs::remove_file(dir.path().join("f")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", dir.path().join("f")).unwrap();
    receiver.send(PacketType::PacketReq, 0).await;
    let err = receiver.next().await.expect("an ERR packet");
    assert_eq!(err.r#type, PacketType::PacketErr as i32, "{err:?}");
    assert!(matches!(
        receiver.ledger.take_failure(),
        Some(ContextError::FileChanged { .. })
    ));
}

/// Request metadata is read as BuildKit's `decodeOpts` writes it: several values per
/// key, URL-escaped when `<key>-encoded` is set.
#[test]
fn metadata_values_are_decoded() {
    let mut metadata = MetadataMap::new();
    metadata.append("exclude-patterns", "a,b".parse().unwrap());
    metadata.append("exclude-patterns", "*.log".parse().unwrap());
    metadata.append("include-patterns", "caf%C3%A9+menu%2F%2A".parse().unwrap());
    metadata.append("include-patterns-encoded", "1".parse().unwrap());
    metadata.append("dir-name", "context".parse().unwrap());
    assert_eq!(values(&metadata, "exclude-patterns"), ["a,b", "*.log"]);
    assert_eq!(values(&metadata, "include-patterns"), ["café menu/*"]);
    assert_eq!(
        first_value(&metadata, "dir-name").as_deref(),
        Some("context")
    );
    assert!(values(&metadata, "followpaths").is_empty());
    assert_eq!(query_unescape("100%"), "100%");
}

/// The Dockerfile's directory is its parent, narrowed to the file and its ignore file.
#[test]
fn the_dockerfile_dir_is_its_parent() {
    let dir = SyncedDir::dockerfile(Path::new("/w/build/app.Dockerfile"));
    assert_eq!(dir.root(), Path::new("/w/build"));
    assert!(!dir.reset_owner);
    match &dir.base {
        BaseFilter::Names(names) => assert_eq!(
            names.iter().map(String::as_str).collect::<Vec<_>>(),
            ["app.Dockerfile", "app.Dockerfile.dockerignore"]
        ),
        BaseFilter::Ignore(_) => panic!("no ignore file for the Dockerfile's directory"),
    }
}
