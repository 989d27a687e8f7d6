"""Cases 7-9 of scripts/bench: a new layer of real files, of random data, and of 2 GB, on
every engine of the stand-in's matrix (26.1 classic store, 28.5 classic, 28.5 containerd).

Per case and engine, the contenders alternate run by run:
- the action end to end (process start to the digest confirmed with ECR: the build,
  its context sent through FileSync, the export, compression, upload, manifests), with
  `compression: gzip` (the default) and `zstd`;
- Docker's own way: on the classic store `docker push` alone of the same image (built
  beforehand, untimed; the daemon's pusher compresses as it pushes); on the containerd
  store `docker build` + `docker push`, both timed, since BuildKit compresses the layers
  while it exports the image there.
Each contender's layer holds a marker file of its own, so nothing is reused. Measured
for each: wall time, CPU seconds of the process and of the engine (dockerd and its
children), the action's peak RSS, the disk its spool files held at most (unlinked
files, seen through /proc/*/fd), the compressed size in the registry, and for the action
the phases from its own log.
"""

import base64
import http.client
import json
import os
import re
import resource
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from benchlib import (ROOT, log, median, registry_size, run_action, sh, timed_full,
                      unique)

REAL_ROOTS = ["/usr/lib/x86_64-linux-gnu", "/usr/bin", "/usr/lib/python3.11", "/usr/share"]
CASES = {
    "real": ("a new layer of real files: shared libraries, executables, Python's standard "
             "library (this machine's /usr/lib/x86_64-linux-gnu, /usr/bin, "
             "/usr/lib/python3.11), 480 MB", "real", 480_000_000),
    "random": ("a new layer of base64 of random bytes, 400 MB (barely compressible)",
               "random", 400_000_000),
    "2gb": ("a new layer of 2 GB of real files (the roots above and /usr/share)",
            "real", 2_000_000_000),
}
DOCKERFILE = "FROM local/busybox:latest\nCOPY data/ /data/\n"


def engines(env) -> list[tuple[str, str, str]]:
    """(label, DOCKER_HOST, store) of the engines the cases run on."""
    return [("26.1 classic", "unix:///var/run/docker.sock", "classic"),
            ("28.5 classic", env["STANDIN_ENGINE_28_CLASSIC"], "classic"),
            ("28.5 containerd", env["STANDIN_ENGINE_28_CONTAINERD"], "containerd")]


def make_real(dest: Path, total: int) -> int:
    """Regular files (no links) from REAL_ROOTS, in sorted walk order, up to `total`."""
    written = 0
    for root in REAL_ROOTS:
        for folder, dirs, files in os.walk(root):
            dirs.sort()
            for name in sorted(files):
                src = Path(folder) / name
                if src.is_symlink() or not src.is_file():
                    continue
                size = src.stat().st_size
                if written + size > total:
                    continue
                target = dest / src.relative_to("/")
                target.parent.mkdir(parents=True, exist_ok=True)
                try:
                    shutil.copyfile(src, target)
                except OSError:
                    continue
                written += size
                if written >= total * 0.999:
                    return written
    return written


def make_random(dest: Path, total: int) -> int:
    """Files of 50 MB of base64 of random bytes, `total` in all."""
    dest.mkdir(parents=True, exist_ok=True)
    written, i = 0, 0
    while written < total:
        with open(dest / f"random-{i:03d}.b64", "wb") as f:
            for _ in range(50):
                piece = base64.b64encode(os.urandom(3 << 18))[:min(1 << 20, total - written)]
                f.write(piece)
                written += len(piece)
                if written >= total:
                    break
        i += 1
    return written


def workspace(content: Path, marker: str) -> Path:
    """A context of `content` (hard links: no copy) plus a marker file of its own."""
    ws = Path(tempfile.mkdtemp(prefix="bench-real-"))
    (ws / "Dockerfile").write_text(DOCKERFILE)
    sh(["cp", "-al", str(content), str(ws / "data")])
    (ws / "data" / "marker.txt").write_text(marker + "\n")
    return ws


