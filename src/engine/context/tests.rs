use super::*;
use bytes::Bytes;
use futures_util::Stream;
use futures_util::StreamExt as _;
use std::fs::File;
use std::io::Read as _;
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::time::Duration;
use tar::EntryType;

/// An entry read back from the produced tar.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    path: Vec<u8>,
    kind: EntryType,
    link: Option<Vec<u8>>,
    data: Vec<u8>,
    mode: u32,
    mtime: u64,
    uid: u64,
    gid: u64,
    username: Vec<u8>,
}

fn write(path: &Path, content: &str) {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).unwrap();
    }
    fs::write(path, content).unwrap();
}

/// A context with a Dockerfile and the given `.dockerignore` (if any).
fn context_with(dockerignore: Option<&str>) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    write(&dir.path().join("Dockerfile"), "FROM scratch\n");
    if let Some(content) = dockerignore {
        write(&dir.path().join(DOCKERIGNORE), content);
    }
    dir
}

async fn collect(
    prepared: PreparedContext,
) -> (Vec<u8>, Result<ContextStats, ContextError>, Option<String>) {
    let (stream, handle) = prepared.stream();
    let mut stream = std::pin::pin!(stream);
    let mut tar = Vec::new();
    let mut stream_error = None;
    while let Some(item) = stream.next().await {
        match item {
            Ok(chunk) => {
                assert!(chunk.len() <= CHUNK_SIZE);
                tar.extend_from_slice(&chunk);
            }
            Err(err) => {
                stream_error = Some(err.to_string());
                break;
            }
        }
    }
    (tar, handle.await.unwrap(), stream_error)
}

async fn tar_of(context: &Path, dockerfile: &Path) -> (Vec<Entry>, ContextStats) {
    let prepared = prepare(context, dockerfile).unwrap();
    let (tar, result, stream_error) = collect(prepared).await;
    assert_eq!(stream_error, None);
    (entries(&tar), result.unwrap())
}

fn entries(tar: &[u8]) -> Vec<Entry> {
    let mut archive = tar::Archive::new(tar);
    archive
        .entries()
        .unwrap()
        .map(|entry| {
            let mut entry = entry.unwrap();
            let header = entry.header().clone();
            let mut data = Vec::new();
            entry.read_to_end(&mut data).unwrap();
            Entry {
                path: entry.path_bytes().into_owned(),
                kind: header.entry_type(),
                link: entry.link_name_bytes().map(std::borrow::Cow::into_owned),
                data,
                mode: header.mode().unwrap(),
                mtime: header.mtime().unwrap(),
                uid: header.uid().unwrap(),
                gid: header.gid().unwrap(),
                username: header.username_bytes().unwrap_or_default().to_vec(),
            }
        })
        .collect()
}

fn names(entries: &[Entry]) -> Vec<String> {
    entries
        .iter()
        .map(|e| String::from_utf8_lossy(&e.path).into_owned())
        .collect()
}

fn find<'a>(entries: &'a [Entry], path: &str) -> &'a Entry {
    entries
        .iter()
        .find(|e| e.path == path.as_bytes())
        .unwrap_or_else(|| panic!("{path} not in {:?}", names(entries)))
}

/// Ignored files and directories are absent; the rest is sent sorted, with
/// directories first and slash-terminated.
#[tokio::test]
async fn ignored_files_absent_and_order_sorted() {
    let dir = context_with(Some("*.log\nnode_modules\n**/tmp\n"));
    let root = dir.path();
    write(&root.join("b.txt"), "b");
    write(&root.join("a.log"), "log");
    write(&root.join("src/main.rs"), "fn main() {}");
    write(&root.join("src/tmp/x"), "x");
    write(&root.join("src/debug.log"), "kept: `*` does not cross `/`");
    write(&root.join("node_modules/pkg/index.js"), "js");
    let (entries, stats) = tar_of(root, &root.join("Dockerfile")).await;
    assert_eq!(
        names(&entries),
        [
            ".dockerignore",
            "Dockerfile",
            "b.txt",
            "src/",
            "src/debug.log",
            "src/main.rs"
        ]
    );
    assert_eq!(stats.files, 5);
    assert_eq!(stats.directories, 1);
    assert_eq!(stats.excluded, 3);
}

