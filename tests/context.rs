//! The build context as the daemon receives it, on the stand-in's engine: what
//! `.dockerignore` leaves out, where the Dockerfile may live, links that must not be
//! followed, and a tree with everything a real checkout holds, which must reach the image
//! exactly as the docker CLI sends it, with either builder.

mod support;

use std::fs;
use std::os::unix::fs::{chown, symlink, PermissionsExt as _};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime};

use support::{docker, docker_output, standin, unique, Workspace};

const BASE: &str = "local/busybox:latest";

/// A Dockerfile outside the context builds with BuildKit under `auto`, which reads it
/// from its own directory over the session, and it does not end up in the image (nor
/// does anything else of its directory); `dockerfile` relative to the workspace works.
/// The classic builder, which gets it inside the context tar under a generated name,
/// leaves it out of the image too.
#[test]
fn a_dockerfile_outside_the_context_builds() {
    let standin = standin();
    let ws = Workspace::new();
    ws.write(
        "build/app.Dockerfile",
        &format!("FROM {BASE}\nCOPY . /ctx/\n"),
    )
    .write("build/neighbour.txt", "not lent to the daemon\n")
    .write("src/main.txt", "code\n");
    let repo = unique("outside");
    for (builder, log) in [
        (
            "auto",
            "building with BuildKit (auto: the daemon supports it)",
        ),
        ("classic", "building with the classic builder (asked for)"),
    ] {
        let run = standin
            .action(ws.path())
            .input("repository", &repo)
            .input("context", "src")
            .input("dockerfile", "build/app.Dockerfile")
            .input("push", "false")
            .input("builder", builder)
            .run();
        run.assert_success();
        assert!(run.stderr.contains(log), "{builder}: {}", run.stderr);
        let image = run.output("image-uri");
        assert_eq!(
            docker(&["run", "--rm", image, "ls", "-A", "/ctx"]),
            "main.txt",
            "{builder}"
        );
        let _ = docker_output(&["rmi", "-f", image]);
    }
    assert!(
        standin.repository(&repo).is_none(),
        "build-only runs change nothing in AWS"
    );
}

/// `.dockerignore`d files are absent from a BuildKit build whose context went over the
/// session (`FileSync`), including under an excluded directory with an exception inside
/// it, which arrives with its parent; the log says how the context was sent.
#[test]
fn dockerignored_files_stay_out_of_a_buildkit_build_over_the_session() {
    let standin = standin();
    let ws = Workspace::new();
    ws.write(
        "Dockerfile",
        &format!("FROM {BASE}\nCOPY . /ctx/\nRUN cd /ctx && find . | sort > /listing\n"),
    )
    .write("keep.txt", "kept\n")
    .write("secret.env", "TOKEN=do-not-ship\n")
    .write("node_modules/dep/index.js", "ignored\n")
    .write("vendor/drop.txt", "ignored\n")
    .write("vendor/keep/me.txt", "re-included\n")
    .write(
        ".dockerignore",
        "secret.env\nnode_modules\nvendor\n!vendor/keep\n",
    );
    let run = standin
        .action(ws.path())
        .input("repository", &unique("filesync"))
        .input("push", "false")
        .input("builder", "buildkit")
        .run();
    run.assert_success();
    assert!(
        run.stderr
            .contains("sent over the BuildKit session (FileSync), .dockerignore applied"),
        "{}",
        run.stderr
    );
    // The line says how long the transfers took (the client's share of the build).
    let sent = run
        .stderr
        .lines()
        .find(|l| l.contains("build context sent over the session: "))
        .unwrap_or_else(|| panic!("no context line: {}", run.stderr));
    let seconds = sent
        .rsplit_once(", in ")
        .and_then(|(_, s)| s.strip_suffix(" s"))
        .and_then(|s| s.parse::<f64>().ok());
    assert!(seconds.is_some_and(|s| s >= 0.0), "{sent}");
    let image = run.output("image-uri");
    let listing = docker(&["run", "--rm", image, "cat", "/listing"]);
    assert_eq!(
        listing.lines().collect::<Vec<_>>(),
        [
            ".",
            "./.dockerignore",
            "./Dockerfile",
            "./keep.txt",
            "./vendor",
            "./vendor/keep",
            "./vendor/keep/me.txt"
        ]
    );
    let saved = docker_output(&["save", image]);
    assert!(!String::from_utf8_lossy(&saved.stdout).contains("do-not-ship"));
    let _ = docker_output(&["rmi", "-f", image]);
}

