"""Section 10 of the benchmark: one image, three registries (the stand-in's primary, its
second region, and a second account through a role).

Contenders, alternated run by run, each on a fresh 200 MB layer of log-like text (so no
pusher can reuse another's blobs):

- the action with `also-push-to` (the layer compressed once, streamed to all three);
- the action to the primary alone (the CPU of one push);
- three `docker push`es of the same local image (what a workflow does today: a login
  and a push per registry; the daemon compresses the layer again for each registry);
- one `docker push` to the primary, then ECR's replication to the second region, waited
  for with the action's `replicated` target (on the stand-in, replication is a copy
  after a configured delay of 0 s: the wait measured is the stand-in's, ECR's has no
  SLA).

CPU seconds: the action's are its process's (user + system, `/usr/bin/time`); the
daemon's are dockerd's, read from /proc before and after the pushes (its export, gzip
and upload all run there).
"""

import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from benchlib import (ROOT, log, sh, timed_full, unique, median, run_action, docker_rmi,
                      make_large_layer_image)

LAYER = 200_000_000


def dockerd_cpu() -> float:
    """dockerd's CPU seconds so far (user + system)."""
    pid = sh(["pidof", "dockerd"]).stdout.split()[-1]
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def assumed_env(env) -> dict:
    """The environment with the second account's role's credentials."""
    out = sh(["aws", "sts", "assume-role", "--role-arn", env["STANDIN_ACCOUNT2_ROLE"],
              "--role-session-name", "bench", "--output", "json"], env=env).stdout
    creds = json.loads(out)["Credentials"]
    return dict(env, AWS_ACCESS_KEY_ID=creds["AccessKeyId"],
                AWS_SECRET_ACCESS_KEY=creds["SecretAccessKey"],
                AWS_SESSION_TOKEN=creds["SessionToken"])


def login(config: str, host: str, region: str, env) -> None:
    password = sh(["aws", "ecr", "get-login-password", "--region", region, "--endpoint-url",
                   f"https://api.ecr.{region}.amazonaws.com"], env=env).stdout.strip()
    sh(["docker", "--config", config, "login", "-u", "AWS", "--password-stdin", host],
       stdin=password)


def create(repo: str, region: str, env) -> None:
    sh(["aws", "ecr", "create-repository", "--repository-name", repo, "--region", region,
        "--endpoint-url", f"https://api.ecr.{region}.amazonaws.com"], env=env)


def registries(env):
    """(host, region, environment) of the three registries, the primary first."""
    return [(env["STANDIN_REGISTRY_HOST"], "us-east-1", env),
            (env["STANDIN_REGION2_HOST"], env["STANDIN_REGION2"], env),
            (env["STANDIN_ACCOUNT2_HOST"], env["STANDIN_ACCOUNT2_REGION"], assumed_env(env))]


def also_push_to(env) -> str:
    return (f"{env['STANDIN_REGION2']}\n{env['STANDIN_ACCOUNT2']}:{env['STANDIN_ACCOUNT2_REGION']} "
            f"{env['STANDIN_ACCOUNT2_ROLE']}")


def compressions(log_text: str) -> int:
    """How many times the action's log says it compressed the bench's layer (the base's
    small layer, compressed too in a new repository, is not counted)."""
    sizes = re.findall(r": Compressed ([0-9.]+) MB to ", log_text)
    return sum(1 for mb in sizes if float(mb) * 1e6 >= LAYER * 0.9)


def run(env, runs: int) -> dict:
    contenders = ["action, 3 registries", "action, 1 registry", "3 × docker push",
                  "docker push + replication"]
    res = {name: {"wall": [], "cpu": [], "compressed": []} for name in contenders}
    # Replication from the primary to the second region, for the bench's repositories.
    control = env["STANDIN_FAULTS_URL"]
    sh(["curl", "-sS", "-f", "-X", "POST", f"{control}/replication", "-d",
        json.dumps({"delay": 0})])
    rules = {"rules": [{"destinations": [{"region": env["STANDIN_REGION2"],
                                          "registryId": "123456789012"}],
                        "repositoryFilters": [{"filter": "bench/repl",
                                               "filterType": "PREFIX_MATCH"}]}]}
    sh(["aws", "ecr", "put-replication-configuration", "--replication-configuration",
        json.dumps(rules)], env=env)
    seed = 50_000
    try:
        for i in range(runs):
            for name in contenders:
                seed += 1
                source = f"bench-targets:{seed}"
                make_large_layer_image(source, seed, LAYER)
                ws = Path(tempfile.mkdtemp())
                (ws / "Dockerfile").write_text(f"FROM {source}\n")
                if name.startswith("action"):
                    repo = unique("bench/targets")
                    inputs = {"repository": repo, "push-engine": "direct"}
                    if name == "action, 3 registries":
                        inputs["also-push-to"] = also_push_to(env)
                    r = run_action(env, ws, inputs)
                    res[name]["wall"].append(r["wall"])
                    res[name]["cpu"].append(r["cpu"])
                    res[name]["compressed"].append(compressions(r["log"]))
                else:
                    wall, cpu = docker_pushes(env, source, name)
                    res[name]["wall"].append(wall)
                    res[name]["cpu"].append(cpu)
                shutil.rmtree(ws)
                docker_rmi(source)
            log(f"targets run {i + 1}/{runs}: " + ", ".join(
                f"{k} {res[k]['wall'][-1]:.2f}s ({res[k]['cpu'][-1]:.1f} CPU s)"
                for k in contenders))
    finally:
        sh(["aws", "ecr", "put-replication-configuration", "--replication-configuration",
            json.dumps({"rules": []})], env=env, check=False)
    return res