/// `!build/keep.txt` re-includes one file of an excluded directory; as in
/// Docker, the excluded directory itself gets no header.
#[tokio::test]
async fn reincluded_file_under_excluded_dir_is_sent_without_dir_header() {
    let dir = context_with(Some("build\n!build/keep.txt\n"));
    let root = dir.path();
    write(&root.join("build/keep.txt"), "keep");
    write(&root.join("build/drop.txt"), "drop");
    write(&root.join("build/sub/deep.txt"), "drop");
    let (entries, _) = tar_of(root, &root.join("Dockerfile")).await;
    assert_eq!(
        names(&entries),
        [".dockerignore", "Dockerfile", "build/keep.txt"]
    );
    assert_eq!(find(&entries, "build/keep.txt").data, b"keep");
}

/// An ignore file that excludes everything still sends the Dockerfile and the
/// `.dockerignore` (the CLI's `TrimBuildFilesFromExcludes`), even from an
/// excluded directory.
#[tokio::test]
async fn dockerfile_and_dockerignore_always_sent() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(&root.join(DOCKERIGNORE), "*\n");
    write(&root.join("docker/Dockerfile"), "FROM scratch\n");
    write(&root.join("docker/other"), "x");
    write(&root.join("app.py"), "print()");
    let prepared = prepare(root, &root.join("docker/Dockerfile")).unwrap();
    assert_eq!(prepared.dockerfile_name(), "docker/Dockerfile");
    assert!(prepared.outside.is_none());
    let (tar, result, _) = collect(prepared).await;
    assert_eq!(
        names(&entries(&tar)),
        [".dockerignore", "docker/Dockerfile"]
    );
    assert_eq!(result.unwrap().excluded, 3);
}

/// Symlinks to secrets, to the parent, to absolute directories and to nothing
/// are sent as symlink entries with their targets and never followed.
#[tokio::test]
async fn symlinks_sent_as_links_never_followed() {
    let dir = context_with(None);
    let root = dir.path();
    symlink("/etc/shadow", root.join("shadow")).unwrap();
    symlink("..", root.join("up")).unwrap();
    symlink("/etc", root.join("etc")).unwrap();
    symlink("missing", root.join("dangling")).unwrap();
    let (entries, stats) = tar_of(root, &root.join("Dockerfile")).await;
    assert_eq!(
        names(&entries),
        ["Dockerfile", "dangling", "etc", "shadow", "up"]
    );
    for (path, target) in [
        ("shadow", "/etc/shadow"),
        ("up", ".."),
        ("etc", "/etc"),
        ("dangling", "missing"),
    ] {
        let entry = find(&entries, path);
        assert_eq!(entry.kind, EntryType::Symlink, "{path}");
        assert_eq!(entry.link.as_deref(), Some(target.as_bytes()), "{path}");
        assert!(entry.data.is_empty(), "{path}");
    }
    assert_eq!(stats.symlinks, 4);
}

