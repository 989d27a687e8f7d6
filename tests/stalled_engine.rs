//! Docker daemons that stop moving: a socket that accepts and never answers (the action
//! fails at connect, in seconds, naming `DOCKER_HOST`), and a daemon of our own on a unix
//! socket whose image export or push stops making progress (each fails after the stall
//! timeout, naming the daemon). A quiet build step, which sends nothing for longer than
//! the stall timeout, is not taken for a stall. (The registry side:
//! `tests/stalled_registry.rs`.)

mod support;

use std::io::Read as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ecr_build_push::ecr::{RegistryAuth, Secret};
use ecr_build_push::engine::push::{self, PushTarget};
use ecr_build_push::engine::Engine;
use ecr_build_push::env::DockerEnv;
use ecr_build_push::network::stall::StallTimeout;
use ecr_build_push::publish::export::{ExportStart, Feeder};
use ecr_build_push::registry::RetryPolicy;
use ecr_build_push::runner::Runner;
use futures_util::StreamExt as _;
use support::{standin, unique, RunResult, Workspace};

const STALL: &str = "ECR_BUILD_PUSH_STALL_TIMEOUT";

/// A unix socket that accepts connections and never answers them (a hung daemon).
struct HungSocket {
    dir: tempfile::TempDir,
}

impl HungSocket {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let listener = std::os::unix::net::UnixListener::bind(dir.path().join("docker.sock"))
            .expect("bind the hung socket");
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for stream in listener.incoming().flatten() {
                held.push(stream); // read nothing, answer nothing, close nothing
            }
        });
        Self { dir }
    }

    fn host(&self) -> String {
        format!("unix://{}", self.dir.path().join("docker.sock").display())
    }
}

fn hung_socket_run(socket: &HungSocket, stall: Option<&str>) -> (RunResult, Duration) {
    let ws = Workspace::new();
    ws.write("Dockerfile", "FROM local/busybox:latest\n");
    let mut action = standin()
        .action(ws.path())
        .input("repository", &unique("stalls/hung"))
        .env("DOCKER_HOST", &socket.host())
        .wrapped(&["timeout", "120"]);
    if let Some(stall) = stall {
        action = action.env(STALL, stall);
    }
    let started = Instant::now();
    let run = action.run();
    (run, started.elapsed())
}

/// A Docker socket that accepts and never answers fails the run at connect, within the
/// stall timeout (2 s here), naming the socket and `DOCKER_HOST`, instead of waiting for
/// the job's timeout.
#[test]
fn a_docker_socket_that_never_answers_fails_in_seconds() {
    let socket = HungSocket::start();
    let (run, took) = hung_socket_run(&socket, Some("2"));
    eprintln!("hung socket, stall timeout 2 s: failed after {took:.1?}");
    run.assert_one_error(&[&socket.host(), "DOCKER_HOST", "did not answer within 2 s"]);
    assert!(took < Duration::from_secs(15), "took {took:?}");
}

/// Without the variable, a control call is bounded by its own 30 s, not 6 hours.
#[test]
fn a_docker_socket_that_never_answers_fails_within_the_control_call_bound() {
    let socket = HungSocket::start();
    let (run, took) = hung_socket_run(&socket, None);
    eprintln!("hung socket, defaults: failed after {took:.1?}");
    run.assert_one_error(&[&socket.host(), "did not answer within 30 s"]);
    assert!(took < Duration::from_secs(45), "took {took:?}");
}

/// A build step that prints nothing for longer than the stall timeout (2 s; BuildKit's
/// floor is 15 s) is not a stall, under either builder: BuildKit's silent progress
/// stream is backed by its session health checks (every 5 s), and the classic builder's
/// output is not watched once it started.
#[test]
fn a_quiet_build_step_longer_than_the_stall_timeout_is_not_a_stall() {
    for builder in ["buildkit", "classic"] {
        let ws = Workspace::new();
        ws.write(
            "Dockerfile",
            "FROM local/busybox:latest\nRUN sleep 20 && echo slept > /slept\n",
        );
        let started = Instant::now();
        let run = standin()
            .action(ws.path())
            .input("repository", &unique("stalls/quiet"))
            .input("builder", builder)
            .input("no-cache", "true")
            .input("push", "false")
            .env(STALL, "2")
            .run();
        eprintln!(
            "{builder}: a 20 s quiet step built in {:.1?}",
            started.elapsed()
        );
        run.assert_success();
    }
}