# The stand-in's registry side (the TLS front, the registry, moto): on a runner, ECR's side
# of an upload costs the runner's cores nothing; here it shares the same two.
STANDIN_PIDFILES = [f"/var/lib/ecr-build-push-standin/{name}.pid"
                    for name in ("front", "registry", "moto")]


def cpu_of(*pidfiles: str) -> float:
    """CPU seconds so far of each pidfile's process and every process under it."""
    roots = set()
    for pidfile in pidfiles:
        try:
            roots.add(int(Path(pidfile).read_text().strip()))
        except (OSError, ValueError):
            continue
    stats = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            # after the command: state ppid ... utime(12) stime(13) cutime cstime
            stats[int(entry.name)] = (int(fields[1]), int(fields[11]) + int(fields[12]))
    tree, frontier = set(roots), list(roots)
    while frontier:
        parent = frontier.pop()
        for pid, (ppid, _) in stats.items():
            if ppid == parent and pid not in tree:
                tree.add(pid)
                frontier.append(pid)
    ticks = os.sysconf("SC_CLK_TCK")
    return sum(stats[p][1] for p in tree if p in stats) / ticks


def children_cpu() -> float:
    """CPU seconds of this script's finished children (curl, for one)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def pidfile_of(host: str) -> str:
    if host == "unix:///var/run/docker.sock":
        return "/var/run/docker.pid"
    return host.removeprefix("unix://").removesuffix(".sock") + ".pid"


class SpoolWatch:
    """The most disk the action's spool files (unlinked) held at once, sampled."""

    def __init__(self):
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *_):
        self._stop.set()
        self._thread.join()

    def _run(self):
        while not self._stop.is_set():
            files = {}  # (device, inode) -> size: a file open twice counts once
            for proc in Path("/proc").iterdir():
                if not proc.name.isdigit():
                    continue
                try:
                    for fd in (proc / "fd").iterdir():
                        if ".ecr-build-push-layer-" in os.readlink(fd):
                            st = os.stat(fd)
                            files[(st.st_dev, st.st_ino)] = st.st_size
                except OSError:
                    continue
            self.peak = max(self.peak, sum(files.values()))
            self._stop.wait(0.1)


def phases(run: dict) -> dict:
    """The phases of one action run, from its log and job summary; `route` is the summary's
    *Push engine* (`direct`, or `daemon (blobs), direct (tags)` on the containerd store)."""
    log_text = run["log"]
    first = re.search(r"first byte after ([0-9.]+) s", log_text)
    compressed = [float(s) for s in re.findall(r"Compressed [0-9.]+ MB to [0-9.]+ MB in ([0-9.]+) s",
                                               log_text)]
    pushed = [float(s) for s in re.findall(r"Pushed [0-9.]+ MB in ([0-9.]+) s", log_text)]
    route = re.search(r"\| Push engine \| ([^|]+) \|", run["summary"])
    return {"build": run["build"], "first byte": float(first.group(1)) if first else 0.0,
            "compress": max(compressed, default=0.0), "upload": max(pushed, default=0.0),
            "push": run["push"], "route": route.group(1).strip() if route else "?",
            "wall": run["wall"]}