/// A second path to a file is a hard link entry to the first path written, with no data,
/// as the CLI's tar has it; a first path the ignore file leaves out does not count, so
/// the next path carries the bytes.
#[tokio::test]
async fn hard_links_are_link_entries_to_the_first_path_sent() {
    let dir = context_with(Some("a.skip\n"));
    let root = dir.path();
    write(&root.join("b/file"), "linked");
    std::fs::hard_link(root.join("b/file"), root.join("c")).unwrap();
    std::fs::hard_link(root.join("b/file"), root.join("a")).unwrap();
    write(&root.join("a.skip"), "first name ignored");
    std::fs::hard_link(root.join("a.skip"), root.join("d")).unwrap();
    let (entries, stats) = tar_of(root, &root.join("Dockerfile")).await;
    let (a, file, c, d) = (
        find(&entries, "a"),
        find(&entries, "b/file"),
        find(&entries, "c"),
        find(&entries, "d"),
    );
    assert_eq!(
        (a.kind, a.data.as_slice()),
        (EntryType::Regular, &b"linked"[..])
    );
    for link in [file, c] {
        assert_eq!(link.kind, EntryType::Link);
        assert_eq!(link.link.as_deref(), Some(&b"a"[..]));
        assert!(link.data.is_empty());
    }
    assert_eq!(
        (d.kind, d.data.as_slice()),
        (EntryType::Regular, &b"first name ignored"[..])
    );
    let sent: usize = entries.iter().map(|e| e.data.len()).sum();
    assert_eq!(
        stats.bytes, sent as u64,
        "each file's bytes are counted once"
    );
}

/// A symlinked context root is resolved once and walked.
#[tokio::test]
async fn symlinked_context_root_is_resolved() {
    let dir = context_with(None);
    let link_dir = tempfile::tempdir().unwrap();
    let link = link_dir.path().join("ctx");
    symlink(dir.path(), &link).unwrap();
    let (entries, _) = tar_of(&link, &link.join("Dockerfile")).await;
    assert_eq!(names(&entries), ["Dockerfile"]);
}

/// A Dockerfile outside the context travels under `.dockerfile.<sha256[:20]>`,
/// and a synthesized `.dockerignore` names it so the daemon drops both.
#[tokio::test]
async fn outside_dockerfile_sent_under_generated_name_with_generated_dockerignore() {
    let dir = tempfile::tempdir().unwrap();
    write(&dir.path().join("app/main.py"), "print()");
    write(&dir.path().join("ci/Dockerfile"), "FROM scratch\n");
    let context = dir.path().join("app");
    let prepared = prepare(&context, &dir.path().join("ci/Dockerfile")).unwrap();
    let name = prepared.dockerfile_name().to_owned();
    assert_eq!(
        name,
        format!(
            ".dockerfile.{}",
            &hex(Sha256::digest(b"FROM scratch\n").as_slice())[..20]
        )
    );
    assert!(prepared.outside.is_some());
    let (tar, result, _) = collect(prepared).await;
    result.unwrap();
    let entries = entries(&tar);
    assert_eq!(
        names(&entries),
        ["main.py".to_owned(), name.clone(), DOCKERIGNORE.to_owned()]
    );
    assert_eq!(find(&entries, &name).data, b"FROM scratch\n");
    assert_eq!(find(&entries, &name).mode, 0o600);
    assert_eq!(
        find(&entries, DOCKERIGNORE).data,
        format!(".dockerignore\n{name}\n").as_bytes()
    );
}

/// With an outside Dockerfile, an existing `.dockerignore` keeps its place and
/// content and mode and gains a line naming the generated Dockerfile, as the CLI does.
#[tokio::test]
async fn outside_dockerfile_appends_name_to_existing_dockerignore() {
    let dir = tempfile::tempdir().unwrap();
    let context = dir.path().join("app");
    write(&context.join(DOCKERIGNORE), "*.log");
    fs::set_permissions(
        context.join(DOCKERIGNORE),
        fs::Permissions::from_mode(0o640),
    )
    .unwrap();
    write(&context.join("z.txt"), "z");
    write(&context.join("a.log"), "a");
    let outside = tempfile::NamedTempFile::new().unwrap();
    fs::write(outside.path(), "FROM busybox\n").unwrap();
    let prepared = prepare(&context, outside.path()).unwrap();
    let name = prepared.dockerfile_name().to_owned();
    let (tar, _, _) = collect(prepared).await;
    let entries = entries(&tar);
    assert_eq!(
        names(&entries),
        [DOCKERIGNORE.to_owned(), "z.txt".to_owned(), name.clone()]
    );
    assert_eq!(
        find(&entries, DOCKERIGNORE).data,
        format!("*.log\n{name}\n").as_bytes()
    );
    assert_eq!(find(&entries, DOCKERIGNORE).mode, 0o640);
}

