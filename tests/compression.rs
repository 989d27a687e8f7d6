//! How new layers travel, through the action on the engine under test (`DOCKER_HOST`):
//! the `compression` choice (gzip in Docker schema 2, zstd in an OCI manifest, on the
//! classic store compressed by the action, on the containerd store by BuildKit's
//! exporter), and the direct push's streaming (`push-engine: direct`, since `auto` on
//! the containerd store sends the blobs through the daemon's pusher): a layer larger than
//! one upload part streamed to the registry as it comes, an upload session the registry
//! loses started again from the spool, and a spool whose disk is full. Every pushed image
//! is pulled back and checked.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::json;
use support::{
    auto_pushes_blobs_through_the_daemon, docker, engine_is_containerd_store, standin, unique,
    RunResult, Workspace,
};

/// Bytes of the incompressible file: two and a half upload parts (10 MiB each).
const BIG: usize = 25 << 20;

/// Pseudo-random bytes (xorshift), so the layer does not shrink below one part.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// A workspace whose image adds a 25 MiB file of noise and a marker to busybox (or, with
/// `scratch`, holds the file alone: one layer, so its upload is the first `PATCH`).
fn big_workspace(repo: &str, scratch: bool) -> Workspace {
    let ws = Workspace::new();
    let dockerfile = if scratch {
        "FROM scratch\nCOPY big.bin /big.bin\n".to_string()
    } else {
        format!("FROM local/busybox:latest\nCOPY big.bin /big.bin\nRUN echo {repo} > /marker\n")
    };
    ws.write("Dockerfile", &dockerfile);
    let seed = repo
        .bytes()
        .fold(7u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
    std::fs::write(ws.path().join("big.bin"), noise(BIG, seed)).unwrap();
    ws
}

/// The registry's manifest of `repo:latest`: its media type, its config's, its layers'.
fn media_types(repo: &str) -> (String, String, Vec<String>) {
    let manifest = standin().registry_manifest(repo, "latest");
    let text = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_string();
    (
        text(&manifest["mediaType"]),
        text(&manifest["config"]["mediaType"]),
        manifest["layers"]
            .as_array()
            .expect("an image manifest")
            .iter()
            .map(|l| text(&l["mediaType"]))
            .collect(),
    )
}

/// Pulls the pushed image by digest and checks the big file came back whole, and, when
/// the image has a shell, that it runs.
fn assert_pulls_back(run: &RunResult, ws: &Workspace, runs: bool) {
    let s = standin();
    let by_digest = run.output("image-uri-by-digest").to_string();
    docker(&["rmi", "-f", &by_digest]);
    s.docker_pull(&by_digest);
    let container = docker(&["create", &by_digest, "/bin/true"]);
    let copied = tempfile::tempdir().unwrap();
    docker(&[
        "cp",
        &format!("{container}:/big.bin"),
        copied.path().to_str().unwrap(),
    ]);
    docker(&["rm", &container]);
    let back = std::fs::read(copied.path().join("big.bin")).unwrap();
    let sent = std::fs::read(ws.path().join("big.bin")).unwrap();
    assert!(back == sent, "the big file came back changed");
    if runs {
        let marker = docker(&["run", "--rm", &by_digest, "cat", "/marker"]);
        assert!(!marker.is_empty());
    }
    docker(&["rmi", "-f", &by_digest]);
}

/// How many part uploads (`PATCH`) of `repo` the front served.
fn patches(repo: &str) -> usize {
    std::fs::read_to_string("/var/lib/ecr-build-push-standin/front-requests.log")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(" PATCH ") && l.contains(&format!("/v2/{repo}/blobs/uploads/")))
        .count()
}

/// `compression: zstd` gives an OCI image manifest whose new layers are zstd, on both
/// image stores (the classic store's compressed by the action, the containerd store's by
/// BuildKit's exporter); the image pulls and runs, and `image-digest` is the registry's.
#[test]
fn zstd_pushes_an_oci_manifest_of_zstd_layers_that_pulls_and_runs() {
    let s = standin();
    let repo = unique("compression/zstd");
    let ws = big_workspace(&repo, false);
    let run = s
        .action(ws.path())
        .input("repository", &repo)
        .input("compression", "zstd")
        .input("compression-level", "2")
        .run();
    run.assert_success();
    assert_eq!(
        s.registry_digest(&repo, "latest").as_deref(),
        Some(run.output("image-digest"))
    );
    let (manifest, config, layers) = media_types(&repo);
    assert_eq!(manifest, "application/vnd.oci.image.manifest.v1+json");
    assert_eq!(config, "application/vnd.oci.image.config.v1+json");
    // The COPY and the RUN: new layers, compressed as asked. busybox's own layer is zstd
    // where the action compresses it, and stays as stored (gzip) where BuildKit does.
    let new = &layers[layers.len() - 2..];
    assert!(
        new.iter()
            .all(|m| m == "application/vnd.oci.image.layer.v1.tar+zstd"),
        "{layers:?}"
    );
    if !engine_is_containerd_store() {
        assert!(run.stderr.contains("(zstd level 2)"), "{}", run.stderr);
    }
    assert!(!run.stderr.contains("::warning::"), "{}", run.stderr);
    assert_pulls_back(&run, &ws, true);
}