/// Symlinks in the context are sent as symlinks and never followed: a link to
/// /etc/shadow and one to `..` arrive in the image as links, without the target's bytes.
#[test]
fn symlinks_out_of_the_context_are_not_followed() {
    let standin = standin();
    let ws = Workspace::new();
    ws.write("ctx/Dockerfile", &format!("FROM {BASE}\nCOPY . /ctx/\n"))
        .write("ctx/file.txt", "inside\n");
    std::os::unix::fs::symlink("/etc/shadow", ws.path().join("ctx/shadow")).unwrap();
    std::os::unix::fs::symlink("..", ws.path().join("ctx/up")).unwrap();
    let run = standin
        .action(ws.path())
        .input("repository", &unique("symlinks"))
        .input("context", "ctx")
        .input("push", "false")
        .run();
    run.assert_success();
    let image = run.output("image-uri");
    let listing = docker(&[
        "run",
        "--rm",
        image,
        "sh",
        "-c",
        "readlink /ctx/shadow; readlink /ctx/up; ls -A /ctx",
    ]);
    assert_eq!(listing, "/etc/shadow\n..\nDockerfile\nfile.txt\nshadow\nup");
    let root_shadow = std::fs::read_to_string("/etc/shadow").unwrap_or_default();
    let first_line = root_shadow.lines().next().unwrap_or("root:");
    let saved = docker_output(&["save", image]);
    assert!(
        !String::from_utf8_lossy(&saved.stdout).contains(first_line),
        "the image holds /etc/shadow's content"
    );
    let _ = docker_output(&["rmi", "-f", image]);
}

/// Lists a copied tree inside the image, below the `COPY` targets (which the copy itself
/// creates): type, mode, link count, size, mtime to the nanosecond, symlink target, and
/// each file's MD5, one line per entry, sorted.
const LIST: &str = "RUN cd / && { find $DIRS -mindepth 1 -exec stat -c '%A %h %s %y %N' {} + ; \
                    find $DIRS -type f -exec md5sum {} + ; } | sort > /listing";

/// Writes a file at `relative` under `root` with `mode`, creating its folders.
fn put(root: &Path, relative: &str, content: &[u8], mode: u32) {
    let path = root.join(relative);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(&path, content).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
}