/// Makes a directory whose walk must fail: its nested path is longer than
/// `PATH_MAX`, so lstat on it fails even for root. `mkdir -p` can build it because
/// it descends one component at a time.
fn unwalkable_tree(parent: &Path) {
    fs::create_dir_all(parent).unwrap();
    let deep = vec!["d".repeat(250); 20].join("/");
    let status = std::process::Command::new("mkdir")
        .arg("-p")
        .arg(deep)
        .current_dir(parent)
        .status()
        .unwrap();
    assert!(status.success());
}

/// An excluded directory without exceptions is pruned unopened: walking the
/// tree inside it would fail, and the build succeeds.
#[tokio::test]
async fn excluded_dir_pruned_without_walking_it() {
    let dir = context_with(Some("node_modules\n"));
    unwalkable_tree(&dir.path().join("node_modules"));
    let (entries, stats) = tar_of(dir.path(), &dir.path().join("Dockerfile")).await;
    assert_eq!(names(&entries), [".dockerignore", "Dockerfile"]);
    assert_eq!(stats.excluded, 1);
}

/// An exception that cannot apply below an excluded directory (moby's textual
/// prefix rule) does not make the walk enter it either.
#[tokio::test]
async fn unrelated_exception_does_not_unprune_excluded_dir() {
    let dir = context_with(Some("node_modules\n!src/keep\n"));
    unwalkable_tree(&dir.path().join("node_modules"));
    let (entries, _) = tar_of(dir.path(), &dir.path().join("Dockerfile")).await;
    assert_eq!(names(&entries), [".dockerignore", "Dockerfile"]);
}

/// A walk error ends the stream with an `Err` item (so the upload fails) and
/// the handle reports it typed, naming the path.
#[tokio::test]
async fn walk_error_ends_stream_with_err_and_typed_handle_error() {
    let dir = context_with(None);
    unwalkable_tree(&dir.path().join("deep"));
    let prepared = prepare(dir.path(), &dir.path().join("Dockerfile")).unwrap();
    let (_, result, stream_error) = collect(prepared).await;
    let err = result.unwrap_err();
    assert!(
        matches!(&err, ContextError::Unreadable { path, .. } if path.starts_with(dir.path().join("deep"))),
        "{err}"
    );
    assert_eq!(stream_error, Some(err.to_string()));
}

/// An unreadable file fails the build naming it (checked only when file
/// permissions bind this process, i.e. not as root).
#[tokio::test]
async fn unreadable_file_fails_naming_path() {
    let dir = context_with(None);
    let secret = dir.path().join("secret");
    write(&secret, "x");
    fs::set_permissions(&secret, fs::Permissions::from_mode(0o000)).unwrap();
    if File::open(&secret).is_ok() {
        eprintln!("skipped: running with permission to read mode-000 files");
        return;
    }
    let prepared = prepare(dir.path(), &dir.path().join("Dockerfile")).unwrap();
    let (_, result, stream_error) = collect(prepared).await;
    let err = result.unwrap_err();
    assert!(
        matches!(&err, ContextError::Unreadable { path, .. } if *path == secret),
        "{err}"
    );
    assert!(stream_error.is_some());
}

/// Compiles only for what `bollard::body_try_stream` accepts.
fn upload_ready<S: Stream<Item = io::Result<Bytes>> + Send + 'static>(_: &S) {}