/// A new layer larger than one upload part (25 MiB of noise) streams up as it is
/// compressed, in one `PATCH` like every other blob, as gzip in Docker schema 2 (the
/// default), and pulls back whole.
#[test]
fn a_layer_larger_than_a_part_streams_in_one_request() {
    let s = standin();
    let repo = unique("compression/parts");
    let ws = big_workspace(&repo, false);
    let run = s
        .action(ws.path())
        .input("repository", &repo)
        .input("push-engine", "direct")
        .run();
    run.assert_success();
    let (manifest, _, layers) = media_types(&repo);
    assert_eq!(
        manifest,
        "application/vnd.docker.distribution.manifest.v2+json"
    );
    assert!(
        layers
            .iter()
            .all(|m| m == "application/vnd.docker.image.rootfs.diff.tar.gzip"),
        "{layers:?}"
    );
    let pushed: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.contains(": Pushed "))
        .collect();
    // The image's blobs, and the provenance's two (the empty config and the statement).
    assert_eq!(
        patches(&repo),
        pushed.len() + 2,
        "one PATCH per blob: {pushed:#?}"
    );
    assert!(
        pushed
            .iter()
            .any(|l| l.contains(": Pushed 2") && l.contains(" MB in ")),
        "the 25 MiB layer is among them: {pushed:#?}"
    );
    assert!(!run.stderr.contains("::warning::"), "{}", run.stderr);
    assert_pulls_back(&run, &ws, true);
}

/// The registry loses the upload session of a streamed layer (`404 BLOB_UPLOAD_UNKNOWN`
/// on its first part): the rest still streams in, and the upload starts again from the
/// spool; the image lands and pulls back whole, without the daemon's pusher.
#[test]
fn a_lost_upload_session_starts_again_from_the_spool() {
    let s = standin();
    let repo = unique("compression/lost");
    let ws = big_workspace(&repo, true);
    lose_first_upload(&repo);
    let run = s
        .action(ws.path())
        .input("repository", &repo)
        .input("push-engine", "direct")
        .run();
    run.assert_success();
    assert_eq!(s.pending_faults(&repo), 0, "the fault was hit");
    assert!(
        run.stderr.contains("starting it again from its spool"),
        "{}",
        run.stderr
    );
    assert!(
        !run.stderr.contains("Docker daemon instead"),
        "{}",
        run.stderr
    );
    assert_pulls_back(&run, &ws, false);
}

/// The registry loses the first upload of `repo`: `404 BLOB_UPLOAD_UNKNOWN` to its first
/// `PATCH` (with `FROM scratch`, the big layer's).
fn lose_first_upload(repo: &str) {
    standin().inject_fault(
        &json!({"route": "registry", "mode": "status", "status": 404,
        "error": "BLOB_UPLOAD_UNKNOWN", "method": "PATCH", "repository": repo, "count": 1}),
    );
}

/// Regression: when one layer's upload was refused while the next layer still streamed,
/// the push waited for ever on the export's reader, which waited to hand data to an
/// upload nobody ran any more. A refusal (`403 DENIED`) of the first layer's upload, with
/// a second large layer behind it, ends in one clear error, in seconds.
#[test]
fn a_refused_layer_while_another_streams_fails_at_once() {
    let s = standin();
    let repo = unique("compression/refused");
    let ws = big_workspace(&repo, true);
    ws.write(
        "Dockerfile",
        "FROM scratch\nCOPY big.bin /big.bin\nCOPY second.bin /second.bin\n",
    );
    std::fs::write(ws.path().join("second.bin"), noise(BIG, 99)).unwrap();
    s.inject_fault(
        &json!({"route": "registry", "mode": "status", "status": 403,
        "error": "DENIED", "method": "PATCH", "repository": repo, "count": 1}),
    );
    let started = std::time::Instant::now();
    let run = s
        .action(ws.path())
        .input("repository", &repo)
        .input("push-engine", "direct")
        .run();
    assert!(!run.success, "{}", run.stderr);
    assert!(started.elapsed().as_secs() < 120, "the push hung");
    let errors = run.error_lines();
    assert_eq!(errors.len(), 1, "{}", run.stderr);
    assert!(
        errors[0].contains("DENIED") && errors[0].contains("HTTP 403"),
        "{}",
        errors[0]
    );
    assert_eq!(s.registry_digest(&repo, "latest"), None);
}

