//! The registry refusing connections (its listener closed for a few seconds) while a
//! push runs: retried with backoff until it answers again. A test binary of its own,
//! because refusing hits every client of the registry, and cargo runs test binaries one
//! after another.

mod support;

use std::time::Instant;

use serde_json::json;
use support::{standin, unique, Workspace};

/// While the registry refuses connections, the push is retried with backoff until it
/// answers again.
#[test]
#[allow(clippy::similar_names)]
fn refused_connections_are_retried_until_the_registry_is_back() {
    let standin = standin();
    let repo = unique("faults/refuse");
    let ws = Workspace::new();
    ws.write(
        "Dockerfile",
        "FROM local/busybox:latest\nCOPY payload.txt /\n",
    )
    .write("payload.txt", &format!("{repo}\n{}", "x".repeat(200_000)));
    let started = Instant::now();
    // Refusing hits every client of the registry, so keep it short: other tests retry too.
    standin.inject_fault(&json!({"mode": "refuse", "route": "registry", "seconds": 3}));
    let run = standin.action(ws.path()).input("repository", &repo).run();
    run.assert_success();
    let digest = run.output("image-digest");
    assert_eq!(
        standin.registry_digest(&repo, "latest").as_deref(),
        Some(digest)
    );
    assert!(run.stderr.contains("attempt 1 of 4"), "{}", run.stderr);
    assert!(started.elapsed().as_secs() >= 3);
}