/// A value the action cannot use fails the run before anything else, naming the
/// variable, the value and what it takes.
#[test]
fn an_unusable_stall_timeout_is_refused() {
    let ws = Workspace::new();
    ws.write("Dockerfile", "FROM local/busybox:latest\n");
    let run = standin()
        .action(ws.path())
        .input("repository", &unique("stalls/bad"))
        .env(STALL, "5 minutes")
        .run();
    run.assert_one_error(&[
        "invalid value `5 minutes` for ECR_BUILD_PUSH_STALL_TIMEOUT",
        "`90s`",
        "number of seconds",
    ]);
}

type Body = http_body_util::combinators::UnsyncBoxBody<Bytes, std::convert::Infallible>;

/// A Docker daemon of our own on a unix socket: enough of the Engine API to connect
/// (`/version`, `/info`, `/_ping`) and tag, then `export` for an image export and
/// `push` for a push.
struct FakeDaemon {
    dir: tempfile::TempDir,
}

/// How a fake daemon answers the export or the push.
#[derive(Clone, Copy)]
enum Stream {
    /// Silent for `silent`, then some bytes, then the end.
    LateThenDone { silent: Duration },
    /// Some bytes, then nothing, forever.
    SomeThenNothing,
    /// The same progress report every 100 ms, forever (the containerd store's pusher
    /// reporting a layer whose bytes no longer move).
    RepeatedReport,
}

impl FakeDaemon {
    fn start(stream: Stream) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let listener = tokio::net::UnixListener::bind(dir.path().join("docker.sock")).unwrap();
        tokio::spawn(async move {
            loop {
                let Ok((socket, _)) = listener.accept().await else {
                    continue;
                };
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request| {
                        std::future::ready(Ok::<_, std::convert::Infallible>(answer(
                            &request, stream,
                        )))
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(socket), service)
                        .await;
                });
            }
        });
        Self { dir }
    }

    fn host(&self) -> String {
        format!("unix://{}", self.dir.path().join("docker.sock").display())
    }

    async fn engine(&self, stall: Duration) -> Engine {
        Engine::connect(&DockerEnv {
            host: Some(self.host()),
            stall_timeout: StallTimeout::new(stall),
            ..DockerEnv::default()
        })
        .await
        .expect("connect to the fake daemon")
    }
}

