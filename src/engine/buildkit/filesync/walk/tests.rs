use std::os::unix::fs::{symlink, PermissionsExt as _};

use super::*;

fn tree(files: &[(&str, &str)]) -> tempfile::TempDir {
    let files: Vec<(&str, &[u8])> = files.iter().map(|(n, c)| (*n, c.as_bytes())).collect();
    crate::engine::buildkit::filesync::test_tree(&files)
}

fn ignore(text: &str) -> BaseFilter {
    BaseFilter::Ignore(PatternMatcher::parse(text.as_bytes()).unwrap())
}

fn entries(root: &Path, base: &BaseFilter, request: &Request) -> Vec<Entry> {
    let filter = Filter::new(root, base, request).unwrap();
    let mut out = Vec::new();
    walk(root, &filter, true, |entry| {
        out.push(entry);
        Ok(())
    })
    .unwrap();
    out
}

fn paths(root: &Path, base: &BaseFilter, request: &Request) -> Vec<String> {
    entries(root, base, request)
        .into_iter()
        .map(|e| e.stat.path)
        .collect()
}

fn patterns(list: &[&str]) -> Vec<String> {
    list.iter().map(ToString::to_string).collect()
}

/// Unix modes become Go's `os.FileMode` bits, as fsutil's stat sends them.
#[test]
fn modes_are_go_file_modes() {
    assert_eq!(go_file_mode(0o100_644), 0o644);
    assert_eq!(go_file_mode(0o040_755), go_mode::DIR | 0o755);
    assert_eq!(go_file_mode(0o120_777), go_mode::SYMLINK | 0o777);
    assert_eq!(go_file_mode(0o104_755), go_mode::SETUID | 0o755);
    assert_eq!(go_file_mode(0o102_755), go_mode::SETGID | 0o755);
    assert_eq!(
        go_file_mode(0o041_777),
        go_mode::DIR | go_mode::STICKY | 0o777
    );
    assert_eq!(go_file_mode(0o010_600), go_mode::NAMED_PIPE | 0o600);
    assert_eq!(
        go_file_mode(0o020_660),
        go_mode::DEVICE | go_mode::CHAR_DEVICE | 0o660
    );
    assert_eq!(go_file_mode(0o140_755), go_mode::SOCKET | 0o755);
    assert_eq!(go_mode::TYPE & 0o7777, 0, "permission bits are no type");
}