/// A tmpfs of 1 MiB, mounted for the test's life.
struct SmallDisk(tempfile::TempDir);

impl SmallDisk {
    fn mount() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
            .arg(dir.path())
            .status()
            .expect("mount");
        assert!(
            status.success(),
            "cannot mount a tmpfs (the tests run as root)"
        );
        Self(dir)
    }

    fn path(&self) -> PathBuf {
        self.0.path().to_path_buf()
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.0.path()).status();
    }
}

fn mentions(text: &str, dir: &Path) -> bool {
    text.contains(&dir.display().to_string())
}

/// A spool disk too small for the layer (`TMPDIR` on a 1 MiB tmpfs): the direct push's
/// layer still streams and lands, with a log line naming the folder. If the session is
/// then lost under `push-engine: auto`, where auto pushes directly, the direct push
/// cannot start again and says so, naming the folder, and the daemon's pusher pushes the
/// image instead; where auto sends the blobs through the daemon's pusher (the containerd
/// store on Docker 27 and later), no spool is involved and the image lands without a
/// warning.
#[test]
fn a_full_spool_disk_streams_on_and_says_where() {
    let s = standin();
    let disk = SmallDisk::mount();

    let repo = unique("compression/full");
    let ws = big_workspace(&repo, true);
    let run = s
        .action(ws.path())
        .input("repository", &repo)
        .input("push-engine", "direct")
        .env("TMPDIR", disk.path().to_str().unwrap())
        .run();
    run.assert_success();
    let spool_line = run
        .stderr
        .lines()
        .find(|l| l.contains("the spool in"))
        .unwrap_or_else(|| panic!("no spool line: {}", run.stderr));
    assert!(spool_line.starts_with("::warning::"), "{spool_line}");
    assert!(mentions(spool_line, &disk.path()), "{spool_line}");
    assert!(spool_line.contains("No space left"), "{spool_line}");
    assert!(
        !run.stderr.contains("Docker daemon instead"),
        "{}",
        run.stderr
    );
    assert_pulls_back(&run, &ws, false);

    let repo = unique("compression/full-lost");
    let ws = big_workspace(&repo, true);
    lose_first_upload(&repo);
    let run = s
        .action(ws.path())
        .input("repository", &repo)
        .env("TMPDIR", disk.path().to_str().unwrap())
        .run();
    run.assert_success();
    assert_eq!(
        s.registry_digest(&repo, "latest").as_deref(),
        Some(run.output("image-digest"))
    );
    if auto_pushes_blobs_through_the_daemon() {
        // One tag: the daemon's push is the whole of it.
        assert!(
            run.summary
                .contains("| Push engine | daemon (blobs and tag) |"),
            "{}",
            run.summary
        );
        // No spool warning. The daemon's pusher sends blobs without a `PATCH`, so the
        // lost session meets the provenance's upload instead, which starts again in a new
        // session and says so.
        let warnings: Vec<&str> = run
            .stderr
            .lines()
            .filter(|l| l.starts_with("::warning::"))
            .collect();
        assert!(
            warnings
                .iter()
                .all(|l| l.contains("was lost") && !l.contains("spool")),
            "{}",
            run.stderr
        );
        assert!(
            !run.output("provenance-digest").is_empty(),
            "{}",
            run.stderr
        );
        return;
    }
    let warning = run
        .stderr
        .lines()
        .find(|l| l.starts_with("::warning::") && l.contains("Docker daemon instead"))
        .unwrap_or_else(|| panic!("no fallback warning: {}", run.stderr));
    assert!(warning.contains("cannot start again"), "{warning}");
    assert!(
        warning.contains("it needs 26.") && warning.contains(" MB there"),
        "{warning}"
    );
    assert!(mentions(warning, &disk.path()), "{warning}");
}
