#!/usr/bin/env bash
# Self-check of the ECR stand-in, using only the docker CLI, curl and python (boto3).
# The ECR-conformance checks of the front (tokens, uploads, manifests, mounts, redirects,
# visibility, templates, referrers, managed signing, KMS, modes: README.md's conformance
# table) are in conformance.py; step (j) runs the real cosign and oras; step (k) the
# other registries, STS, the deny switch and ECR Public (smoke_targets.sh).
# Run after `scripts/standin start`. Safe next to other tests by default (own repository
# prefix, faults pinned to its own paths); SMOKE_EXCLUSIVE=1 also resets the stand-in first
# and checks the `refuse` fault, which both disturb anyone else using it.
# Exits non-zero on the first failed check.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
STANDIN=$ROOT/scripts/standin
eval "$("$STANDIN" env)"
REG=$STANDIN_REGISTRY_HOST
DIRECT=127.0.0.1:5003   # a throwaway plain registry, for the timing baseline only
BASELINE_PID=
SMOKE_LABEL=ecr-build-push-standin-smoke
ECR=(python3 "$ROOT/tests/standin/ecr.py")
V2_MANIFEST=application/vnd.docker.distribution.manifest.v2+json

WORK=$(mktemp -d)
cleanup() {
  # Fault rules left behind by a failed run name only this run's paths, so they never
  # fire; in exclusive mode, drop them (and end a "refuse") anyway.
  if [ "$EXCLUSIVE" = 1 ]; then
    curl -fsS -o /dev/null --max-time 5 -X DELETE "$STANDIN_FAULTS_URL/faults" 2>/dev/null || true
  fi
  # Never leave credentials in ~/.docker/config.json, whatever happened.
  docker logout "$REG" >/dev/null 2>&1 || true
  # Only our own images, found by label: retagged builds leave untagged ones behind.
  docker images -q --filter "label=$SMOKE_LABEL" | sort -u | xargs -r docker rmi -f >/dev/null 2>&1 || true
  if [ -n "$BASELINE_PID" ]; then kill "$BASELINE_PID" 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

step() { printf '\n== %s\n' "$*"; }
ok() { printf '   ok: %s\n' "$*"; }
fail() { printf '   FAIL: %s\n' "$*" >&2; exit 1; }

# build TAG CONTENT: a tiny image whose only layer holds CONTENT, so different CONTENT
# means a different manifest digest.
build() {
  printf 'FROM local/busybox\nLABEL %s=1\nRUN echo %q > /hello\n' "$SMOKE_LABEL" "$2" \
    | docker build -q -t "$1" - >/dev/null
}

# stat NAME COUNTER: one of the front's counters for a repository (GET /stats).
stat() {
  curl -fsS "$STANDIN_FAULTS_URL/stats?repository=$1" | jq -r ".$2"
}

# manifest_digest NAME REF: the registry's digest, asked through the front like a client.
manifest_digest() {
  curl -fsS -I -u "AWS:$PASSWORD" -H "Accept: $V2_MANIFEST" \
    "https://$REG/v2/$1/manifests/$2" | tr -d '\r' \
    | awk -F': ' 'tolower($1)=="docker-content-digest" {print $2}'
}

RUN_ID=$(date +%s%N)
# Every repository of this run lives under its own prefix, so smoke can run while other
# tests use the stand-in. SMOKE_EXCLUSIVE=1 adds the two checks that disturb everyone:
# `standin reset` first (drops every repository) and a 1 s `refuse` fault.
NS=smoke-$RUN_ID
EXCLUSIVE=${SMOKE_EXCLUSIVE:-0}
FRONT_LOG=/var/lib/ecr-build-push-standin/front-requests.log

if [ "$EXCLUSIVE" = 1 ]; then
step "reset (SMOKE_EXCLUSIVE=1)"
# The reset drops every repository and image, so never pull it from under a test that is
# using the stand-in right now: wait (up to a minute) until the front has been idle for
# 10 s. SMOKE_FORCE=1 skips the wait.
front_idle_seconds() {
  local last
  last=$(grep -E '^[0-9]{4}-[0-9]{2}-[0-9]{2} ' "$FRONT_LOG" 2>/dev/null | tail -n 1 | cut -c1-19)
  [ -n "$last" ] || { echo 999; return; }
  echo $(( $(date +%s) - $(date -d "$last" +%s) ))
}
if [ "${SMOKE_FORCE:-0}" != 1 ]; then
  waited=0
  until [ "$(front_idle_seconds)" -ge 10 ]; do
    [ "$waited" = 0 ] && printf '   waiting for the front to be idle for 10 s (other tests?)\n'
    [ "$waited" -lt 60 ] || fail "the front is still busy after 60 s; run smoke when no other test runs (or SMOKE_FORCE=1)"
    sleep 1
    waited=$((waited + 1))
  done
fi
t0=$(date +%s%N)
"$STANDIN" reset
ok "reset took $(( ($(date +%s%N) - t0) / 1000000 )) ms"
[ "$(curl -fsS "$STANDIN_MOTO_URL/moto-api/data.json" | jq '(.ecr.Repository // []) | length')" = 0 ] \
  || fail "moto still has repositories after reset"
[ -z "$(find /var/lib/ecr-build-push-standin/registry -type f | head -1)" ] \
  || fail "registry storage not empty after reset"
ok "moto and the registry are empty"
fi

step "login with the token from GetAuthorizationToken (TLS API route, system CA)"
PASSWORD=$("${ECR[@]}" password)
[ "$PASSWORD" != 123456789012-auth-token ] && [ "${#PASSWORD}" -gt 1000 ] \
  || fail "GetAuthorizationToken did not come from the front: ${PASSWORD:0:40}..."
[ "$("${ECR[@]}" password)" != "$PASSWORD" ] || fail "two GetAuthorizationToken calls gave one password"
# As `aws ecr get-login-password | docker login`, which is what users run.
aws ecr get-login-password | docker login -u AWS --password-stdin "$REG" >/dev/null 2>&1 \
  || fail "docker login $REG with aws ecr get-login-password"
ok "docker login with a fresh ECR token (${#PASSWORD} characters, new per call)"

step "(a) push to a repository ECR does not know -> NAME_UNKNOWN"
build "$REG/$NS/missing:1" "missing $RUN_ID"
if docker push "$REG/$NS/missing:1" >"$WORK/push-a.log" 2>&1; then
  fail "push to an unknown repository succeeded"
fi
grep -q "does not exist in the registry with id '123456789012'" "$WORK/push-a.log" \
  || { cat "$WORK/push-a.log"; fail "docker push did not report NAME_UNKNOWN"; }
code=$(curl -sS -u "AWS:$PASSWORD" "https://$REG/v2/$NS/missing/tags/list" | jq -r '.errors[0].code')
[ "$code" = NAME_UNKNOWN ] || fail "tags/list on an unknown repository gave $code"
ok "refused with NAME_UNKNOWN"

step "(b) create $NS/app, push two tags, registry digest == moto digest"
"${ECR[@]}" create $NS/app
build "$REG/$NS/app:one" "app $RUN_ID"
docker tag "$REG/$NS/app:one" "$REG/$NS/app:two"
docker push -q "$REG/$NS/app:one" >/dev/null || fail "push $NS/app:one"
docker push -q "$REG/$NS/app:two" >/dev/null || fail "push $NS/app:two"
for tag in one two; do
  reg_digest=$(manifest_digest $NS/app "$tag")
  moto_digest=$("${ECR[@]}" digest $NS/app "$tag")
  [ -n "$reg_digest" ] && [ "$reg_digest" = "$moto_digest" ] \
    || fail "tag $tag: registry $reg_digest, moto $moto_digest"
done
APP_DIGEST=$reg_digest
ok "both tags at $APP_DIGEST in the registry and in moto"
# ECR mode by default: the daemon's pusher sends one PATCH per blob (answered 201), so
# nothing is dropped, and every manifest PUT was seen.
[ "$(stat $NS/app max_patches_per_session)" = 1 ] && [ "$(stat $NS/app dropped_patches)" = 0 ] \
  && [ "$(stat $NS/app manifest_puts)" = 2 ] && [ "$(stat $NS/app patches)" -ge 1 ] \
  || fail "push counters: $(curl -fsS "$STANDIN_FAULTS_URL/stats?repository=$NS/app")"
ok "docker's push in ECR mode: one PATCH per blob (201), none dropped"

step "(c) IMMUTABLE repository keeps its tags"
"${ECR[@]}" create $NS/frozen IMMUTABLE
build "$REG/$NS/frozen:v1" "frozen first $RUN_ID"
docker push -q "$REG/$NS/frozen:v1" >/dev/null || fail "first push to $NS/frozen:v1"
first=$("${ECR[@]}" digest $NS/frozen v1)
# ECR refuses even the same image on an existing immutable tag (containers-roadmap#2380).
if docker push "$REG/$NS/frozen:v1" >"$WORK/push-c0.log" 2>&1; then
  fail "identical re-push to an immutable tag was accepted (ECR refuses it)"
fi
grep -q "already exists in the .$NS/frozen. repository" "$WORK/push-c0.log" || { cat "$WORK/push-c0.log"; fail "identical re-push: no TAG_INVALID"; }
ok "identical re-push refused with TAG_INVALID"
"${ECR[@]}" create $NS/frozen-ref IMMUTABLE
curl -fsS -o /dev/null -X POST -d "{\"repository\":\"$NS/frozen-ref\",\"mode\":\"reference\"}" \
  "$STANDIN_FAULTS_URL/mode" || fail "POST /mode"
docker tag "$REG/$NS/frozen:v1" "$REG/$NS/frozen-ref:v1"
docker push -q "$REG/$NS/frozen-ref:v1" >/dev/null || fail "first push to $NS/frozen-ref:v1"
docker push -q "$REG/$NS/frozen-ref:v1" >/dev/null || fail "identical re-push refused in reference mode"
ok "in reference mode (POST /mode) the identical re-push is accepted, as the plain registry does"
build "$REG/$NS/frozen:v1" "frozen second $RUN_ID"
if docker push "$REG/$NS/frozen:v1" >"$WORK/push-c.log" 2>&1; then
  fail "a different image replaced an immutable tag"
fi
grep -q "already exists in the '$NS/frozen' repository and cannot be overwritten" "$WORK/push-c.log" \
  || { cat "$WORK/push-c.log"; fail "docker push did not report TAG_INVALID"; }
[ "$("${ECR[@]}" digest $NS/frozen v1)" = "$first" ] || fail "moto moved the immutable tag"
[ "$(manifest_digest $NS/frozen v1)" = "$first" ] || fail "the registry moved the immutable tag"
ok "different image refused with TAG_INVALID; tag still at $first"

step "(d) pull back by digest"
docker rmi -f "$REG/$NS/app:one" "$REG/$NS/app:two" >/dev/null
docker pull -q "$REG/$NS/app@$APP_DIGEST" >/dev/null || fail "pull by digest"
[ "$(docker run --rm "$REG/$NS/app@$APP_DIGEST" cat /hello)" = "app $RUN_ID" ] \
  || fail "pulled image has the wrong content"
[ "$(stat $NS/app blob_redirects)" -ge 1 ] || fail "the pull read no blob through ECR's 307"
ok "pulled and ran $NS/app@$APP_DIGEST (blob GETs through the 307 to S3's host)"

step "(d2) docker push + pull of local/busybox in ECR mode"
"${ECR[@]}" create $NS/busybox
docker tag local/busybox:latest "$REG/$NS/busybox:latest"
docker push -q "$REG/$NS/busybox:latest" >/dev/null || fail "push local/busybox"
docker rmi "$REG/$NS/busybox:latest" >/dev/null
docker pull -q "$REG/$NS/busybox:latest" >/dev/null || fail "pull $NS/busybox"
[ "$(docker run --rm "$REG/$NS/busybox:latest" echo pulled)" = pulled ] || fail "run the pulled busybox"
counters=$(curl -fsS "$STANDIN_FAULTS_URL/stats?repository=$NS/busybox")
# The daemon holds busybox's blobs already (local/busybox is the same image), so this pull
# reads the manifest only; (d) and conformance.py cover blob GETs through the 307.
jq -e '.max_patches_per_session <= 1 and .dropped_patches == 0 and .manifest_puts == 1' \
  <<<"$counters" >/dev/null || fail "busybox counters: $counters"
ok "pushed (one PATCH per blob, 201, none dropped) and pulled back local/busybox"
docker rmi "$REG/$NS/busybox:latest" >/dev/null

step "(f) 8 parallel pushes through the front"
"${ECR[@]}" create $NS/parallel
pids=()
for i in $(seq 8); do
  build "$REG/$NS/parallel:p$i" "parallel $i $RUN_ID"
done
t0=$(date +%s%N)
for i in $(seq 8); do
  docker push -q "$REG/$NS/parallel:p$i" >"$WORK/par-$i.log" 2>&1 &
  pids+=($!)
done
for i in "${!pids[@]}"; do
  wait "${pids[$i]}" || { cat "$WORK/par-$((i + 1)).log"; fail "parallel push $((i + 1))"; }
done
n=$("${ECR[@]}" images $NS/parallel | jq length)
[ "$n" = 8 ] || fail "moto has $n images after 8 parallel pushes"
ok "8 pushes in $(( ($(date +%s%N) - t0) / 1000000 )) ms, 8 images in moto"

step "(g) fault injection ($STANDIN_FAULTS_URL)"
log_from=$(( $(wc -l <"$FRONT_LOG") + 1 ))
faults() { curl -fsS "$@"; }
add_fault() {
  curl -fsS -o /dev/null -X POST -H 'Content-Type: application/json' -d "$1" "$STANDIN_FAULTS_URL/faults" \
    || fail "POST /faults $1"
}
injected_before=$(faults "$STANDIN_FAULTS_URL/faults" | jq .injected) || fail "GET /faults"
[ "$(curl -sS -o /dev/null -w '%{http_code}' -X POST -d '{"mode":"status","paths":"x"}' \
  "$STANDIN_FAULTS_URL/faults")" = 400 ] || fail "a misspelt field was accepted"
# Every rule below is pinned to smoke's own paths (or API action), so it cannot hit a
# request of some other test that happens to use the stand-in at the same time.
TAGS_URL=https://$REG/v2/$NS/app/tags/list

add_fault "{\"route\":\"registry\",\"mode\":\"status\",\"status\":503,\"count\":2,\"method\":\"GET\",\"path\":\"/v2/$NS/app/tags/list\"}"
codes=
for i in 1 2 3; do
  codes+=$(curl -sS -o "$WORK/status-$i.json" -w '%{http_code} ' -u "AWS:$PASSWORD" "$TAGS_URL")
done
[ "$codes" = "503 503 200 " ] || fail "503 x2 then success: got $codes"
[ "$(jq -r '.errors[0].code' "$WORK/status-1.json")" = UNAVAILABLE ] || fail "503 body: $(cat "$WORK/status-1.json")"
jq -e '.tags | index("one")' "$WORK/status-3.json" >/dev/null || fail "tags/list after the faults"
ok "status: two GETs answered 503 UNAVAILABLE, the third went through"

location=$(curl -fsS -o /dev/null -D - -X POST -u "AWS:$PASSWORD" "https://$REG/v2/$NS/app/blobs/uploads/" \
  | tr -d '\r' | awk -F': ' 'tolower($1)=="location" {print $2}')
[ -n "$location" ] || fail "could not start a blob upload"
head -c 300000 /dev/urandom >"$WORK/reset-body"
add_fault "{\"route\":\"registry\",\"mode\":\"reset\",\"method\":\"PATCH\",\"path\":\"/v2/$NS/app/blobs/uploads/\"}"
rc=0
curl -sS -o /dev/null -X PATCH -u "AWS:$PASSWORD" -H 'Content-Type: application/octet-stream' \
  --data-binary @"$WORK/reset-body" "$location" 2>"$WORK/reset.err" || rc=$?
case $rc in
  55 | 56) ;;  # send / receive failure: "Connection reset by peer"
  *) cat "$WORK/reset.err"; fail "PATCH during a reset fault: curl exit $rc, expected 55 or 56" ;;