/// Dropping the stream part-way stops the writer with an error instead of
/// leaving it blocked forever.
#[tokio::test]
async fn dropped_stream_ends_task_with_receiver_dropped() {
    let dir = context_with(None);
    File::create(dir.path().join("big"))
        .unwrap()
        .set_len(32 << 20)
        .unwrap();
    let (stream, handle) = prepare(dir.path(), &dir.path().join("Dockerfile"))
        .unwrap()
        .stream();
    upload_ready(&stream);
    let mut stream = Box::pin(stream);
    assert!(stream.next().await.unwrap().is_ok());
    drop(stream);
    let result = tokio::time::timeout(Duration::from_secs(10), handle)
        .await
        .expect("writer hung")
        .unwrap();
    assert!(
        matches!(result, Err(ContextError::ReceiverDropped)),
        "{result:?}"
    );
}

/// A 64 MiB file streams in chunks of at most 64 KiB with never more than the
/// channel's capacity queued, even behind a slow consumer.
#[tokio::test]
async fn large_file_streams_with_bounded_chunks_and_queue() {
    let dir = context_with(None);
    let size: u64 = 64 << 20;
    File::create(dir.path().join("big"))
        .unwrap()
        .set_len(size)
        .unwrap();
    let (stream, handle) = prepare(dir.path(), &dir.path().join("Dockerfile"))
        .unwrap()
        .stream();
    let mut stream = Box::pin(stream);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (mut total, mut largest) = (0u64, 0usize);
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.unwrap();
        largest = largest.max(chunk.len());
        total += chunk.len() as u64;
    }
    let stats = handle.await.unwrap().unwrap();
    assert_eq!(largest, CHUNK_SIZE);
    assert_eq!(stats.tar_bytes, total);
    assert_eq!(stats.bytes, size + 13);
    // Two headers, the Dockerfile padded to a block, the file, the trailer.
    assert_eq!(total, 512 + 512 + 512 + size + 1024);
    assert!(stats.peak_queued_chunks <= CHANNEL_CAPACITY, "{stats:?}");
    assert!(
        stats.peak_queued_chunks >= CHANNEL_CAPACITY - 1,
        "a slow consumer should fill the queue: {stats:?}"
    );
}

/// Modes, mtimes, root ownership without names, long and non-UTF-8 names and
/// long link targets all survive the trip.
#[tokio::test]
async fn metadata_long_names_and_non_utf8_names_preserved() {
    let dir = context_with(None);
    let root = dir.path();
    let long_dir = root.join("l".repeat(80)).join("m".repeat(80));
    write(&long_dir.join("file.txt"), "long");
    let script = root.join("run.sh");
    write(&script, "#!/bin/sh");
    fs::set_permissions(&script, fs::Permissions::from_mode(0o4755)).unwrap();
    File::options()
        .write(true)
        .open(&script)
        .unwrap()
        .set_modified(std::time::UNIX_EPOCH + Duration::from_secs(1_000_000))
        .unwrap();
    let odd = root.join(std::ffi::OsStr::from_bytes(b"caf\xE9"));
    write(&odd, "latin1");
    let long_target = "t".repeat(150);
    symlink(&long_target, root.join("longlink")).unwrap();
    let (entries, _) = tar_of(root, &root.join("Dockerfile")).await;

    let long_path = format!("{}/{}/file.txt", "l".repeat(80), "m".repeat(80));
    assert_eq!(find(&entries, &long_path).data, b"long");
    assert_eq!(
        find(&entries, &format!("{}/", "l".repeat(80))).kind,
        EntryType::Directory
    );
    let run = find(&entries, "run.sh");
    assert_eq!(
        (run.mode, run.mtime, run.uid, run.gid),
        (0o4755, 1_000_000, 0, 0)
    );
    assert!(run.username.is_empty());
    let odd_entry = entries
        .iter()
        .find(|e| e.path == b"caf\xE9")
        .expect("non-UTF-8 name");
    assert_eq!(odd_entry.data, b"latin1");
    assert_eq!(
        find(&entries, "longlink").link.as_deref(),
        Some(long_target.as_bytes())
    );
}