def run_case(env, case: str, runs: int, engine_filter=None) -> dict:
    title, kind, total = CASES[case]
    content_root = Path(tempfile.mkdtemp(prefix=f"bench-{case}-"))
    content = content_root / "data"
    made = make_real(content, total) if kind == "real" else make_random(content, total)
    log(f"case {case}: {made / 1e6:.0f} MB of content in {content}")
    registry = env["STANDIN_REGISTRY_HOST"]
    results = {"title": title, "bytes": made, "engines": {}}
    try:
        for label, host, store in engines(env):
            if engine_filter and label not in engine_filter:
                continue
            eng_env = dict(env, DOCKER_HOST=host)
            rows = {"action gzip": [], "action zstd": [], "action zstd 1": [], "docker": []}
            if store == "containerd":
                # `auto` hands the stored blobs to the daemon's pusher there; the direct
                # push alone, reading the export, shows what that route saves.
                rows = {"action gzip": [], "action gzip direct": [], **rows}
            for i in range(runs):
                for name in rows:
                    marker = unique(f"{case}-{name.replace(' ', '-')}")
                    ws = workspace(content, marker)
                    repo = unique(f"bench/{case}")
                    cpu0 = cpu_of(pidfile_of(host))
                    standin0 = cpu_of(*STANDIN_PIDFILES)
                    if name.startswith("action"):
                        compression, level, push_engine = contender(name)
                        inputs = {"repository": repo, "compression": compression}
                        if level:
                            inputs["compression-level"] = level
                        if push_engine:
                            inputs["push-engine"] = push_engine
                        with SpoolWatch() as spool:
                            r = run_action(eng_env, ws, inputs)
                        row = {"wall": r["wall"], "cpu": r["cpu"], "rss_kib": r["rss_kib"],
                               "spool": spool.peak,
                               "phases": phases(r)}
                        # On the engine that built it: images left on the matrix's
                        # other engines filled the disk within two runs of the bench.
                        docker_rmi_on(eng_env, f"{registry}/{repo}:latest")
                    else:
                        row = docker_way(eng_env, ws, registry, repo, store)
                    row["engine_cpu"] = cpu_of(pidfile_of(host)) - cpu0
                    row["standin_cpu"] = cpu_of(*STANDIN_PIDFILES) - standin0
                    row["size"] = registry_size(env, repo, "latest")
                    rows[name].append(row)
                    shutil.rmtree(ws, ignore_errors=True)
                    sh(["docker", "builder", "prune", "-af"], env=eng_env, check=False)
                log(f"{case} on {label}, run {i + 1}/{runs}: " + ", ".join(
                    f"{k} {v[-1]['wall']:.2f}s ({v[-1]['size'] / 1e6:.0f} MB)"
                    for k, v in rows.items()))
            results["engines"][label] = {"store": store, "rows": rows}
        if case == "real":
            results["limits"] = limits(env, content, runs, engine_filter)
    finally:
        shutil.rmtree(content_root, ignore_errors=True)
    return results


class UnixHTTPConnection(http.client.HTTPConnection):
    """HTTP to the engine's unix socket."""

    def __init__(self, path: str):
        super().__init__("engine")
        self.socket_path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(self.socket_path)


def read_export(host: str, ref: str) -> dict:
    """`GET /images/{ref}/get` from the engine at `host` (a unix socket) read to nowhere:
    seconds to its first byte and for the rest, bytes, and the engine's CPU seconds after
    the first byte (before it, the engine writes the export to disk while nothing else can
    run; after it, the stream shares the cores with whatever reads it)."""
    pidfile = pidfile_of(host)
    conn = UnixHTTPConnection(host.removeprefix("unix://"))
    started = time.monotonic()
    conn.request("GET", f"/images/{ref}/get")
    response = conn.getresponse()
    size = len(response.read(1))
    first, cpu0 = time.monotonic(), cpu_of(pidfile)
    while chunk := response.read(1 << 20):
        size += len(chunk)
    done, cpu = time.monotonic(), cpu_of(pidfile) - cpu0
    conn.close()
    return {"first_byte": first - started, "stream": done - first, "bytes": size,
            "stream_cpu": cpu}


def contender(name: str) -> tuple[str, str | None, str | None]:
    """`action zstd 1` -> (`zstd`, `1`, None); `action gzip direct` -> (`gzip`, None,
    `direct`): the compression, its level and the push engine, each unset if not named."""
    _, compression, *rest = name.split()
    level = next((p for p in rest if p.isdigit()), None)
    engine = next((p for p in rest if not p.isdigit()), None)
    return compression, level, engine


