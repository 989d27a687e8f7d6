#!/usr/bin/env bash
# Self-check of the stand-in's other registries, STS, the deny switch, replication and ECR
# Public: smoke_targets.py (boto3 + HTTP), then the docker CLI against the new hosts: a push
# to the second region after `docker login`, a pull of the image replicated there, and an anonymous `docker pull` from
# public.ecr.aws (the daemon follows the Bearer challenge to the token service), on the
# main engine and on a containerd-store engine. smoke.sh runs this; it also runs alone.
# Own repository names (a random prefix): safe next to other tests.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
eval "$("$ROOT/scripts/standin" env)"
PREFIX=smoke-targets-$(date +%s)-$RANDOM
WORK=$(mktemp -d)
CONFIG=$WORK/docker-config   # docker login goes here, never into ~/.docker
cleanup() {
  docker --config "$CONFIG" logout "$STANDIN_REGION2_HOST" >/dev/null 2>&1 || true
  if [ -s "$WORK/public-image" ]; then
    docker rmi -f "$(cat "$WORK/public-image")" >/dev/null 2>&1 || true
    DOCKER_HOST=$STANDIN_ENGINE_28_CONTAINERD docker rmi -f "$(cat "$WORK/public-image")" >/dev/null 2>&1 || true
  fi
  docker rmi -f "$STANDIN_REGION2_HOST/$PREFIX/docker:1" >/dev/null 2>&1 || true
  if [ -s "$WORK/replicated-image" ]; then docker rmi -f "$(cat "$WORK/replicated-image")" >/dev/null 2>&1 || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT
ok() { printf '   ok: %s\n' "$*"; }
fail() { printf '   FAIL: %s\n' "$*" >&2; exit 1; }

python3 "$ROOT/tests/standin/smoke_targets.py" "$PREFIX" "$WORK" || fail "smoke_targets.py"

printf '\n== (t8) docker against the new hosts\n'
west() {
  python3 - "$@" <<'PY'
import boto3, sys
client = boto3.client("ecr", region_name="us-west-2", endpoint_url="https://api.ecr.us-west-2.amazonaws.com")
if sys.argv[1] == "create":
    client.create_repository(repositoryName=sys.argv[2])
elif sys.argv[1] == "password":
    import base64
    data = client.get_authorization_token()["authorizationData"][0]["authorizationToken"]
    print(base64.b64decode(data).decode().split(":", 1)[1])
else:
    print(client.describe_images(repositoryName=sys.argv[2])["imageDetails"][0]["imageDigest"])
PY
}
west create "$PREFIX/docker"
west password | docker --config "$CONFIG" login -u AWS --password-stdin "$STANDIN_REGION2_HOST" >/dev/null 2>&1 \
  || fail "docker login $STANDIN_REGION2_HOST"
docker tag local/busybox:latest "$STANDIN_REGION2_HOST/$PREFIX/docker:1"
docker --config "$CONFIG" push -q "$STANDIN_REGION2_HOST/$PREFIX/docker:1" >/dev/null || fail "docker push to $STANDIN_REGION2_HOST"
digest=$(west digest "$PREFIX/docker")
[ -n "$digest" ] || fail "moto us-west-2 lacks the pushed image"
ok "docker login + push to $STANDIN_REGION2_HOST; DescribeImages in us-west-2: $digest"
REPL=$(cat "$WORK/replicated-image")
docker --config "$CONFIG" pull -q "$REPL" >/dev/null || fail "docker pull $REPL (replicated from us-east-1)"
docker rmi -f "$REPL" >/dev/null 2>&1 || true
ok "docker pull of the image replication copied: $REPL"
IMG=$(cat "$WORK/public-image")
docker pull -q "$IMG" >/dev/null || fail "anonymous docker pull $IMG (main engine)"
ok "anonymous docker pull $IMG (main engine, Bearer challenge -> /token/)"
DOCKER_HOST=$STANDIN_ENGINE_28_CONTAINERD docker pull -q "$IMG" >/dev/null \
  || fail "anonymous docker pull $IMG (28-containerd engine)"
ok "anonymous docker pull $IMG (28-containerd engine)"
printf '\nsmoke_targets.sh: all checks passed\n'