/// Sockets cannot be sent and are skipped, not fatal.
#[tokio::test]
async fn socket_skipped_with_warning() {
    let dir = context_with(None);
    let _listener = std::os::unix::net::UnixListener::bind(dir.path().join("sock")).unwrap();
    let (entries, stats) = tar_of(dir.path(), &dir.path().join("Dockerfile")).await;
    assert_eq!(names(&entries), ["Dockerfile"]);
    assert_eq!(stats.skipped_special, 1);
}

/// `<Dockerfile>.dockerignore` next to the Dockerfile wins over the context's.
#[tokio::test]
async fn dockerfile_specific_ignore_file_wins() {
    let dir = context_with(Some("a.txt\n"));
    let root = dir.path();
    write(&root.join("Dockerfile.dockerignore"), "b.txt\n");
    write(&root.join("a.txt"), "a");
    write(&root.join("b.txt"), "b");
    let prepared = prepare(root, &root.join("Dockerfile")).unwrap();
    assert_eq!(
        prepared.ignore_file(),
        Some(root.join("Dockerfile.dockerignore").as_path())
    );
    let (tar, _, _) = collect(prepared).await;
    assert_eq!(
        names(&entries(&tar)),
        [
            ".dockerignore",
            "Dockerfile",
            "Dockerfile.dockerignore",
            "a.txt"
        ]
    );
}

/// Each kind of bad input fails `prepare` with an error naming the path and the
/// action input at fault.
#[test]
fn prepare_rejects_bad_input_naming_the_path() {
    let dir = context_with(None);
    let root = dir.path();
    let missing = root.join("nope");
    let err = prepare(&missing, &root.join("Dockerfile")).unwrap_err();
    assert!(
        matches!(&err, ContextError::ContextMissing { path, .. } if *path == missing),
        "{err}"
    );
    assert_eq!(
        (err.input_name(), err.path()),
        ("context", Some(missing.as_path()))
    );

    let err = prepare(&root.join("Dockerfile"), &root.join("Dockerfile")).unwrap_err();
    assert!(
        matches!(err, ContextError::ContextNotDirectory { .. }),
        "{err}"
    );

    let err = prepare(root, &missing).unwrap_err();
    assert!(
        matches!(&err, ContextError::DockerfileMissing { path, .. } if *path == missing),
        "{err}"
    );
    assert!(err.to_string().contains("nope"));
    assert_eq!(
        (err.input_name(), err.path()),
        ("dockerfile", Some(missing.as_path()))
    );

    fs::create_dir(root.join("dir")).unwrap();
    let err = prepare(root, &root.join("dir")).unwrap_err();
    assert!(
        matches!(err, ContextError::DockerfileIsDirectory { .. }),
        "{err}"
    );
}

/// A bad pattern fails `prepare` with the ignore file's path and line.
#[test]
fn invalid_dockerignore_reports_path_and_line() {
    let dir = context_with(Some("# ok\n*.log\n\n!\n"));
    let err = prepare(dir.path(), &dir.path().join("Dockerfile")).unwrap_err();
    let ContextError::IgnoreFileInvalid { path, source } = &err else {
        panic!("{err}");
    };
    assert_eq!(*path, dir.path().join(DOCKERIGNORE));
    assert_eq!(*source, DockerignoreError::IllegalExclusion { line: 4 });
    assert!(err.to_string().contains("line 4"), "{err}");
}

/// An ignore file that cannot be read (here, a directory) is its own error.
#[test]
fn unreadable_dockerignore_is_reported() {
    let dir = context_with(None);
    fs::create_dir(dir.path().join(DOCKERIGNORE)).unwrap();
    let err = prepare(dir.path(), &dir.path().join("Dockerfile")).unwrap_err();
    assert!(
        matches!(err, ContextError::IgnoreFileUnreadable { .. }),
        "{err}"
    );
}