def limits(env, content: Path, runs: int, engine_filter=None) -> dict:
    """Each stage of the push alone, on the real-files image: the engine's export
    (`GET /images/{name}/get` read to nowhere: its first byte, then the rest), the
    action's own compression and hashing on every core (benches/compression.rs, on the
    new layer's tar in memory), and one upload of that tar to the registry, each with the
    CPU it costs. The push can be no faster than build + first byte + its slowest stage,
    however well they overlap, nor than the CPU of those stages spread over the cores."""
    registry = env["STANDIN_REGISTRY_HOST"]
    out = {"engines": {}}
    layer_tar = None
    try:
        for label, host, store in engines(env):
            if engine_filter and label not in engine_filter:
                continue
            eng_env = dict(env, DOCKER_HOST=host)
            ws = workspace(content, unique("limits"))
            ref = unique("bench-limits")
            sh(["docker", "build", "-q", "-t", ref, str(ws)], env=eng_env)
            reads = [read_export(host, ref) for _ in range(runs)]
            if layer_tar is None and store == "classic":
                layer_tar = new_layer_tar(eng_env, ref)
            docker_rmi_on(eng_env, ref)
            shutil.rmtree(ws, ignore_errors=True)
            out["engines"][label] = {
                "store": store,
                "first_byte": median([r["first_byte"] for r in reads]),
                "stream": median([r["stream"] for r in reads]),
                "export_bytes": reads[0]["bytes"],
                "stream_cpu": median([r["stream_cpu"] for r in reads]),
            }
            if store == "containerd":
                out["exporter"] = exporter_choice(eng_env, content, runs)
            log(f"limits on {label}: export first byte {out['engines'][label]['first_byte']:.2f}s, "
                f"then {out['engines'][label]['stream']:.2f}s for {reads[0]['bytes'] / 1e6:.0f} MB")
        if layer_tar:
            out["layer_bytes"] = layer_tar.stat().st_size
            out["codecs"] = compression_rates(layer_tar)
            digest = "sha256:" + sh(["sha256sum", str(layer_tar)]).stdout.split()[0]
            uploads = [upload(env, registry, layer_tar, digest) for _ in range(runs)]
            out["upload"] = median([u["seconds"] for u in uploads])
            out["upload_sender_cpu"] = median([u["sender_cpu"] for u in uploads])
            out["upload_receiver_cpu"] = median([u["receiver_cpu"] for u in uploads])
            log(f"limits: upload of {out['layer_bytes'] / 1e6:.0f} MB in {out['upload']:.2f}s; "
                + ", ".join(f"{c['setting']} {c['mb_per_s']:.0f} MB/s" for c in out["codecs"]))
    finally:
        if layer_tar:
            shutil.rmtree(layer_tar.parent, ignore_errors=True)
    return out


def exporter_choice(env, content: Path, runs: int) -> dict:
    """The containerd store's lever: BuildKit's exporter compressing the new layer (gzip,
    as the action asks), or storing it uncompressed for the action to compress while it
    reads the export. Each way: the build (`docker buildx build -o type=image,...`) and
    the export read to nowhere, alternating."""
    ways = {"gzip": [], "uncompressed": []}
    for _ in range(runs):
        for way, times in ways.items():
            ws = workspace(content, unique(f"exporter-{way}"))
            ref = unique("bench-exporter")
            build = timed_full(["docker", "buildx", "build", "-q", "--provenance=false",
                                "-o", f"type=image,name={ref},compression={way}", str(ws)],
                               env=env)["wall"]
            read = read_export(env["DOCKER_HOST"], ref)
            times.append((build, read["first_byte"] + read["stream"], read["bytes"]))
            docker_rmi_on(env, ref)
            shutil.rmtree(ws, ignore_errors=True)
            sh(["docker", "builder", "prune", "-af"], env=env, check=False)
    result = {way: {"build": median([t[0] for t in times]),
                    "export": median([t[1] for t in times]),
                    "bytes": times[0][2]} for way, times in ways.items()}
    log("exporter on the containerd store: " + ", ".join(
        f"{w} build {r['build']:.2f}s + export {r['export']:.2f}s ({r['bytes'] / 1e6:.0f} MB)"
        for w, r in result.items()))
    return result