/// A checkout-like tree: odd names, modes with setuid, setgid and sticky bits, another
/// owner, empty files and folders, a file of many transfer chunks, hard links (one to a
/// file `.dockerignore` leaves out), relative, absolute, dangling and folder symlinks,
/// fixed nanosecond mtimes, and an ignore file with `**`, exceptions, a leading `/`, a
/// trailing `/` and paths to clean.
fn checkout_tree(root: &Path) {
    let mut noise = Vec::with_capacity(3 << 20);
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    while noise.len() < (3 << 20) + 17 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        noise.extend_from_slice(&x.to_le_bytes());
    }
    for (path, content, mode) in [
        ("plain.txt", &b"plain\n"[..], 0o644),
        ("exec.sh", b"#!/bin/sh\necho hi\n", 0o755),
        ("private.key", b"key\n", 0o600),
        ("setuid-bin", b"suid\n", 0o4755),
        ("setgid-bin", b"sgid\n", 0o2750),
        ("empty", b"", 0o644),
        ("big.bin", &noise, 0o644),
        ("with space.txt", b"space\n", 0o644),
        ("\u{fc}n\u{ef}c\u{f6}d\u{e9}.txt", b"unicode\n", 0o644),
        ("-dash", b"dash\n", 0o644),
        ("#hash", b"hash\n", 0o644),
        ("star*lit", b"star\n", 0o644),
        ("back\\slash", b"backslash\n", 0o644),
        ("dir/sub/deep/file.txt", b"deep\n", 0o640),
        ("dir/notes.tmp", b"ignored\n", 0o644),
        ("dir/cache/blob", b"ignored\n", 0o644),
        ("dir/cache/keep", b"re-included\n", 0o644),
        ("docs/guide/intro.md", b"ignored\n", 0o644),
        ("docs/guide/image.png", b"kept\n", 0o644),
        ("docs/README.md", b"re-included\n", 0o644),
        ("top-only.txt", b"ignored at the top\n", 0o644),
        ("nested/top-only.txt", b"kept below\n", 0o644),
        ("build/out.o", b"ignored\n", 0o644),
        ("hard/a", b"linked\n", 0o644),
        ("hard/x.tmp", b"first name ignored\n", 0o644),
        ("owned.txt", b"owned\n", 0o644),
    ] {
        put(root, path, content, mode);
    }
    fs::create_dir_all(root.join("dir/empty-dir")).unwrap();
    fs::create_dir_all(root.join("sticky")).unwrap();
    fs::set_permissions(root.join("sticky"), fs::Permissions::from_mode(0o1777)).unwrap();
    chown(root.join("owned.txt"), Some(1234), Some(5678)).unwrap();
    fs::hard_link(root.join("hard/a"), root.join("hard/b")).unwrap();
    fs::hard_link(root.join("hard/a"), root.join("dir/c")).unwrap();
    fs::hard_link(root.join("hard/x.tmp"), root.join("hard/y")).unwrap();
    fs::hard_link(root.join("big.bin"), root.join("dir/big-again.bin")).unwrap();
    fs::create_dir_all(root.join("links")).unwrap();
    symlink("../plain.txt", root.join("links/rel")).unwrap();
    symlink("/etc/hostname", root.join("links/abs")).unwrap();
    symlink("nowhere", root.join("links/dangling")).unwrap();
    symlink("../dir", root.join("links/dir")).unwrap();
    let when = SystemTime::UNIX_EPOCH + Duration::new(1_577_934_245, 123_456_789);
    for path in ["plain.txt", "big.bin", "dir/sub/deep/file.txt"] {
        fs::File::options()
            .write(true)
            .open(root.join(path))
            .unwrap()
            .set_modified(when)
            .unwrap();
    }
    fs::write(
        root.join(".dockerignore"),
        "# build output and caches\n**/*.tmp\n**/cache\n!**/cache/keep\ndocs/**/*.md\n\
         !docs/README.md\n/top-only.txt\nbuild/\n  ./dir/../ignored-too  \n",
    )
    .unwrap();
    put(root, "ignored-too", b"ignored\n", 0o644);
    fs::write(
        root.join("Dockerfile"),
        format!(
            "FROM {BASE}\nCOPY . /ctx/\n{}\n",
            LIST.replace("$DIRS", "ctx")
        ),
    )
    .unwrap();
    // COPY of some paths only: the frontend asks for them (include patterns), and the
    // symlinked folder as a source is followed to its target (followpaths).
    fs::write(
        root.join("narrow.Dockerfile"),
        format!(
            "FROM {BASE}\nCOPY links/dir /followed/\nCOPY *.txt /txt/\nCOPY hard /hard/\n\
             COPY docs/ /docs/\n{}\n",
            LIST.replace("$DIRS", "followed txt hard docs")
        ),
    )
    .unwrap();
}

