//! The action's image, built from the repository's `Dockerfile` by `scripts/build-image`
//! (with a static binary made on this machine): small, carrying the public CA bundle,
//! resolving names through `/etc/hosts` without NSS, and doing a whole run over TLS the
//! way GitHub's runner starts a container action.

mod support;

use std::path::Path;
use std::process::Command;

use support::{action_image, docker, docker_output, standin, unique, Workspace};

const MAX_IMAGE_BYTES: u64 = 20 * 1000 * 1000;

/// Starts the image like GitHub's runner starts a container action: workspace mounted at
/// /github/workspace (the working directory), the Docker socket, `INPUT_*` variables, and
/// the runner's files under `/github/file_commands`.
fn run_container(
    ws: &Path,
    files: &Path,
    extra: &[&str],
    inputs: &[(&str, &str)],
) -> std::process::Output {
    let standin = standin();
    let mut command = Command::new("docker");
    command
        .args(["run", "--rm", "--network", "host"])
        .args(["-v", "/var/run/docker.sock:/var/run/docker.sock"])
        .arg("-v")
        .arg(format!("{}:/github/workspace", ws.display()))
        .arg("-v")
        .arg(format!("{}:/github/file_commands", files.display()))
        .args(["-w", "/github/workspace"])
        .args(["-e", "GITHUB_ACTIONS=true"])
        .args(["-e", "GITHUB_OUTPUT=/github/file_commands/output"])
        .args(["-e", "GITHUB_STEP_SUMMARY=/github/file_commands/summary"]);
    for (name, value) in &standin.env {
        if name.starts_with("AWS_") && name != "AWS_CA_BUNDLE" {
            command.args(["-e", &format!("{name}={value}")]);
        }
    }
    for (name, value) in inputs {
        command.args([
            "-e",
            &format!("INPUT_{}={value}", name.to_ascii_uppercase()),
        ]);
    }
    command.args(extra).arg(action_image());
    command.output().expect("docker run")
}

/// The image is at most 20 MB and holds only the binary and the CA bundle.
#[test]
fn the_image_is_small_and_minimal() {
    let image = action_image();
    let size: u64 = docker(&["image", "inspect", "-f", "{{.Size}}", image])
        .parse()
        .unwrap();
    assert!(size <= MAX_IMAGE_BYTES, "image is {size} bytes");
    let entrypoint = docker(&[
        "image",
        "inspect",
        "-f",
        "{{json .Config.Entrypoint}}",
        image,
    ]);
    assert_eq!(entrypoint, r#"["/ecr-build-push"]"#);
    println!("action image: {size} bytes");
}

/// The image trusts the public CAs (Mozilla's bundle, over 100 roots) and not the
/// stand-in's test CA: without it, TLS to the stand-in is refused as an unknown issuer,
/// which also proves the binary verifies certificates against the image's bundle.
#[test]
fn the_image_trusts_public_cas_and_verifies_certificates() {
    let image = action_image();
    let container = docker(&["create", image]);
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("bundle.crt");
    docker(&[
        "cp",
        &format!("{container}:/etc/ssl/certs/ca-certificates.crt"),
        bundle.to_str().unwrap(),
    ]);
    docker(&["rm", &container]);
    let roots = std::fs::read_to_string(&bundle)
        .unwrap()
        .matches("BEGIN CERTIFICATE")
        .count();
    assert!(roots > 100, "only {roots} CA certificates in the image");

    let ws = Workspace::new();
    ws.write("Dockerfile", "FROM scratch\nCOPY Dockerfile /\n");
    let files = tempfile::tempdir().unwrap();
    let out = run_container(
        ws.path(),
        files.path(),
        &[],
        &[("repository", &unique("tls"))],
    );
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        log.contains("UnknownIssuer")
            || log.contains("unknown issuer")
            || log.contains("certificate"),
        "{log}"
    );
}

/// A whole run from the image: it resolves the ECR API and registry host names from
/// /etc/hosts (a static binary on `scratch` has no NSS), reaches the stand-in over TLS
/// (trusting the test CA through `SSL_CERT_FILE`), pushes, and writes outputs that match
/// the registry.
#[test]
fn the_image_pushes_over_tls_resolving_names_from_etc_hosts() {
    let standin = standin();
    let ws = Workspace::new();
    ws.write(
        "Dockerfile",
        "FROM local/busybox:latest\nCOPY hello.txt /\nCMD [\"cat\", \"/hello.txt\"]\n",
    )
    .write("hello.txt", "hello from the action image\n");
    std::fs::copy(&standin.ca_cert, ws.path().join("test-ca.crt")).unwrap();
    let files = tempfile::tempdir().unwrap();
    let repo = unique("image");
    let out = run_container(
        ws.path(),
        files.path(),
        &["-e", "SSL_CERT_FILE=/github/workspace/test-ca.crt"],
        &[("repository", &repo), ("tags", "v1")],
    );
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    let outputs =
        support::parse_output_file(&std::fs::read_to_string(files.path().join("output")).unwrap());
    let digest = &outputs["image-digest"];
    let summary = std::fs::read_to_string(files.path().join("summary")).unwrap();
    assert!(
        summary.contains("| Push engine | direct |"),
        "{summary}\n{log}"
    );
    assert_eq!(standin.registry_digest(&repo, "v1").as_ref(), Some(digest));
    assert_eq!(
        docker(&["run", "--rm", &outputs["image-uri"]]),
        "hello from the action image"
    );
    let _ = docker_output(&["rmi", "-f", &outputs["image-uri"]]);
}