def new_layer_tar(env, ref: str) -> Path:
    """The image's largest layer tar (the new one), from its export, in a file."""
    folder = Path(tempfile.mkdtemp(prefix="bench-layer-"))
    save = subprocess.Popen(["docker", "save", ref], stdout=subprocess.PIPE, env=env)
    subprocess.run(["tar", "-x", "-C", str(folder)], stdin=save.stdout, check=True)
    save.wait()
    files = [p for p in folder.rglob("*") if p.is_file() and not p.is_symlink()]
    largest = max(files, key=lambda p: p.stat().st_size)
    layer = folder / "layer.tar"
    largest.rename(layer)
    for p in sorted(folder.iterdir()):
        if p != layer:
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink()
    return layer


COMPRESSION_BENCH: list[Path] = []


def build_compression_bench() -> None:
    """Builds benches/compression.rs once, before any case runs, so that the rates come
    from the same source as the binary measured (and a broken tree fails at once)."""
    out = sh(["cargo", "bench", "--locked", "--bench", "compression", "--no-run"],
             cwd=str(ROOT))
    found = re.search(r"Executable benches/compression\.rs \(([^)]+)\)", out.stderr)
    if not found:
        raise SystemExit(f"cannot find the compression bench's executable:\n{out.stderr}")
    COMPRESSION_BENCH[:] = [ROOT / found.group(1)]


def compression_rates(layer_tar: Path) -> list[dict]:
    """benches/compression.rs on the layer: one line per setting."""
    if not COMPRESSION_BENCH:
        build_compression_bench()
    out = sh([str(COMPRESSION_BENCH[0]), str(layer_tar)]).stdout
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def upload(env, registry: str, blob: Path, digest: str) -> dict:
    """One upload of `blob` (POST, then a monolithic PUT with ?digest=) through the TLS
    front, to a new repository: its seconds, and the CPU seconds it cost the sender (curl)
    and the receiver (the stand-in: on a runner, ECR's side, off the runner's cores)."""
    repo = unique("bench/limits")
    sh(["python3", str(ROOT / "tests/standin/ecr.py"), "create", repo], env=env)
    auth = f"AWS:{env['BENCH_PASSWORD']}"
    headers = sh(["curl", "-sS", "-u", auth, "-X", "POST", "-D", "-", "-o", "/dev/null",
                  f"https://{registry}/v2/{repo}/blobs/uploads/"]).stdout
    location = re.search(r"(?im)^location: *(\S+)", headers).group(1)
    if location.startswith("/"):
        location = f"https://{registry}{location}"
    sep = "&" if "?" in location else "?"
    started, sender0, receiver0 = time.monotonic(), children_cpu(), cpu_of(*STANDIN_PIDFILES)
    sh(["curl", "-sS", "-f", "-u", auth, "-X", "PUT", "-H",
        "Content-Type: application/octet-stream", "-T", str(blob),
        "-o", "/dev/null", f"{location}{sep}digest={digest}"])
    return {"seconds": time.monotonic() - started, "sender_cpu": children_cpu() - sender0,
            "receiver_cpu": cpu_of(*STANDIN_PIDFILES) - receiver0}