fn answer(
    request: &hyper::Request<hyper::body::Incoming>,
    stream: Stream,
) -> hyper::Response<Body> {
    use http_body_util::BodyExt;
    let path = request.uri().path().to_string();
    let json = |text: &'static str| {
        BodyExt::boxed_unsync(http_body_util::Full::new(Bytes::from_static(
            text.as_bytes(),
        )))
    };
    let streamed = |stream: Stream| {
        let frames: futures_util::stream::BoxStream<'static, Bytes> = match stream {
            Stream::LateThenDone { silent } => futures_util::stream::once(async move {
                tokio::time::sleep(silent).await;
                Bytes::from_static(b"late but here")
            })
            .boxed(),
            Stream::SomeThenNothing => futures_util::stream::once(async {
                Bytes::from_static(b"some bytes")
            })
            .chain(futures_util::stream::pending())
            .boxed(),
            Stream::RepeatedReport => futures_util::stream::unfold((), |()| async {
                tokio::time::sleep(Duration::from_millis(100)).await;
                let line = r#"{"status":"Pushing","progressDetail":{"current":10,"total":100},"id":"abc"}"#;
                Some((Bytes::from(format!("{line}\n")), ()))
            })
            .boxed(),
        };
        let frames = frames.map(|bytes| Ok(hyper::body::Frame::data(bytes)));
        BodyExt::boxed_unsync(http_body_util::StreamBody::new(frames))
    };
    let response = hyper::Response::builder().header("content-type", "application/json");
    let response = if path.ends_with("/version") {
        response.body(json(r#"{"Version":"26.1.5","ApiVersion":"1.45"}"#))
    } else if path.ends_with("/info") {
        response.body(json("{}"))
    } else if path.ends_with("/tag") {
        response.status(201).body(json(""))
    } else if path.ends_with("/get") || path.ends_with("/push") {
        response.body(streamed(stream))
    } else {
        response.status(404).body(json(r#"{"message":"not here"}"#))
    };
    response.unwrap()
}

/// Reads a whole export as the direct push's reader does, on a blocking thread.
async fn read_export(engine: &Engine, start: ExportStart) -> std::io::Result<Vec<u8>> {
    let (_feeder, mut reader) = Feeder::start(
        &engine.docker,
        "sha256:abc",
        std::time::Instant::now(),
        engine.stall_timeout,
        start,
    );
    let read = tokio::task::spawn_blocking(move || {
        let mut all = Vec::new();
        reader.read_to_end(&mut all).map(|_| all)
    });
    // An export that hangs fails the test instead of hanging it.
    tokio::time::timeout(Duration::from_secs(30), read)
        .await
        .expect("the export ended")
        .unwrap()
}

/// An image export the daemon stops sending fails after the stall timeout (1 s), saying
/// so and what to do, not never.
#[tokio::test(flavor = "multi_thread")]
async fn an_export_the_daemon_stops_sending_fails_after_the_stall_timeout() {
    let daemon = FakeDaemon::start(Stream::SomeThenNothing);
    let engine = daemon.engine(Duration::from_secs(1)).await;
    let started = Instant::now();
    let err = read_export(&engine, ExportStart::AtOnce)
        .await
        .unwrap_err()
        .to_string();
    let took = started.elapsed();
    eprintln!("export stalled after its first bytes: failed after {took:.1?}");
    assert!(
        err.starts_with("the Docker daemon sent nothing more of the export for 1 s")
            && err.contains("ECR_BUILD_PUSH_STALL_TIMEOUT"),
        "{err}"
    );
    assert!(took < Duration::from_secs(5), "took {took:?}");
}

/// The classic store writes its whole export to disk before the first byte: that
/// silence (3 s here, against a 1 s stall timeout) is waited out; where the daemon
/// streams at once, the same silence is a stall.
#[tokio::test(flavor = "multi_thread")]
async fn the_classic_stores_silence_before_its_first_byte_is_waited_out() {
    let silent = Duration::from_secs(3);
    let daemon = FakeDaemon::start(Stream::LateThenDone { silent });
    let engine = daemon.engine(Duration::from_secs(1)).await;
    let export = read_export(&engine, ExportStart::AfterSilence)
        .await
        .expect("the late export");
    assert_eq!(export, b"late but here");
    let err = read_export(&engine, ExportStart::AtOnce)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("sent nothing more of the export for 1 s"),
        "{err}"
    );
}

/// The daemon's push repeating the same report (as the containerd store's pusher does
/// every 100 ms for a layer whose bytes no longer move) is not progress: the push fails
/// after the stall timeout (1 s), naming the daemon, not never.
#[tokio::test(flavor = "multi_thread")]
async fn a_push_whose_reports_stop_changing_fails_after_the_stall_timeout() {
    let daemon = FakeDaemon::start(Stream::RepeatedReport);
    let engine = daemon.engine(Duration::from_secs(1)).await;
    let auth = RegistryAuth {
        registry: "registry.test".into(),
        username: "AWS".into(),
        password: Secret::new("p".into()),
        token: Secret::new("t".into()),
        expires_at: None,
        renew: None,
        scheme: ecr_build_push::registry::Scheme::Basic,
    };
    let target = PushTarget {
        repository_ref: "registry.test/r",
        image_id: "sha256:abc",
        auth: &auth,
    };
    let runner = Runner::new(false, None, None, PathBuf::from("."));
    let started = Instant::now();
    let retry = RetryPolicy::DEFAULT.without_delays();
    let tags = ["v1".to_string()];
    let pushing = push::push(&engine, target, &tags, retry, &runner);
    let err = tokio::time::timeout(Duration::from_secs(30), pushing)
        .await
        .expect("the push ended")
        .unwrap_err();
    let took = started.elapsed();
    eprintln!("push repeating one report: failed after {took:.1?}");
    assert!(
        err.message.starts_with(&format!(
            "the Docker daemon at {} reported no progress for 1 s",
            daemon.host()
        )) && !err.transient,
        "{err}"
    );
    assert!(took < Duration::from_secs(5), "took {took:?}");
}
