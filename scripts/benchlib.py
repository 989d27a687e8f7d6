"""Helpers shared by scripts/bench and its real-image cases (scripts/bench_real.py):
processes timed whole with GNU time, the action run as the runner starts it, the
stand-in's environment and registry."""

import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
IMAGE = "ecr-build-push:bench"
COUNTER = [0]


def log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def sh(cmd, env=None, check=True, capture=True, cwd=None, stdin=None):
    out = subprocess.run(cmd, env=env, cwd=cwd, input=stdin, text=True,
                         stdout=subprocess.PIPE if capture else None,
                         stderr=subprocess.PIPE if capture else None)
    if check and out.returncode != 0:
        raise SystemExit(f"command failed: {cmd}\n{out.stdout}\n{out.stderr}")
    return out


def timed_full(cmd, env=None, cwd=None, stdin=None) -> dict:
    """Runs cmd under /usr/bin/time -v: wall seconds, CPU seconds (user + system), peak
    RSS in KiB, stdout, stderr."""
    with tempfile.NamedTemporaryFile("r", suffix=".time") as tf:
        out = subprocess.run(["/usr/bin/time", "-v", "-o", tf.name, *cmd], env=env, cwd=cwd,
                             input=stdin, text=True, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)
        report = tf.read()
    if out.returncode != 0:
        raise SystemExit(f"command failed: {cmd}\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (\S+)", report).group(1)
    parts = [float(p) for p in wall.split(":")]
    number = lambda name: float(re.search(rf"{name}: ([0-9.]+)", report).group(1))  # noqa: E731
    return {"wall": sum(p * 60 ** i for i, p in enumerate(reversed(parts))),
            "cpu": number(r"User time \(seconds\)") + number(r"System time \(seconds\)"),
            "rss_kib": int(number(r"Maximum resident set size \(kbytes\)")),
            "stdout": out.stdout, "stderr": out.stderr}


def timed(cmd, env=None, cwd=None, stdin=None):
    """Runs cmd under /usr/bin/time -v; returns (seconds, peak RSS in KiB, stdout, stderr)."""
    t = timed_full(cmd, env=env, cwd=cwd, stdin=stdin)
    return t["wall"], t["rss_kib"], t["stdout"], t["stderr"]


def unique(prefix: str) -> str:
    COUNTER[0] += 1
    return f"{prefix}-{os.getpid()}-{COUNTER[0]}-{time.time_ns() % 10**9:x}"


def median(values):
    return statistics.median(values) if values else float("nan")


def standin_env() -> dict:
    out = sh([str(ROOT / "scripts/standin"), "env"]).stdout
    env = dict(os.environ)
    for line in out.splitlines():
        if line.startswith("export "):
            key, _, value = line[len("export "):].partition("=")
            env[key] = value.strip("'\"")
    return env


def action_binary() -> Path:
    return ROOT / "target/x86_64-unknown-linux-gnu/release/ecr-build-push"


def run_action(env, workdir, inputs: dict, extra_env=None):
    """The action binary as GitHub's runner starts it (inputs as INPUT_*), timed."""
    files = Path(tempfile.mkdtemp())
    run_env = dict(env, GITHUB_ACTIONS="true", GITHUB_OUTPUT=str(files / "out"),
                   GITHUB_STEP_SUMMARY=str(files / "summary"), **(extra_env or {}))
    for name, value in inputs.items():
        run_env[f"INPUT_{name.upper()}"] = value
    t = timed_full([str(action_binary())], env=run_env, cwd=workdir)
    summary = (files / "summary").read_text()
    shutil.rmtree(files)

    def field(name):
        m = re.search(rf"\| {name} \| ([0-9.]+) s \|", summary)
        return float(m.group(1)) if m else 0.0

    return {"wall": t["wall"], "cpu": t["cpu"], "rss_kib": t["rss_kib"],
            "build": field("Build time"), "push": field("Push time"), "log": t["stderr"],
            "summary": summary}


def docker_rmi(*refs):
    subprocess.run(["docker", "rmi", "-f", *refs], capture_output=True)



def registry_size(env, repo: str, tag: str) -> int:
    """Compressed size as the registry holds it: the image manifest's layers (for an
    index, as `docker push` of a containerd-store image leaves, its linux/amd64 image)."""
    def get(reference):
        out = sh(["curl", "-sS", "-u", f"AWS:{env['BENCH_PASSWORD']}", "-H",
                  "Accept: application/vnd.docker.distribution.manifest.v2+json, "
                  "application/vnd.oci.image.manifest.v1+json, "
                  "application/vnd.oci.image.index.v1+json, "
                  "application/vnd.docker.distribution.manifest.list.v2+json",
                  f"https://{env['STANDIN_REGISTRY_HOST']}/v2/{repo}/manifests/{reference}"]).stdout
        return json.loads(out)
    manifest = get(tag)
    if "manifests" in manifest:
        image = next(m for m in manifest["manifests"]
                     if m.get("platform", {}).get("architecture") == "amd64")
        manifest = get(image["digest"])
    return sum(layer["size"] for layer in manifest["layers"])


def make_large_layer_image(tag: str, seed: int, size: int = 400_000_000) -> None:
    """An image whose one new layer is `size` bytes (400 MB) of log-like text (varying numbers, a few
    hundred distinct words): compressible like real logs or source, never like `yes`.
    A seed of its own per contender, so no pusher can reuse another's blobs."""
    import random
    rng = random.Random(seed)
    words = [f"{w}{i}" for i in range(40) for w in ("request", "user", "cache", "GET",
             "POST", "status", "latency", "shard", "token", "retry")]
    ctx = Path(tempfile.mkdtemp(prefix="bench-layer-"))
    target = size
    with open(ctx / "data.log", "w") as f:
        written = 0
        while written < target:
            lines = []
            for _ in range(5000):
                lines.append(f"2026-11-27T{rng.randrange(24):02d}:{rng.randrange(60):02d}:"
                             f"{rng.randrange(60):02d}.{rng.randrange(1000):03d}Z "
                             f"{rng.choice(words)} {rng.choice(words)} id={rng.getrandbits(32):08x} "
                             f"ms={rng.randrange(2000)} {rng.choice(words)}\n")
            chunk = "".join(lines)
            f.write(chunk)
            written += len(chunk)
    (ctx / "Dockerfile").write_text("FROM local/busybox:latest\nCOPY data.log /\n")
    sh(["docker", "build", "-q", "-t", tag, str(ctx)], env=dict(os.environ, DOCKER_BUILDKIT="0"))
    shutil.rmtree(ctx)