def docker_pushes(env, source: str, name: str):
    """Today's way, timed as one script: a login and a push per registry, or one push and
    the action waiting for ECR's replication. Returns (wall seconds, CPU seconds of
    dockerd and the script's processes)."""
    config = tempfile.mkdtemp()
    targets = registries(env)
    if name == "docker push + replication":
        repo = unique("bench/repl")
        targets = targets[:1]
    else:
        repo = unique("bench/docker")
    for host, region, renv in targets:
        create(repo, region, renv)
        login(config, host, region, renv)
        sh(["docker", "tag", source, f"{host}/{repo}:latest"])
    script = "set -euo pipefail\n" + "".join(
        f"docker --config {config} push -q {host}/{repo}:latest >/dev/null\n"
        for host, _, _ in targets)
    before = dockerd_cpu()
    t = timed_full(["bash", "-c", script], env=env)
    wall, cpu = t["wall"], t["cpu"] + dockerd_cpu() - before
    if name == "docker push + replication":
        # The wait, as the action does it for a `replicated` target: no push there.
        ws = Path(tempfile.mkdtemp())
        (ws / "Dockerfile").write_text(f"FROM {source}\n")
        r = run_action(env, ws, {"repository": repo, "on-tag-exists": "skip",
                                 "tags": "latest",
                                 "also-push-to": f"{env['STANDIN_REGION2']} replicated"})
        shutil.rmtree(ws)
        wall += r["wall"]
        cpu += r["cpu"]
    for host, _, _ in targets:
        docker_rmi(f"{host}/{repo}:latest")
    shutil.rmtree(config)
    return wall, cpu


def section(res) -> list[str]:
    one = median(res["action, 1 registry"]["cpu"])
    rows = []
    for name, values in res.items():
        counted = (f"{median(values['compressed']):.0f}" if values["compressed"]
                   else "not logged")
        rows.append(f"| {name} | {median(values['wall']):.2f} s | {median(values['cpu']):.2f} s "
                    f"| {counted} |")
    three = median(res["action, 3 registries"]["cpu"])
    docker3 = median(res["3 × docker push"]["cpu"])
    docker1 = median(res["docker push + replication"]["cpu"])
    return ["", "## 10. One build, three registries (`also-push-to`)", "",
            f"One new {LAYER // 1_000_000} MB layer of log-like text (section 3's kind) on "
            "`local/busybox`, already built; a fresh one per push. Three registries: the "
            "stand-in's primary (us-east-1), its second region (us-west-2) and a second "
            "account through an assumed role (eu-west-1), each behind the same TLS front on "
            "this machine, so the upload costs little and the CPU shows. Wall: the whole "
            "process (the action: plan, export, compress, upload to every registry, "
            "confirmation with each ECR API; docker: the pushes, logins done before). CPU: "
            "the action's process, or dockerd's and the docker CLI's during the pushes. "
            "'Compressed': how many times the action's log says it gzipped the 200 MB layer; "
            "dockerd logs no such line, and its CPU tells instead.", "",
            "| | wall (median) | CPU seconds (median) | layer compressed |",
            "|---|---|---|---|", *rows, "",
            f"Three registries cost the action {three:.2f} CPU seconds against {one:.2f} for "
            f"one ({three / one:.2f}×: the compression is done once, the rest is TLS and "
            f"hashing per registry); three `docker push`es cost {docker3:.2f} "
            f"({docker3 / three:.2f}× the action's three), {docker3 / docker1:.2f}× the "
            "one push of the replication row: dockerd gzips the layer again for each "
            "registry. The replication row is one "
            "`docker push` plus the action's wait for `COMPLETE` in us-west-2; the stand-in "
            "replicates at once, so it shows only the wait's overhead: ECR's own replication "
            "takes minutes and has no SLA (README, Cost)."]