def docker_way(env, ws: Path, registry: str, repo: str, store: str) -> dict:
    """`docker push` of the image built beforehand (classic store), or `docker build` +
    `docker push` (containerd store), with a login of its own."""
    ref = f"{registry}/{repo}:latest"
    sh(["python3", str(Path(__file__).resolve().parent.parent / "tests/standin/ecr.py"),
        "create", repo], env=env)
    config = tempfile.mkdtemp()
    sh(["docker", "--config", config, "login", "-u", "AWS", "--password-stdin", registry],
       stdin=env["BENCH_PASSWORD"], env=env)
    build = ["docker", "--config", config, "build", "-q", "-t", ref, str(ws)]
    push = ["docker", "--config", config, "push", "-q", ref]
    if store == "classic":
        sh(build, env=env)
        t = timed_full(push, env=env)
        row = {"wall": t["wall"], "cpu": t["cpu"], "build": 0.0}
    else:
        b = timed_full(build, env=env)
        t = timed_full(push, env=env)
        row = {"wall": b["wall"] + t["wall"], "cpu": b["cpu"] + t["cpu"], "build": b["wall"],
               "push": t["wall"]}
    shutil.rmtree(config)
    docker_rmi_on(env, ref)
    return row


def docker_rmi_on(env, *refs):
    subprocess.run(["docker", "rmi", "-f", *refs], capture_output=True, env=env)


def section(number: int, case: str, res: dict) -> list[str]:
    md = ["", f"## {number}. {res['title'][0].upper()}{res['title'][1:]}", "",
          "The action end to end (start to the digest confirmed with ECR: build with its "
          "context through FileSync, export, compression and upload, manifests; on the "
          "containerd store `auto` hands the stored blobs to the daemon's pusher instead of "
          "reading the export, which `push-engine: direct` still does) against "
          "Docker's own way: `docker push` alone of the same image on the classic store "
          "(built beforehand, untimed), `docker build` + `docker push` on the containerd "
          "store (BuildKit compresses while it exports). CPU: the process's own, then the "
          "engine's (dockerd and its children), then the stand-in's registry side (TLS front, "
          "registry, moto: on a runner that is ECR's, off the runner's cores) during it. "
          "Spool: the most disk the action's unlinked spool files held at once.", "",
          "| engine | contender | median time | speed-up | compressed size | size vs Docker "
          "| CPU s (process + engine + stand-in) | peak RSS | spool |",
          "|---|---|---|---|---|---|---|---|---|"]
    for label, data in res["engines"].items():
        rows = data["rows"]
        docker_t = median([r["wall"] for r in rows["docker"]])
        docker_size = median([r["size"] for r in rows["docker"]])
        way = "`docker push`" if data["store"] == "classic" else "`docker build` + `docker push`"
        for name, values in rows.items():
            t = median([r["wall"] for r in values])
            size = median([r["size"] for r in values])
            cpu = median([r["cpu"] for r in values])
            ecpu = median([r["engine_cpu"] for r in values])
            scpu = median([r.get("standin_cpu", 0.0) for r in values])
            rss = max((r.get("rss_kib", 0) for r in values), default=0)
            spool = max((r.get("spool", 0) for r in values), default=0)
            if name == "docker":
                who = way
            else:
                compression, level, push_engine = contender(name)
                who = f"action, `compression: {compression}`" + (
                    f", `compression-level: {level}`" if level else "") + (
                    f", `push-engine: {push_engine}`" if push_engine else "")
            md.append(f"| {label} | {who} | {t:.2f} s | {docker_t / t:.2f}× | "
                      f"{size / 1e6:.1f} MB | {size / docker_size:.3f} | {cpu:.1f} + {ecpu:.1f} + {scpu:.1f} | "
                      + (f"{rss / 1024:.0f} MiB | {spool / 1e6:.0f} MB |" if rss else "– | – |"))
    if case == "real":
        md += ["", "Where the action's time goes (gzip, medians, from its log and job summary; "
               "the compression and the upload overlap, part by part):", "",
               "| engine | build (context through FileSync, COPY) | export's first byte "
               "| compression of the layer | its upload | end to end |", "|---|---|---|---|---|---|"]
        for label, data in res["engines"].items():
            ph = [r["phases"] for r in data["rows"]["action gzip"]]
            m = {k: median([p[k] for p in ph]) for k in ph[0] if k != "route"}
            if data["store"] == "containerd":
                # BuildKit compresses while it exports: the build holds the compression.
                # The push is the route's whole push (the daemon's pusher for the blobs).
                md.append(f"| {label} | {m['build']:.2f} s (BuildKit compresses as it exports) "
                          f"| – | in the build | {m['push']:.2f} s (whole push: "
                          f"{ph[0]['route']}) | {m['wall']:.2f} s |")
                continue
            md.append(f"| {label} | {m['build']:.2f} s | {m['first byte']:.2f} s | "
                      f"{m['compress']:.2f} s | {m['upload']:.2f} s | {m['wall']:.2f} s |")
        if res.get("limits"):
            md += section_limits(res)
    return md