/// The walk goes depth first with names in byte order (`a`, `a/x`, `a.txt`, as Go's
/// `WalkDir` and fsutil's receiver expect); each stat carries the Go mode, the size, the
/// mtime in nanoseconds, owner 0:0, a symlink's target (never followed) and, for a second
/// path to an inode, a hard link to the first that keeps its size (fsutil's `mkstat`).
#[test]
fn order_modes_links_and_owners_are_fsutils() {
    let dir = tree(&[("b", "bee"), ("a/x", "ex"), ("a.txt", "a text"), ("B", "")]);
    let root = dir.path();
    std::fs::set_permissions(root.join("a.txt"), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::hard_link(root.join("b"), root.join("h")).unwrap();
    symlink("/etc/shadow", root.join("l")).unwrap();
    std::fs::create_dir(root.join("empty")).unwrap();

    let found = entries(root, &ignore(""), &Request::default());
    let listed: Vec<&str> = found.iter().map(|e| e.stat.path.as_str()).collect();
    assert_eq!(listed, ["B", "a", "a/x", "a.txt", "b", "empty", "h", "l"]);

    let by_path = |p: &str| found.iter().find(|e| e.stat.path == p).unwrap();
    let a = by_path("a");
    assert_eq!(a.stat.mode & go_mode::DIR, go_mode::DIR);
    assert_eq!(a.stat.size, 0);
    assert!(a.file.is_none());

    let text = by_path("a.txt");
    assert_eq!(text.stat.mode, 0o755);
    assert_eq!(text.stat.size, 6);
    let meta = std::fs::metadata(root.join("a.txt")).unwrap();
    assert_eq!(
        text.stat.mod_time,
        meta.mtime() * 1_000_000_000 + meta.mtime_nsec()
    );
    assert_eq!((text.stat.uid, text.stat.gid), (0, 0));
    assert_eq!(text.file.as_ref().unwrap().path, root.join("a.txt"));

    let link = by_path("l");
    assert_eq!(link.stat.mode & go_mode::TYPE, go_mode::SYMLINK);
    assert_eq!(link.stat.linkname, "/etc/shadow");
    assert_eq!(link.stat.size, i64::try_from("/etc/shadow".len()).unwrap());
    assert!(link.file.is_none(), "a symlink has no data to ask for");

    let (first, second) = (by_path("b"), by_path("h"));
    assert_eq!((first.stat.linkname.as_str(), first.stat.size), ("", 3));
    assert_eq!((second.stat.linkname.as_str(), second.stat.size), ("b", 3));
}

/// Owners are the files' own unless reset (the Dockerfile's directory keeps them).
#[test]
fn owners_are_kept_unless_reset() {
    let dir = tree(&[("f", "x")]);
    let filter = Filter::new(dir.path(), &ignore(""), &Request::default()).unwrap();
    let meta = std::fs::metadata(dir.path().join("f")).unwrap();
    let mut seen = Vec::new();
    walk(dir.path(), &filter, false, |e| {
        seen.push((e.stat.uid, e.stat.gid));
        Ok(())
    })
    .unwrap();
    assert_eq!(seen, [(meta.uid(), meta.gid())]);
}

/// Our `.dockerignore` layer: an excluded directory is not walked, unless an exception
/// names something under it, which then arrives after its (excluded) parent, alone.
#[test]
fn ignored_paths_stay_out_and_exceptions_bring_their_parents() {
    let dir = tree(&[
        ("keep.txt", ""),
        ("secret.env", ""),
        ("node_modules/dep/index.js", ""),
        ("vendor/drop.txt", ""),
        ("vendor/keep/me.txt", ""),
    ]);
    let base = ignore("secret.env\nnode_modules\nvendor\n!vendor/keep\n");
    assert_eq!(
        paths(dir.path(), &base, &Request::default()),
        ["keep.txt", "vendor", "vendor/keep", "vendor/keep/me.txt"]
    );
}

/// fsutil walks into excluded directories when an exception has wildcards, so
/// `!**/keep` re-includes `dir/keep` (a tar context, by moby's archive rules, does not).
#[test]
fn wildcard_exceptions_are_matched_below_excluded_directories() {
    let dir = tree(&[("dir/keep", ""), ("dir/other", ""), ("top", "")]);
    assert_eq!(
        paths(dir.path(), &ignore("dir\n!**/keep\n"), &Request::default()),
        ["dir", "dir/keep", "top"]
    );
}

/// The request's `include-patterns` and `exclude-patterns` apply on top of ours, with
/// patternmatcher's semantics: a literal include walks only towards its path, a
/// wildcard one walks everything; a pattern can never bring back what we left out.
#[test]
fn request_patterns_apply_on_top_of_ours() {
    let dir = tree(&[
        ("a/b/c.txt", ""),
        ("a/b/d.txt", ""),
        ("a/other", ""),
        ("x.txt", ""),
        ("sub/y.txt", ""),
        ("secret.txt", ""),
    ]);
    let root = dir.path();
    let base = ignore("secret.txt\n");
    let include = |list: &[&str]| Request {
        include_patterns: patterns(list),
        ..Request::default()
    };
    assert_eq!(
        paths(root, &base, &include(&["a/b/c.txt"])),
        ["a", "a/b", "a/b/c.txt"]
    );
    assert_eq!(paths(root, &base, &include(&["*.txt"])), ["x.txt"]);
    assert_eq!(
        paths(root, &base, &include(&["**/*.txt"])),
        [
            "a",
            "a/b",
            "a/b/c.txt",
            "a/b/d.txt",
            "sub",
            "sub/y.txt",
            "x.txt"
        ]
    );
    assert!(!paths(root, &base, &include(&["secret.txt"])).contains(&"secret.txt".into()));
    let both = Request {
        include_patterns: patterns(&["a"]),
        exclude_patterns: patterns(&["a/b", "!a/b/d.txt"]),
        ..Request::default()
    };
    assert_eq!(
        paths(root, &base, &both),
        ["a", "a/b", "a/b/d.txt", "a/other"]
    );
}

/// `followpaths` are resolved through symlinks into include patterns (fsutil's
/// `FollowLinks`): the link and its target are sent, and a target outside the root (an
/// absolute one, or `..`) is looked for inside it, never outside.
#[test]
fn followpaths_resolve_symlinks_inside_the_root() {
    let dir = tree(&[
        ("real/Dockerfile.real", "FROM x"),
        ("real/unrelated", ""),
        ("other", ""),
        ("etc/passwd", "inside"),
    ]);
    let root = dir.path();
    symlink("real/Dockerfile.real", root.join("Dockerfile")).unwrap();
    symlink("/etc/passwd", root.join("abs")).unwrap();
    symlink("../../outside", root.join("up")).unwrap();
    let follow = |list: &[&str]| Request {
        follow_paths: patterns(list),
        ..Request::default()
    };
    assert_eq!(
        paths(root, &ignore(""), &follow(&["Dockerfile"])),
        ["Dockerfile", "real", "real/Dockerfile.real"]
    );
    assert_eq!(
        paths(root, &ignore(""), &follow(&["abs"])),
        ["abs", "etc", "etc/passwd"]
    );
    assert_eq!(paths(root, &ignore(""), &follow(&["up"])), ["up"]);
    assert_eq!(
        paths(root, &ignore(""), &follow(&["../other"])),
        Vec::<String>::new()
    );
    assert_eq!(
        paths(root, &ignore(""), &follow(&["Docker*"])),
        ["Dockerfile", "real", "real/Dockerfile.real"]
    );
    assert_eq!(
        paths(root, &ignore(""), &follow(&["."])),
        [
            "Dockerfile",
            "abs",
            "etc",
            "etc/passwd",
            "other",
            "real",
            "real/Dockerfile.real",
            "real/unrelated",
            "up"
        ]
    );
}

/// The Dockerfile's directory lends the Dockerfile and its own ignore file only.
#[test]
fn the_dockerfile_directory_lends_two_names_only() {
    let dir = tree(&[
        ("app.Dockerfile", "FROM x"),
        ("app.Dockerfile.dockerignore", "*.log"),
        ("neighbour.txt", ""),
        ("sub/app.Dockerfile", ""),
    ]);
    let base = BaseFilter::Names(BTreeSet::from([
        "app.Dockerfile".to_string(),
        "app.Dockerfile.dockerignore".to_string(),
    ]));
    assert_eq!(
        paths(dir.path(), &base, &Request::default()),
        ["app.Dockerfile", "app.Dockerfile.dockerignore"]
    );
}

/// An unreadable directory fails the walk with its path.
#[test]
fn an_unreadable_directory_names_itself() {
    let dir = tree(&[("f", "")]);
    let filter = Filter::new(dir.path(), &ignore(""), &Request::default()).unwrap();
    let missing = dir.path().join("gone");
    let err = walk(&missing, &filter, true, |_| Ok(())).unwrap_err();
    assert!(err.to_string().contains("gone"), "{err}");
}

/// fsutil's `dedupePaths`: paths below a listed one go, and `.` means no filter.
#[test]
fn followed_paths_are_deduplicated() {
    assert_eq!(
        dedupe_paths(patterns(&["a", "a/b", "ab", "c"])),
        Some(patterns(&["a", "ab", "c"]))
    );
    assert_eq!(dedupe_paths(patterns(&["a", "."])), None);
    assert!(contains_wildcards("a*"));
    assert!(!contains_wildcards("a\\*"));
    assert_eq!(join(".", "/x/y"), "x/y");
    assert_eq!(join("/", "a/../../b"), "/b");
}
