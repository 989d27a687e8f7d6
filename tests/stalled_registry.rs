//! Registries that stop moving, or send more than they said: a connection that stops
//! taking an upload's bytes (a relay in front of the stand-in's registry, so TLS and
//! ECR's rules are real), and a registry of our own (HTTPS, with a CA of its own) whose
//! answers never end, never come, or stall. Each fails after the stall timeout, not
//! hours, saying what stalled, where, for how long, and what to do; no answer is read
//! past what was expected of it. (The Docker side: `tests/stalled_engine.rs`.)

mod support;

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ecr_build_push::credentials::Secret;
use ecr_build_push::env::NetworkEnv;
use ecr_build_push::network::stall::StallTimeout;
use ecr_build_push::network::Network;
use ecr_build_push::registry::{BlobBody, Credentials, Login, Registry, RetryPolicy};
use futures_util::StreamExt as _;
use support::network::corporate_ca;
use support::{standin, unique, Workspace};

const STALL: &str = "ECR_BUILD_PUSH_STALL_TIMEOUT";

/// A TCP relay to `upstream` that stops reading what a client sends once a connection
/// has carried `threshold` bytes up (a registry, or a proxy, that stopped taking an
/// upload); answers still flow down. Counts the connections it stalled.
struct StallingRelay {
    addr: SocketAddr,
    stalled: Arc<AtomicUsize>,
}

impl StallingRelay {
    fn start(upstream: SocketAddr, threshold: u64) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        // A small window, so the client's bytes back up soon after the relay stops.
        socket.set_recv_buffer_size(64 << 10).unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = socket.local_addr().unwrap();
        let stalled = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&stalled);
        std::thread::spawn(move || {
            runtime.block_on(async move {
                let listener = socket.listen(64).unwrap();
                loop {
                    let Ok((client, _)) = listener.accept().await else {
                        continue;
                    };
                    let counter = Arc::clone(&counter);
                    tokio::spawn(relay(client, upstream, threshold, counter));
                }
            });
        });
        Self { addr, stalled }
    }
}

async fn relay(
    client: tokio::net::TcpStream,
    upstream: SocketAddr,
    threshold: u64,
    stalled: Arc<AtomicUsize>,
) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let Ok(server) = tokio::net::TcpStream::connect(upstream).await else {
        return;
    };
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    tokio::spawn(async move {
        let _ = tokio::io::copy(&mut server_read, &mut client_write).await;
    });
    let mut up = 0u64;
    let mut buf = vec![0u8; 16 << 10];
    loop {
        if up > threshold {
            stalled.fetch_add(1, Ordering::SeqCst);
            // Hold the connection open, reading nothing more, until the client leaves
            // (it can only notice by giving up).
            std::future::pending::<()>().await;
        }
        match client_read.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                up += n as u64;
                if server_write.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// Bytes that do not compress, so the layer's upload is as large as the file.
fn incompressible(len: usize) -> Vec<u8> {
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state.to_le_bytes()[0]
        })
        .collect()
}

/// A registry connection that stops taking a layer's upload mid-way (after 1 MiB; the
/// layer is 16 MiB) fails the push after the stall timeout (2 s here) on each attempt,
/// not after 3 hours: the error names the blob, the registry, the stalled `PATCH`, how
/// long nothing moved, and the variable to raise. The relay is the only way to the
/// registry (`registry-endpoint`), TLS still verifies the registry's name.
#[test]
fn a_registry_that_stops_reading_an_upload_fails_it_naming_the_blob() {
    let standin = standin();
    let repo = unique("stalls/upload");
    let upstream: SocketAddr = "127.0.0.2:443".parse().unwrap();
    let relay = StallingRelay::start(upstream, 1 << 20);
    let ws = Workspace::new();
    ws.write(
        "Dockerfile",
        "FROM local/busybox:latest\nCOPY payload.bin /\n",
    );
    std::fs::File::create(ws.path().join("payload.bin"))
        .unwrap()
        .write_all(&incompressible(16 << 20))
        .unwrap();
    let started = Instant::now();
    let run = standin
        .action(ws.path())
        .input("repository", &repo)
        .input("push-engine", "direct")
        .input("registry-endpoint", &relay.addr.to_string())
        .env(STALL, "2s")
        .env("ECR_BUILD_PUSH_NO_RETRY_DELAY", "1")
        // A push that hangs fails the test (no `::error::` line) instead of hanging it.
        .wrapped(&["timeout", "300"])
        .run();
    let took = started.elapsed();
    let stalled = relay.stalled.load(Ordering::SeqCst);
    eprintln!(
        "stalled upload: failed after {took:.1?} (build included), {stalled} connections stalled"
    );
    run.assert_one_error(&[
        "uploading blob sha256:",
        &standin.registry,
        &repo,
        "PATCH stalled",
        "for 2 s",
        "ECR_BUILD_PUSH_STALL_TIMEOUT",
    ]);
    // The streamed attempt, then the restarts from the spool: each stalled, none hung.
    assert!(
        stalled >= 2,
        "{stalled} connections stalled\n{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("starting it again in a new session"),
        "{}",
        run.stderr
    );
    assert!(took < Duration::from_secs(120), "took {took:?}");
}