/// A checkout-like tree ([`checkout_tree`]) reaches the image exactly as the docker CLI
/// sends it, entry for entry (type, mode, link count, size, nanosecond mtime, link
/// target, content), with `COPY .` and with a `COPY` of some paths through a symlinked
/// folder, for each builder: BuildKit over the session against `docker buildx build`,
/// the classic builder's tar against `DOCKER_BUILDKIT=0 docker build`. Both sides build
/// with no cache, so neither reuses the other's copy. The second build from the directory
/// is sent as a diff against what the daemon kept from the first: a regression test for
/// hard links sent with size 0, which BuildKit rewrote, leaving a `.tmp.<n>` file in the
/// image beside each.
#[test]
fn a_checkout_like_tree_reaches_the_image_as_the_docker_cli_sends_it() {
    let standin = standin();
    let ws = Workspace::new();
    checkout_tree(ws.path());
    let repo = unique("tree");
    for builder in ["buildkit", "classic"] {
        for dockerfile in ["Dockerfile", "narrow.Dockerfile"] {
            let cli_tag = unique("tree-cli");
            let mut cli = Command::new("docker");
            if builder == "classic" {
                cli.env("DOCKER_BUILDKIT", "0").arg("build");
            } else {
                cli.args(["buildx", "build", "--load"]);
            }
            let out = cli
                .args(["-q", "--no-cache", "-t", &cli_tag, "-f"])
                .arg(ws.path().join(dockerfile))
                .arg(ws.path())
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{builder} {dockerfile}, docker CLI: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let expected = docker(&["run", "--rm", &cli_tag, "cat", "/listing"]);
            let run = standin
                .action(ws.path())
                .input("repository", &repo)
                .input("dockerfile", dockerfile)
                .input("builder", builder)
                .input("no-cache", "true")
                .input("push", "false")
                .run();
            run.assert_success();
            let image = run.output("image-uri");
            let listing = docker(&["run", "--rm", image, "cat", "/listing"]);
            let _ = docker_output(&["rmi", "-f", image, &cli_tag]);
            let (ours, theirs): (Vec<_>, Vec<_>) =
                (listing.lines().collect(), expected.lines().collect());
            let only = |a: &[&str], b: &[&str]| -> Vec<String> {
                a.iter()
                    .filter(|l| !b.contains(l))
                    .map(|l| format!("  {l}"))
                    .collect()
            };
            assert!(
                ours == theirs,
                "{builder} {dockerfile}: the image differs from the CLI's.\nonly in ours:\n{}\nonly in the CLI's:\n{}",
                only(&ours, &theirs).join("\n"),
                only(&theirs, &ours).join("\n")
            );
            // The comparison is not vacuous: the tree's corners are in the listing.
            let has = |needle: &str| listing.lines().any(|l| l.contains(needle));
            assert!(
                !has("/.tmp."),
                "{builder} {dockerfile}: a stray file in\n{listing}"
            );
            if dockerfile == "Dockerfile" {
                // The classic builder keeps mtimes to the second, drops the setuid and
                // setgid bits, and loses an exception below an excluded folder, with the
                // CLI's context as with ours.
                let exact = if builder == "buildkit" {
                    [
                        "-rwsr-xr-x 1 5 ",
                        "2020-01-02 03:04:05.123456789",
                        "ctx/dir/cache/keep",
                    ]
                } else {
                    [
                        "-rwxr-xr-x 1 5 ",
                        "2020-01-02 03:04:05.000000000",
                        " ctx/dir/c",
                    ]
                };
                for needle in exact.into_iter().chain([
                    "drwxrwxrwt",
                    "'ctx/links/abs' -> '/etc/hostname'",
                    "'ctx/links/dangling' -> 'nowhere'",
                    "-rw-r--r-- 3 7 ",
                    "-rw-r--r-- 2 3145752 ",
                    "ctx/nested/top-only.txt",
                    "ctx/docs/README.md",
                    "ctx/hard/y",
                    "ctx/dir/empty-dir",
                    "ctx/back\\slash",
                ]) {
                    assert!(has(needle), "{builder}: no `{needle}` in\n{listing}");
                }
                for gone in [
                    "notes.tmp",
                    "cache/blob",
                    "intro.md",
                    " ctx/top-only.txt",
                    " ctx/build",
                    "ignored-too",
                    "x.tmp",
                ] {
                    assert!(
                        !has(gone),
                        "{builder}: `{gone}` is ignored, yet in\n{listing}"
                    );
                }
            } else {
                for needle in [
                    "followed/sub/deep/file.txt",
                    "txt/plain.txt",
                    "hard/b",
                    "docs/guide/image.png",
                ] {
                    assert!(
                        has(needle),
                        "{builder} {dockerfile}: no `{needle}` in\n{listing}"
                    );
                }
            }
        }
    }
}
