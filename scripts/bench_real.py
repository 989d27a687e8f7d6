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
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from benchlib import (log, median, registry_size, run_action, sh, timed_full,
                      unique, docker_rmi)

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


def engine_cpu(pidfile: str) -> float:
    """CPU seconds so far of the engine's dockerd and every process under it."""
    try:
        root = int(Path(pidfile).read_text().strip())
    except (OSError, ValueError):
        return 0.0
    stats = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            # after the command: state ppid ... utime(12) stime(13) cutime cstime
            stats[int(entry.name)] = (int(fields[1]), int(fields[11]) + int(fields[12]))
    tree, frontier = {root}, [root]
    while frontier:
        parent = frontier.pop()
        for pid, (ppid, _) in stats.items():
            if ppid == parent and pid not in tree:
                tree.add(pid)
                frontier.append(pid)
    ticks = os.sysconf("SC_CLK_TCK")
    return sum(stats[p][1] for p in tree if p in stats) / ticks


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


def phases(log_text: str, build: float, wall: float) -> dict:
    first = re.search(r"first byte after ([0-9.]+) s", log_text)
    compressed = [float(s) for s in re.findall(r"Compressed [0-9.]+ MB to [0-9.]+ MB in ([0-9.]+) s",
                                               log_text)]
    pushed = [float(s) for s in re.findall(r"Pushed [0-9.]+ MB in ([0-9.]+) s", log_text)]
    return {"build": build, "first byte": float(first.group(1)) if first else 0.0,
            "compress": max(compressed, default=0.0), "upload": max(pushed, default=0.0),
            "wall": wall}


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
            rows = {"action gzip": [], "action zstd": [], "docker": []}
            for i in range(runs):
                for name in rows:
                    marker = unique(f"{case}-{name.replace(' ', '-')}")
                    ws = workspace(content, marker)
                    repo = unique(f"bench/{case}")
                    cpu0 = engine_cpu(pidfile_of(host))
                    if name.startswith("action"):
                        compression = name.split()[1]
                        with SpoolWatch() as spool:
                            r = run_action(eng_env, ws, {"repository": repo,
                                                         "compression": compression})
                        row = {"wall": r["wall"], "cpu": r["cpu"], "rss_kib": r["rss_kib"],
                               "spool": spool.peak,
                               "phases": phases(r["log"], r["build"], r["wall"])}
                        docker_rmi(f"{registry}/{repo}:latest")
                    else:
                        row = docker_way(eng_env, ws, registry, repo, store)
                    row["engine_cpu"] = engine_cpu(pidfile_of(host)) - cpu0
                    row["size"] = registry_size(env, repo, "latest")
                    rows[name].append(row)
                    shutil.rmtree(ws, ignore_errors=True)
                    sh(["docker", "builder", "prune", "-af"], env=eng_env, check=False)
                log(f"{case} on {label}, run {i + 1}/{runs}: " + ", ".join(
                    f"{k} {v[-1]['wall']:.2f}s ({v[-1]['size'] / 1e6:.0f} MB)"
                    for k, v in rows.items()))
            results["engines"][label] = {"store": store, "rows": rows}
    finally:
        shutil.rmtree(content_root, ignore_errors=True)
    return results


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
        row = {"wall": b["wall"] + t["wall"], "cpu": b["cpu"] + t["cpu"], "build": b["wall"]}
    shutil.rmtree(config)
    docker_rmi_on(env, ref)
    return row


def docker_rmi_on(env, *refs):
    subprocess.run(["docker", "rmi", "-f", *refs], capture_output=True, env=env)


def section(number: int, case: str, res: dict) -> list[str]:
    md = ["", f"## {number}. {res['title'][0].upper()}{res['title'][1:]}", "",
          "The action end to end (start to the digest confirmed with ECR: build with its "
          "context through FileSync, export, compression and upload, manifests) against "
          "Docker's own way: `docker push` alone of the same image on the classic store "
          "(built beforehand, untimed), `docker build` + `docker push` on the containerd "
          "store (BuildKit compresses while it exports). CPU: the process's own, then the "
          "engine's (dockerd and its children) during it. Spool: the most disk the action's "
          "unlinked spool files held at once.", "",
          "| engine | contender | median time | speed-up | compressed size | size vs Docker "
          "| CPU s (process + engine) | peak RSS | spool |",
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
            rss = max((r.get("rss_kib", 0) for r in values), default=0)
            spool = max((r.get("spool", 0) for r in values), default=0)
            who = way if name == "docker" else f"action, `compression: {name.split()[1]}`"
            md.append(f"| {label} | {who} | {t:.2f} s | {docker_t / t:.2f}× | "
                      f"{size / 1e6:.1f} MB | {size / docker_size:.3f} | {cpu:.1f} + {ecpu:.1f} | "
                      + (f"{rss / 1024:.0f} MiB | {spool / 1e6:.0f} MB |" if rss else "– | – |"))
    if case == "real":
        md += ["", "Where the action's time goes (gzip, medians, from its log and job summary; "
               "the compression and the upload overlap, part by part):", "",
               "| engine | build (context through FileSync, COPY) | export's first byte "
               "| compression of the layer | its upload | end to end |", "|---|---|---|---|---|---|"]
        for label, data in res["engines"].items():
            ph = [r["phases"] for r in data["rows"]["action gzip"]]
            m = {k: median([p[k] for p in ph]) for k in ph[0]}
            if data["store"] == "containerd":
                # BuildKit compresses while it exports: the build holds the compression.
                md.append(f"| {label} | {m['build']:.2f} s (BuildKit compresses as it exports) "
                          f"| – | in the build | {m['upload']:.2f} s | {m['wall']:.2f} s |")
                continue
            md.append(f"| {label} | {m['build']:.2f} s | {m['first byte']:.2f} s | "
                      f"{m['compress']:.2f} s | {m['upload']:.2f} s | {m['wall']:.2f} s |")
    return md