/// What the registry of our own answers.
#[derive(Clone, Copy)]
enum Answer {
    /// 200 with a body that never ends (chunked, no length said).
    Endless,
    /// 200 claiming a length of 5 GB.
    Huge,
    /// 404 with a body that never ends.
    EndlessError,
    /// 200, ten bytes, then nothing, forever.
    StallsMidBody,
    /// Nothing: the request's body is left unread and no answer comes.
    Never,
}

/// An HTTPS registry on 127.0.0.1 for `registry.test`, with a CA of its own, answering
/// every request with `answer`; counts the body bytes it produced.
struct OwnRegistry {
    addr: SocketAddr,
    ca: PathBuf,
    produced: Arc<AtomicU64>,
    _dir: tempfile::TempDir,
}

impl OwnRegistry {
    async fn start(answer: Answer) -> Self {
        use rustls::pki_types::pem::PemObject as _;
        let (dir, ca, cert, key) = corporate_ca(&["registry.test"]);
        let certs = rustls::pki_types::CertificateDer::pem_file_iter(&cert)
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = rustls::pki_types::PrivateKeyDer::from_pem_file(&key).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let produced = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&produced);
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let (acceptor, counter) = (acceptor.clone(), Arc::clone(&counter));
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = hyper::service::service_fn(move |_request| {
                        respond(answer, Arc::clone(&counter))
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        Self {
            addr,
            ca,
            produced,
            _dir: dir,
        }
    }

    /// A client of `registry.test/r`, whose connections go here, trusting this CA.
    fn client(&self, stall: Duration) -> Registry {
        let network = Network::from_env(
            &NetworkEnv {
                ssl_cert_file: Some(self.ca.clone()),
                stall_timeout: StallTimeout::new(stall),
                ..NetworkEnv::default()
            },
            Some(self.addr.to_string()),
        )
        .unwrap();
        let login = Login {
            host: "registry.test".into(),
            credentials: Credentials {
                username: "AWS".into(),
                password: Secret::new("p".into()),
                expires_at: None,
                scheme: ecr_build_push::registry::Scheme::Basic,
            },
            renew: None,
        };
        Registry::connect(&login, "r", RetryPolicy::DEFAULT.without_delays(), &network).unwrap()
    }
}

type Body = http_body_util::combinators::BoxBody<Bytes, std::convert::Infallible>;

async fn respond(
    answer: Answer,
    produced: Arc<AtomicU64>,
) -> Result<hyper::Response<Body>, std::convert::Infallible> {
    use http_body_util::BodyExt;
    let endless = move || {
        let chunk = Bytes::from(vec![b'{'; 64 << 10]);
        let stream = futures_util::stream::repeat_with(move || {
            produced.fetch_add(chunk.len() as u64, Ordering::SeqCst);
            Ok(hyper::body::Frame::data(chunk.clone()))
        });
        BodyExt::boxed(http_body_util::StreamBody::new(stream))
    };
    let response = hyper::Response::builder();
    Ok(match answer {
        Answer::Endless => response.status(200).body(endless()),
        Answer::EndlessError => response.status(404).body(endless()),
        Answer::Huge => response
            .status(200)
            .header("content-length", "5000000000")
            .body(endless()),
        Answer::StallsMidBody => {
            let stream = futures_util::stream::once(async {
                Ok(hyper::body::Frame::data(Bytes::from_static(b"0123456789")))
            })
            .chain(futures_util::stream::pending());
            response
                .status(200)
                .body(BodyExt::boxed(http_body_util::StreamBody::new(stream)))
        }
        Answer::Never => std::future::pending().await,
    }
    .unwrap())
}

/// A manifest that never ends, and a config blob longer than its descriptor says, are
/// read up to the limit (4 MiB; the claimed 100 bytes) and no further: the reads end,
/// which they could not if the bodies were read whole, and fail saying why. A length
/// claimed over the limit is not read at all, and an error body that never ends is cut
/// short with its status kept.
#[tokio::test(flavor = "multi_thread")]
async fn answers_longer_than_expected_are_not_read_past_the_limit() {
    let endless = OwnRegistry::start(Answer::Endless).await;
    let reg = endless.client(Duration::from_secs(30));
    let started = Instant::now();
    let err = reg.get_manifest("r", "v1").await.unwrap_err();
    assert!(
        err.message
            .contains("larger than the 4194304 bytes (4 MiB)")
            && !err.transient,
        "{}",
        err.describe()
    );
    let err = reg.get_blob("r", "sha256:abc", 100).await.unwrap_err();
    assert!(
        err.message
            .contains("blob sha256:abc is larger than the 100 bytes expected"),
        "{}",
        err.describe()
    );
    eprintln!(
        "endless answers: refused after {:.1?}, {} MB produced by the server",
        started.elapsed(),
        endless.produced.load(Ordering::SeqCst) >> 20
    );

    let huge = OwnRegistry::start(Answer::Huge).await;
    let err = huge
        .client(Duration::from_secs(30))
        .get_blob("r", "sha256:abc", 100)
        .await
        .unwrap_err();
    assert!(
        err.message.contains("larger than the 100"),
        "{}",
        err.describe()
    );

    let error = OwnRegistry::start(Answer::EndlessError).await;
    let err = error
        .client(Duration::from_secs(30))
        .get_manifest("r", "v1")
        .await
        .unwrap_err();
    assert_eq!(err.status, Some(404), "{}", err.describe());
}

/// A registry that leaves a `PATCH`'s body unread and never answers fails the upload
/// after the stall timeout (1 s), though the body is 32 MiB and the request has no total
/// limit; an answer whose body stops coming fails a read the same way.
#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_upload_or_answer_fails_after_the_stall_timeout() {
    let never = OwnRegistry::start(Answer::Never).await;
    let reg = never.client(Duration::from_secs(1));
    let body = BlobBody::Memory(Bytes::from(vec![7u8; 32 << 20]));
    let started = Instant::now();
    let err = reg
        .patch_whole(
            "https://registry.test/v2/r/blobs/uploads/1",
            &body,
            32 << 20,
        )
        .await
        .unwrap_err();
    let took = started.elapsed();
    eprintln!("unread PATCH body: failed after {took:.1?}");
    assert!(
        err.message
            .starts_with("PATCH stalled: the registry took no more of the request")
            && err.message.contains("for 1 s")
            && err.transient,
        "{}",
        err.describe()
    );
    assert!(took < Duration::from_secs(5), "took {took:?}");

    // Streamed: the stalled connection is ended, so its body lets go, and the producer
    // learns at once that nothing more is taken (a layer's compressor would otherwise
    // wait on it forever).
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(4);
    let producer =
        tokio::spawn(
            async move { while tx.send(Bytes::from(vec![7u8; 1 << 20])).await.is_ok() {} },
        );
    let err = reg
        .patch_streamed("https://registry.test/v2/r/blobs/uploads/2", rx)
        .await
        .unwrap_err();
    assert!(
        err.message.starts_with("PATCH stalled"),
        "{}",
        err.describe()
    );
    tokio::time::timeout(Duration::from_secs(5), producer)
        .await
        .expect("the body of the stalled request was let go")
        .unwrap();

    let stalls = OwnRegistry::start(Answer::StallsMidBody).await;
    let started = Instant::now();
    let err = stalls
        .client(Duration::from_secs(1))
        .get_manifest("r", "v1")
        .await
        .unwrap_err();
    let took = started.elapsed();
    eprintln!("answer stalled mid-body: failed after {took:.1?}");
    assert!(
        err.message
            .starts_with("GET stalled: the answer's body stopped coming for 1 s"),
        "{}",
        err.describe()
    );
    assert!(took < Duration::from_secs(5), "took {took:?}");
}
