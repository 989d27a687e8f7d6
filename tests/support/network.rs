//! Network sandboxes for the proxy tests: a network namespace of the test's own whose
//! loopback reaches nothing of the host's, so the action's direct route to the stand-in's
//! ECR addresses (127.0.0.2 registry, 127.0.0.3 API) fails; `forward` opens chosen
//! routes (a socat pair joined by a unix socket, the only thing both namespaces share),
//! optionally re-signing TLS with another CA, as a corporate gateway does. A real proxy
//! (tinyproxy, from Debian) runs on the host's loopback and is forwarded into the
//! namespace at the same address. The Docker socket is a unix socket, reachable from
//! inside. Everything started here stops when the value is dropped.

use std::fmt::Write as _;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use std::sync::atomic::{AtomicU32, Ordering};

use super::ActionRun;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

fn wait_until(what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ready() {
        assert!(Instant::now() < deadline, "{what} did not come up in 10 s");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn run(program: &str, args: &[&str]) {
    let out = Command::new(program).args(args).output().expect(program);
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A network namespace with only its loopback up.
pub struct Namespace {
    pub name: String,
    dir: tempfile::TempDir,
    children: Vec<Child>,
}

/// How a forwarded port is served inside the namespace.
pub enum Serve<'a> {
    /// Bytes as they are.
    Plain,
    /// TLS ended inside with this certificate and key (PEM), re-opened to the host's port
    /// with TLS again: a gateway that re-signs.
    Resign { cert: &'a Path, key: &'a Path },
}

impl Namespace {
    pub fn new() -> Self {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        // Short: some tools take at most 15 bytes.
        let name = format!(
            "ebp{}n{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        run("ip", &["netns", "add", &name]);
        run("ip", &["-n", &name, "link", "set", "lo", "up"]);
        Self {
            name,
            dir: tempfile::tempdir().unwrap(),
            children: Vec::new(),
        }
    }

    fn spawn(&mut self, command: &mut Command) {
        let child = command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start socat");
        self.children.push(child);
    }

    /// Makes the host's `ip:port` answer at `ip:port` inside the namespace.
    pub fn forward(&mut self, ip: &str, port: u16, serve: &Serve) {
        self.forward_to(ip, port, ip, serve);
    }

    /// Makes the host's `host_ip:port` answer at `inside_ip:port` inside the namespace.
    pub fn forward_to(&mut self, inside_ip: &str, port: u16, host_ip: &str, serve: &Serve) {
        let ip = host_ip;
        let socket = self.dir.path().join(format!("{inside_ip}-{port}.sock"));
        let upstream = match serve {
            Serve::Plain => format!("TCP:{ip}:{port}"),
            // The gateway trusts what it forwards to (it re-signs whatever it sees).
            Serve::Resign { .. } => format!("OPENSSL:{ip}:{port},verify=0"),
        };
        self.spawn(
            Command::new("socat")
                .args([format!("UNIX-LISTEN:{},fork", socket.display()), upstream]),
        );
        wait_until("the host side of the forward", || socket.exists());
        let listen = match serve {
            Serve::Plain => format!("TCP-LISTEN:{port},bind={inside_ip},reuseaddr,fork"),
            Serve::Resign { cert, key } => format!(
                "OPENSSL-LISTEN:{port},bind={inside_ip},reuseaddr,fork,verify=0,cert={},key={}",
                cert.display(),
                key.display()
            ),
        };
        self.spawn(
            Command::new("ip")
                .args(["netns", "exec", &self.name, "socat"])
                .args([listen, format!("UNIX-CONNECT:{}", socket.display())]),
        );
        let name = self.name.clone();
        let probe = format!("exec 3<>/dev/tcp/{inside_ip}/{port}");
        wait_until("the namespace side of the forward", || {
            Command::new("ip")
                .args(["netns", "exec", &name, "bash", "-c", &probe])
                .status()
                .is_ok_and(|s| s.success())
        });
    }

    /// The action run inside the namespace.
    pub fn wrap(&self, run: ActionRun) -> ActionRun {
        run.wrapped(&["ip", "netns", "exec", &self.name])
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// A tinyproxy on the host's loopback, with its own log.
pub struct Proxy {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Child,
}

impl Proxy {
    /// Starts one; `auth` is `(user, password)` for Basic authentication.
    pub fn start(auth: Option<(&str, &str)>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        // tinyproxy drops to `nobody`, which must write the log.
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o777),
        )
        .unwrap();
        let port = free_port();
        let mut conf = format!(
            "User nobody\nGroup nogroup\nPort {port}\nListen 127.0.0.1\nTimeout 120\n\
             LogFile \"{}\"\nLogLevel Connect\nMaxClients 200\n",
            dir.path().join("log").display()
        );
        if let Some((user, password)) = auth {
            let _ = writeln!(conf, "BasicAuth {user} {password}");
        }
        let conf_path = dir.path().join("tinyproxy.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let child = Command::new("tinyproxy")
            .arg("-d")
            .arg("-c")
            .arg(&conf_path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start tinyproxy (scripts/setup installs it)");
        wait_until("tinyproxy", || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        Self { port, dir, child }
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("log")
    }

    /// The hosts it opened a tunnel to (`CONNECT host:port` requests it logged).
    pub fn connects(&self) -> Vec<String> {
        std::fs::read_to_string(self.log_path())
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split_once("): CONNECT ").map(|(_, rest)| rest))
            .map(|rest| rest.split_whitespace().next().unwrap_or("").to_string())
            .collect()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A CA of its own ("corporate") and a certificate from it for `names`, in a temporary
/// folder: `(dir, ca.crt, leaf.crt, leaf.key)`.
pub fn corporate_ca(names: &[&str]) -> (tempfile::TempDir, PathBuf, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name);
    let s = |path: PathBuf| path.to_string_lossy().into_owned();
    run(
        "openssl",
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=Corp Gateway test CA",
            "-keyout",
            &s(p("ca.key")),
            "-out",
            &s(p("ca.crt")),
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    );
    run(
        "openssl",
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-subj",
            &format!("/CN={}", names[0]),
            "-keyout",
            &s(p("leaf.key")),
            "-out",
            &s(p("leaf.csr")),
        ],
    );
    let san = names
        .iter()
        .map(|n| format!("DNS:{n}"))
        .collect::<Vec<_>>()
        .join(",");
    std::fs::write(
        p("ext"),
        format!(
            "subjectAltName={san}\nbasicConstraints=critical,CA:FALSE\n\
             extendedKeyUsage=serverAuth\n"
        ),
    )
    .unwrap();
    run(
        "openssl",
        &[
            "x509",
            "-req",
            "-in",
            &s(p("leaf.csr")),
            "-CA",
            &s(p("ca.crt")),
            "-CAkey",
            &s(p("ca.key")),
            "-CAcreateserial",
            "-days",
            "2",
            "-sha256",
            "-extfile",
            &s(p("ext")),
            "-out",
            &s(p("leaf.crt")),
        ],
    );
    let (ca, leaf, key) = (p("ca.crt"), p("leaf.crt"), p("leaf.key"));
    (dir, ca, leaf, key)
}