def section_limits(res: dict) -> list[str]:
    """The floor of each contender, two ways. Its build (the action's own, from its
    summary) + the export's first byte, then either the slowest of the stages that overlap
    after it (the export's stream, the compression on every core, the upload of the
    compressed layer), as if they did not share the cores; or, where it is more, the CPU
    seconds of those stages together (the engine's stream, the compression and hashing,
    the sender's and the receiver's side of the upload) spread over the two cores. The
    second floor is also given without the receiver's side, which ECR's servers carry on
    a runner."""
    lim = res["limits"]
    codecs = {c["setting"].split(" (")[0]: c for c in lim.get("codecs", [])}
    layer = lim.get("layer_bytes", res["bytes"])
    up_rate = layer / lim["upload"] if lim.get("upload") else 0.0
    # CPU seconds per byte sent, each side of the upload.
    sender = lim.get("upload_sender_cpu", 0.0) / layer
    receiver = lim.get("upload_receiver_cpu", 0.0) / layer
    cores = os.cpu_count() or 2
    md = ["", "Each stage alone (`scripts/bench` measures them after the runs above): the "
          "engine's export read to nowhere (`GET /images/{name}/get`: its first byte, then "
          "the rest, with the engine's CPU after the first byte), the action's own "
          "compression of the new layer's tar from memory on both cores with the writers "
          "the push uses, hashing included (`cargo bench --bench compression`, with its "
          "CPU time), and one upload of that tar through the stand-in's TLS front (with the "
          "CPU of curl, the sender, and of the stand-in, the receiver).", "",
          "| stage on this machine | rate | CPU s |", "|---|---|---|"]
    for setting, c in codecs.items():
        md.append(f"| {setting} of the {layer / 1e6:.0f} MB layer tar (2 cores) | "
                  f"{c['mb_per_s']:.0f} MB/s ({c['seconds']:.2f} s, to "
                  f"{c['output_bytes'] / 1e6:.1f} MB) | {c.get('cpu_seconds', 0.0):.2f} |")
    for label, ex in lim["engines"].items():
        md.append(f"| {label}: the export's stream after its first byte "
                  f"({ex['export_bytes'] / 1e6:.0f} MB) | "
                  f"{ex['export_bytes'] / 1e6 / ex['stream']:.0f} MB/s | "
                  f"{ex.get('stream_cpu', 0.0):.2f} (engine) |")
    if up_rate:
        md.append(f"| upload to the registry (one blob of {layer / 1e6:.0f} MB, TLS) | "
                  f"{up_rate / 1e6:.0f} MB/s | {sender * layer:.2f} (curl) + "
                  f"{receiver * layer:.2f} (stand-in) |")
    md += ["", "The floors: build + the export's first byte + either the slowest stage after "
           "it (as if the stages overlapped perfectly on cores of their own), or the CPU "
           "seconds of every stage after it over the two cores, whichever is more; then the "
           "same without the stand-in's side of the upload (on a runner, ECR's servers "
           "receive). The best speed-up is Docker's time over the floor. On the containerd "
           "store, where `auto` hands the stored blobs to the daemon's pusher, the floor is "
           "the action's build and `docker push`'s own time for the same image.", "",
           "| engine | contender | build | export's first byte | export's stream | "
           "compression | upload | CPU s after the first byte | floor | floor, ECR's side "
           "off this machine | Docker's time | best speed-up | measured |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    hashing = codecs.get("sha256", {}).get("cpu_seconds", 0.0)
    for label, data in res["engines"].items():
        ex = lim["engines"].get(label)
        if not ex:
            continue
        docker_t = median([r["wall"] for r in data["rows"]["docker"]])
        for name in ("action gzip", "action gzip direct", "action zstd", "action zstd 1"):
            rows = data["rows"].get(name)
            if not rows:
                continue
            codec, level, push_engine = contender(name)
            level = level or ("3" if codec == "zstd" else "6")
            who = f"action, {codec} {level}" + (f", {push_engine}" if push_engine else "")
            build = median([r["phases"]["build"] for r in rows])
            size = median([r["size"] for r in rows])
            upload_s = size / up_rate if up_rate else 0.0
            stream, stream_cpu = ex["stream"], ex.get("stream_cpu", 0.0)
            if data["store"] == "containerd" and rows[0]["phases"]["route"].startswith("daemon"):
                # The daemon's pusher carries the stored blobs, as `docker push` does: the
                # floor is the build and Docker's own push of the same image.
                docker_push = median([r["push"] for r in data["rows"]["docker"]])
                floor = build + docker_push
                t = median([r["wall"] for r in rows])
                md.append(f"| {label} | {who} | {build:.2f} s | – | – (the "
                          f"daemon's pusher reads its store) | in the build | {docker_push:.2f} s "
                          f"(`docker push`'s own) | – | {floor:.2f} s | {floor:.2f} s | "
                          f"{docker_t:.2f} s | {docker_t / floor:.2f}× | {docker_t / t:.2f}× "
                          f"({t:.2f} s) |")
                continue
            if data["store"] == "containerd":
                # BuildKit compressed in the build; the export holds the compressed blobs.
                squeeze, squeeze_cpu, compress = 0.0, 0.0, "in the build"
            else:
                c = codecs.get(f"{codec} {level}", {})
                squeeze = layer / 1e6 / c["mb_per_s"] if c else 0.0
                squeeze_cpu = c.get("cpu_seconds", 0.0) + hashing
                compress = f"{squeeze:.2f} s"
            cpu_mine = stream_cpu + squeeze_cpu + sender * size
            cpu_all = cpu_mine + receiver * size
            slowest = max(stream, squeeze, upload_s)
            start = build + ex["first_byte"]
            floor = start + max(slowest, cpu_all / cores)
            floor_ecr = start + max(slowest, cpu_mine / cores)
            t = median([r["wall"] for r in rows])
            md.append(f"| {label} | {who} | {build:.2f} s | "
                      f"{ex['first_byte']:.2f} s | {stream:.2f} s ({ex['export_bytes'] / 1e6:.0f} MB) | "
                      f"{compress} | {upload_s:.2f} s | {cpu_all:.1f} (of which the stand-in "
                      f"{receiver * size:.1f}) | {floor:.2f} s | {floor_ecr:.2f} s | "
                      f"{docker_t:.2f} s | {docker_t / floor:.2f}× ({docker_t / floor_ecr:.2f}× "
                      f"with ECR's side off) | {docker_t / t:.2f}× ({t:.2f} s) |")
    if lim.get("exporter"):
        md += ["", "On the containerd store, who compresses the new layer (`docker buildx build "
               "-o type=image,compression=…`, then the export read to nowhere; medians, "
               "alternating). Uncompressed, the action would compress while it reads the "
               "export, so the export's read is that way's floor after the build:", "",
               "| exporter's compression | build | export read | bytes exported | build + export |",
               "|---|---|---|---|---|"]
        for way, r in lim["exporter"].items():
            md.append(f"| {way} | {r['build']:.2f} s | {r['export']:.2f} s | "
                      f"{r['bytes'] / 1e6:.0f} MB | {r['build'] + r['export']:.2f} s |")
    return md