esac
ok "reset: PATCH dropped mid-body ($(tr -d '\n' <"$WORK/reset.err"))"

add_fault "{\"route\":\"registry\",\"mode\":\"delay\",\"seconds\":1,\"method\":\"GET\",\"path\":\"/v2/$NS/app/tags/list\"}"
secs=$(curl -fsS -o /dev/null -w '%{time_total}' -u "AWS:$PASSWORD" "$TAGS_URL") || fail "delayed GET"
awk -v s="$secs" 'BEGIN { exit !(s >= 1.0 && s < 5) }' || fail "delay of 1 s took ${secs}s"
ok "delay: answered after ${secs}s"

if [ "$EXCLUSIVE" = 1 ]; then
t0=$(date +%s%N)
add_fault '{"mode":"refuse","seconds":1}'
rc=0
curl -sS -o /dev/null --max-time 2 "https://$REG/v2/" 2>"$WORK/refuse.err" || rc=$?
[ "$rc" = 7 ] || { cat "$WORK/refuse.err"; fail "connect during refuse: curl exit $rc, expected 7"; }
until [ "$(curl -sS -o /dev/null -w '%{http_code}' --max-time 2 "https://$REG/v2/" 2>/dev/null)" = 401 ]; do
  [ $(( ($(date +%s%N) - t0) / 1000000 )) -lt 5000 ] || fail "the front did not accept again after refuse"
  sleep 0.05
done
ok "refuse: connection refused, accepting again after $(( ($(date +%s%N) - t0) / 1000000 )) ms"
else
  ok "refuse: skipped (it refuses every client for 1 s; SMOKE_EXCLUSIVE=1 runs it)"
fi

add_fault '{"route":"api","mode":"status","error":"ThrottlingException","action":"DescribeRepositories"}'
[ "$("${ECR[@]}" try)" = ThrottlingException ] || fail "no ThrottlingException"
[ "$("${ECR[@]}" try)" = ok ] || fail "the call after a throttled one failed"
add_fault '{"route":"api","mode":"status","status":503,"count":2,"action":"DescribeRepositories"}'
[ "$("${ECR[@]}" try --retry)" = ok ] || fail "boto3 did not get through two 503s in 3 attempts"
ok "api: ThrottlingException once; boto3's retries got through two 503 ServiceUnavailableException"

[ "$(AWS_ACCESS_KEY_ID=AKIADENIEDEXAMPLE "${ECR[@]}" try)" = UnrecognizedClientException ] \
  || fail "AKIADENIEDEXAMPLE was not refused"
[ "$(AWS_ACCESS_KEY_ID=AKIAEXPIREDEXAMPLE "${ECR[@]}" try)" = ExpiredTokenException ] \
  || fail "AKIAEXPIREDEXAMPLE was not refused as expired"
header=$(curl -sS -o /dev/null -D - -X POST -d '{}' \
  -H 'X-Amz-Target: AmazonEC2ContainerRegistry_V20150921.DescribeRepositories' \
  -H 'Authorization: AWS4-HMAC-SHA256 Credential=AKIADENIEDEXAMPLE/20250101/us-east-1/ecr/aws4_request, SignedHeaders=host, Signature=00' \
  "$AWS_ENDPOINT_URL_ECR/" | tr -d '\r' | awk -F': ' 'tolower($1)=="x-amzn-errortype" {print $2}')
[ "$header" = UnrecognizedClientException ] || fail "x-amzn-ErrorType: '$header'"
ok "credentials: denied -> UnrecognizedClientException, expired -> ExpiredTokenException"

state=$(faults "$STANDIN_FAULTS_URL/faults") || fail "GET /faults"
# 2 status + reset + delay + (refuse) + throttle + 2 x 503 (credentials are not rules);
# other tests' faults may add to the count, never take from it.
expected=$((injected_before + 7 + EXCLUSIVE))
jq -e --arg ns "/v2/$NS/" --argjson n "$expected" \
  '([.pending[] | select((.path // "") | startswith($ns)) | select(.action == null)] | length) == 0
   and .injected >= $n' <<<"$state" >/dev/null || fail "GET /faults (want >= $expected injected): $state"
tail -n +"$log_from" "$FRONT_LOG" >"$WORK/front.log"
marks="status reset delay UnrecognizedClientException ExpiredTokenException"
[ "$EXCLUSIVE" = 1 ] && marks+=" refuse"
for mark in $marks; do
  grep -q "injected:$mark" "$WORK/front.log" || fail "no injected:$mark line in $FRONT_LOG"
done
! grep -qiE 'credential=|signature=|authorization' "$WORK/front.log" || fail "credentials in the request log"
ok "GET /faults: none of ours pending, $((expected - injected_before)) injected; all marked in the request log, no credentials"

step "(i) ECR conformance of the front (conformance.py)"
SMOKE_EXCLUSIVE=$EXCLUSIVE python3 "$ROOT/tests/standin/conformance.py" "$NS/conformance" || fail "conformance.py"

step "(h) the docker socket over TCP and TLS"
TLS=(--tlsverify --tlscacert "$STANDIN_DOCKER_CERT_PATH/ca.pem")
docker -H "$STANDIN_DOCKER_TCP" info --format '{{.ServerVersion}}' >/dev/null || fail "docker -H $STANDIN_DOCKER_TCP info"
docker "${TLS[@]}" --tlscert "$STANDIN_DOCKER_CERT_PATH/cert.pem" --tlskey "$STANDIN_DOCKER_CERT_PATH/key.pem" \
  -H "$STANDIN_DOCKER_TLS" info --format '{{.ServerVersion}}' >/dev/null || fail "docker over TLS with the client cert"
if docker "${TLS[@]}" -H "$STANDIN_DOCKER_TLS" info >/dev/null 2>&1; then
  fail "docker over TLS without a client certificate was let in"
fi
[ "$(DOCKER_HOST=$STANDIN_DOCKER_TLS DOCKER_TLS_VERIFY=1 DOCKER_CERT_PATH=$STANDIN_DOCKER_CERT_PATH \
  docker run --rm local/busybox echo tls)" = tls ] || fail "docker run via DOCKER_HOST/DOCKER_CERT_PATH"
[ "$(head -n 1 "$STANDIN_DOCKER_CERT_PATH/key.pem")" = '-----BEGIN PRIVATE KEY-----' ] || fail "key.pem is not PKCS#8"
ok "$STANDIN_DOCKER_TCP; $STANDIN_DOCKER_TLS with the client cert (and not without)"

step "(j) cosign (AWS KMS key) and oras against the stand-in"
# The real tools, as the provenance tests use them: cosign 2.5 with awskms:///alias/NAME
# (AWS_REGION picks https://kms.us-east-1.amazonaws.com, the front), signatures and a
# slsaprovenance1 attestation as .sig/.att tags; oras discover over the referrers API.
# Both read the docker login above (~/.docker/config.json) and trust the test CA from the
# system store.
command -v cosign >/dev/null && command -v oras >/dev/null || fail "cosign or oras missing: run scripts/setup"
"${ECR[@]}" create $NS/signed
build "$REG/$NS/signed:1" "signed $RUN_ID"
docker push -q "$REG/$NS/signed:1" >/dev/null || fail "push $NS/signed"
SIGNED="$REG/$NS/signed@$(manifest_digest "$NS/signed" 1)"
KMS_ALIAS=alias/smoke-$RUN_ID
python3 -c 'import boto3, sys
kms = boto3.client("kms")
key = kms.create_key(KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")["KeyMetadata"]["KeyId"]
kms.create_alias(AliasName=sys.argv[1], TargetKeyId=key)' "$KMS_ALIAS" || fail "creating the KMS key"
cosign public-key --key "awskms:///$KMS_ALIAS" >"$WORK/cosign.pub" 2>"$WORK/cosign.err" \
  || fail "cosign public-key: $(tail -n 2 "$WORK/cosign.err")"
[ "$(head -n 1 "$WORK/cosign.pub")" = '-----BEGIN PUBLIC KEY-----' ] || fail "cosign public-key printed no PEM"
cosign sign --yes --key "awskms:///$KMS_ALIAS" --tlog-upload=false "$SIGNED" >/dev/null 2>"$WORK/cosign.err" \
  || fail "cosign sign: $(tail -n 2 "$WORK/cosign.err")"
cosign verify --key "awskms:///$KMS_ALIAS" --insecure-ignore-tlog=true "$SIGNED" >/dev/null 2>"$WORK/cosign.err" \
  || fail "cosign verify: $(tail -n 2 "$WORK/cosign.err")"
printf '{"buildDefinition":{"buildType":"https://example.com/smoke","externalParameters":{}},"runDetails":{"builder":{"id":"https://example.com/smoke"}}}' \
  >"$WORK/provenance.json"
cosign attest --yes --key "awskms:///$KMS_ALIAS" --tlog-upload=false --type slsaprovenance1 \
  --predicate "$WORK/provenance.json" "$SIGNED" >/dev/null 2>"$WORK/cosign.err" || fail "cosign attest: $(tail -n 2 "$WORK/cosign.err")"
cosign verify-attestation --key "awskms:///$KMS_ALIAS" --insecure-ignore-tlog=true --type slsaprovenance1 \
  "$SIGNED" >/dev/null 2>"$WORK/cosign.err" || fail "cosign verify-attestation: $(tail -n 2 "$WORK/cosign.err")"
ok "cosign public-key / sign / verify / attest / verify-attestation --type slsaprovenance1 with awskms:///$KMS_ALIAS"
(cd "$WORK" && oras attach --artifact-type application/vnd.in-toto+json "$SIGNED" \
  provenance.json:application/vnd.in-toto+json) >/dev/null 2>"$WORK/oras.err" || fail "oras attach: $(cat "$WORK/oras.err")"
found=$(oras discover --format json --artifact-type application/vnd.in-toto+json "$SIGNED" | jq '.manifests | length')
[ "$found" = 1 ] || fail "oras discover found $found in-toto referrers, not 1"
ok "oras attach + oras discover (referrers API)"

step "timing: a ~50 MB random layer, straight to a registry vs through the front"
# The stand-in's registry names the front in every Location (http.host), so a "direct"
# push to it would still upload through the front. The baseline is therefore a second,
# throwaway docker-registry on :5003 (same binary and storage driver, plain HTTP, no
# auth), which docker treats as an insecure loopback registry.
"${ECR[@]}" create $NS/big
mkdir -p "$WORK/baseline"
printf '%s\n' 'version: 0.1' 'log: {level: error, accesslog: {disabled: true}}' \
  "storage: {filesystem: {rootdirectory: $WORK/baseline/data}}" \
  "http: {addr: \"$DIRECT\"}" >"$WORK/baseline/config.yml"
docker-registry serve "$WORK/baseline/config.yml" </dev/null >"$WORK/baseline/log" 2>&1 &
BASELINE_PID=$!
for _ in $(seq 100); do curl -fsS -o /dev/null "http://$DIRECT/v2/" 2>/dev/null && break; sleep 0.1; done
# Two different random layers, so neither push finds its blob already uploaded.
for where in direct front; do
  mkdir -p "$WORK/$where"
  head -c 50000000 /dev/urandom >"$WORK/$where/blob"
  printf 'FROM local/busybox\nLABEL %s=1\nCOPY blob /blob\n' "$SMOKE_LABEL" >"$WORK/$where/Dockerfile"
done
docker build -q -t "$DIRECT/$NS/big:1" "$WORK/direct" >/dev/null
docker build -q -t "$REG/$NS/big:1" "$WORK/front" >/dev/null
t0=$(date +%s%N)
docker push -q "$DIRECT/$NS/big:1" >/dev/null || fail "push straight to the baseline registry"
direct_ms=$(( ($(date +%s%N) - t0) / 1000000 ))
t0=$(date +%s%N)
docker push -q "$REG/$NS/big:1" >/dev/null || fail "push through the front"
front_ms=$(( ($(date +%s%N) - t0) / 1000000 ))
printf '   straight to a registry:   %d ms\n   through the front:        %d ms\n' "$direct_ms" "$front_ms"
docker rmi -f "$DIRECT/$NS/big:1" "$REG/$NS/big:1" >/dev/null
kill "$BASELINE_PID" 2>/dev/null || true
BASELINE_PID=

step "(k) other registries, STS, the deny switch, ECR Public (smoke_targets.sh)"
"$ROOT/tests/standin/smoke_targets.sh" || fail "smoke_targets.sh"

step "(e) logout"
docker logout "$REG" >/dev/null
if [ -f ~/.docker/config.json ] && jq -e --arg r "$REG" '.auths[$r]' ~/.docker/config.json >/dev/null; then
  fail "credentials left in ~/.docker/config.json"
fi
ok "no credentials left in ~/.docker/config.json"

printf '\nsmoke: all checks passed\n'
