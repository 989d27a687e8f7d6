#!/usr/bin/env python3
"""Self-check of the stand-in's other registries, STS, the deny switch, replication and
ECR Public (README.md: "More registries", "Replication"). Run by smoke_targets.sh (after `scripts/standin start`,
with `scripts/standin env` exported). Own repository names (a random prefix): safe next
to other tests. Exits non-zero on the first failed check.

Usage: smoke_targets.py PREFIX [OUT_DIR]   (OUT_DIR: where to write the public image's
reference for the docker pull that smoke_targets.sh does)
"""
from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import os
import sys
import tarfile
import time

import boto3
import botocore.exceptions
import requests

ENV = os.environ
CONTROL = ENV["STANDIN_FAULTS_URL"]
ACCOUNT = "123456789012"
PRIMARY_HOST = ENV["STANDIN_REGISTRY_HOST"]
REGION2, REGION2_HOST = ENV["STANDIN_REGION2"], ENV["STANDIN_REGION2_HOST"]
ACCOUNT2, ACCOUNT2_REGION = ENV["STANDIN_ACCOUNT2"], ENV["STANDIN_ACCOUNT2_REGION"]
ACCOUNT2_HOST, ROLE = ENV["STANDIN_ACCOUNT2_HOST"], ENV["STANDIN_ACCOUNT2_ROLE"]
PUBLIC_HOST, ALIAS = ENV["STANDIN_PUBLIC_HOST"], ENV["STANDIN_PUBLIC_ALIAS"]
FIPS_HOST = f"{ACCOUNT}.dkr.ecr-fips.{REGION2}.amazonaws.com"
DUALSTACK_HOST = f"{ACCOUNT}.dkr-ecr.{REGION2}.on.aws"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"

PREFIX = sys.argv[1]
OUT = sys.argv[2] if len(sys.argv) > 2 else None


def ok(text: str) -> None:
    print(f"   ok: {text}", flush=True)


def step(text: str) -> None:
    print(f"\n== {text}", flush=True)


def check(condition, text: str) -> None:
    if not condition:
        print(f"   FAIL: {text}", file=sys.stderr, flush=True)
        sys.exit(1)
    ok(text)


def ecr(region: str, session=None):
    # By name: AWS_ENDPOINT_URL_ECR is the primary API's, so the region alone is not enough.
    session = session or boto3.Session()
    return session.client("ecr", region_name=region, endpoint_url=f"https://api.ecr.{region}.amazonaws.com")


def error_code(call) -> str:
    try:
        call()
    except botocore.exceptions.ClientError as exc:
        return exc.response["Error"]["Code"] + ": " + exc.response["Error"].get("Message", "")
    return "no error"


def password(client, **kwargs) -> tuple[str, str]:
    data = client.get_authorization_token(**kwargs)["authorizationData"][0]
    return base64.b64decode(data["authorizationToken"]).decode().split(":", 1)[1], data["proxyEndpoint"]


def image(content: str) -> tuple[bytes, bytes, bytes]:
    """A real (pullable) one-layer image: gzip layer, config, OCI manifest."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        data = content.encode()
        info = tarfile.TarInfo("hello.txt")
        info.size, info.mtime = len(data), 0
        tar.addfile(info, io.BytesIO(data))
    layer = gzip.compress(raw.getvalue(), mtime=0)
    config = json.dumps({"architecture": "amd64", "os": "linux", "config": {},
                         "rootfs": {"type": "layers", "diff_ids": [
                             "sha256:" + hashlib.sha256(raw.getvalue()).hexdigest()]}}).encode()
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": "sha256:" + hashlib.sha256(config).hexdigest(), "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": "sha256:" + hashlib.sha256(layer).hexdigest(), "size": len(layer)}],
    }).encode()
    return layer, config, manifest


def push(host: str, name: str, tag: str, auth, content: str) -> str:
    """Monolithic blob uploads and a manifest PUT; the manifest's digest."""
    layer, config, manifest = image(content)
    s = requests.Session()
    s.auth = auth if isinstance(auth, tuple) else None
    headers = {} if isinstance(auth, tuple) else {"Authorization": auth}
    for blob in (layer, config):
        r = s.post(f"https://{host}/v2/{name}/blobs/uploads/", headers=headers)
        if r.status_code != 202:
            raise SystemExit(f"   FAIL: upload POST at {host}/{name}: {r.status_code} {r.text}")
        location = r.headers["Location"]
        if "standin-" in location or not location.startswith(f"https://{host}/v2/{name}/"):
            raise SystemExit(f"   FAIL: Location {location!r} is not the client's name")
        digest = "sha256:" + hashlib.sha256(blob).hexdigest()
        r = s.put(location + ("&" if "?" in location else "?") + f"digest={digest}", data=blob,
                  headers=dict(headers, **{"Content-Type": "application/octet-stream"}))
        if r.status_code != 201:
            raise SystemExit(f"   FAIL: blob PUT at {host}/{name}: {r.status_code} {r.text}")
    r = s.put(f"https://{host}/v2/{name}/manifests/{tag}", data=manifest,
              headers=dict(headers, **{"Content-Type": OCI_MANIFEST}))
    if r.status_code != 201:
        raise SystemExit(f"   FAIL: manifest PUT at {host}/{name}:{tag}: {r.status_code} {r.text}")
    return "sha256:" + hashlib.sha256(manifest).hexdigest()


def control(method: str, path: str, body=None):
    r = requests.request(method, CONTROL + path, json=body)
    r.raise_for_status()
    return r.json()


# --- more private registries ------------------------------------------------------------

step("(t1) second region: own API, own token, own namespace")
east, west = ecr("us-east-1"), ecr(REGION2)
name = f"{PREFIX}/app"
west.create_repository(repositoryName=name)
check(error_code(lambda: east.describe_repositories(repositoryNames=[name])).startswith("RepositoryNotFoundException"),
      "a repository created in us-west-2 is not in us-east-1 (moto keyed by region)")
west_password, endpoint = password(west)
check(endpoint == f"https://{REGION2_HOST}", f"proxyEndpoint {endpoint}")
east_password, _ = password(east)
digest = push(REGION2_HOST, name, "v1", ("AWS", west_password), "region2")
ok("push to the second region's host (Locations name the client's repository)")
details = west.describe_images(repositoryName=name)["imageDetails"]
check([d["imageDigest"] for d in details] == [digest], "DescribeImages in us-west-2 sees the manifest PUT there")
check(west.batch_get_image(repositoryName=name, imageIds=[{"imageTag": "v1"}])["images"][0]["imageId"]["imageDigest"] == digest,
      "BatchGetImage in us-west-2 too")
r = requests.get(f"https://{PRIMARY_HOST}/v2/{name}/tags/list", auth=("AWS", east_password))
check(r.status_code == 404 and "NAME_UNKNOWN" in r.text, "the primary host does not see it (404 NAME_UNKNOWN)")
r = requests.get(f"https://{REGION2_HOST}/v2/{name}/tags/list", auth=("AWS", east_password))
check(r.status_code == 403 and "DENIED" in r.text, "a us-east-1 token at the us-west-2 host: 403 DENIED")
r = requests.get(f"https://{PRIMARY_HOST}/v2/{name}/tags/list", auth=("AWS", west_password))
check(r.status_code == 403 and "DENIED" in r.text, "a us-west-2 token at the primary host: 403 DENIED")
r = requests.get(f"https://{REGION2_HOST}/v2/{name}/tags/list", auth=("AWS", west_password))
check(r.status_code == 200 and r.json() == {"name": name, "tags": ["v1"]}, f"tags/list without the prefix: {r.text}")
r = requests.get(f"https://{REGION2_HOST}/v2/{name}/manifests/nope", auth=("AWS", west_password),
                 headers={"Accept": OCI_MANIFEST})
check(r.status_code == 404 and "standin-" not in r.text, "registry errors without the prefix")
r = requests.get(f"https://{REGION2_HOST}/v2/_catalog", auth=("AWS", west_password))
check(name in r.json()["repositories"] and all("standin-" not in n for n in r.json()["repositories"]),
      "the second region's catalog lists its repository, unprefixed")
r = requests.get(f"https://{PRIMARY_HOST}/v2/_catalog", auth=("AWS", east_password))
check(r.status_code != 200 or all(not n.startswith("standin-") for n in r.json().get("repositories", [])),
      "the primary's catalog hides the internal prefixes")
r = requests.get(f"https://{REGION2_HOST}/v2/{name}/tags/list")
check(r.status_code == 401 and REGION2_HOST in r.headers.get("WWW-Authenticate", ""),
      "no credentials: 401, the challenge names the host asked")
r = requests.post(f"https://{REGION2_HOST}/v2/{PREFIX}/missing/blobs/uploads/", auth=("AWS", west_password))
check(r.status_code == 404 and "NAME_UNKNOWN" in r.text and "standin-" not in r.text,
      "push to a repository the region lacks: 404 NAME_UNKNOWN")
r = requests.post(f"https://{REGION2_HOST}/v2/{name}/blobs/uploads/?mount={details[0]['imageDigest']}&from={name}",
                  auth=("AWS", west_password))
check(r.status_code == 202, "mount without BLOB_MOUNTING: 202, a new session (the ECR rules apply here too)")
r = requests.put(f"https://{REGION2_HOST}/v2/{name}/manifests/v1", auth=("AWS", west_password),
                 headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json; charset=utf-8"}, data=b"{}")
check(r.status_code == 405, "media type with parameters: 405 (ECR mode on this host)")
stats = control("GET", f"/stats?repository=standin-targets/{ACCOUNT}-{REGION2}/{name}")
check(stats.get("manifest_puts", 0) >= 2, "counters under the internal name (GET /stats)")

step("(t2) FIPS and dual-stack names of the second region: the same registry")
fips = boto3.client("ecr", region_name=REGION2, endpoint_url=f"https://ecr-fips.{REGION2}.amazonaws.com")
dual = boto3.client("ecr", region_name=REGION2, endpoint_url=f"https://ecr.{REGION2}.api.aws")
check(fips.describe_repositories(repositoryNames=[name])["repositories"][0]["repositoryName"] == name, "FIPS API")
check(dual.describe_images(repositoryName=name)["imageDetails"][0]["imageDigest"] == digest, "dual-stack API")
for host in (FIPS_HOST, DUALSTACK_HOST):
    r = requests.get(f"https://{host}/v2/{name}/tags/list", auth=("AWS", west_password))
    check(r.status_code == 200 and r.json()["tags"] == ["v1"], f"{host}: the us-west-2 token, the same tags")
    r = requests.post(f"https://{host}/v2/{name}/blobs/uploads/", auth=("AWS", west_password))
    check(r.headers.get("Location", "").startswith(f"https://{host}/v2/{name}/"), f"{host}: Location on that host")

# --- the second account ---------------------------------------------------------------

step("(t3) second account through an assumed role")
sts = boto3.client("sts", region_name=ACCOUNT2_REGION)
check(sts.meta.endpoint_url == f"https://sts.{ACCOUNT2_REGION}.amazonaws.com", f"STS at {sts.meta.endpoint_url}")
check(sts.get_caller_identity()["Account"] == ACCOUNT, "base credentials: account 1")
a2name = f"{PREFIX}/app"
base2 = ecr(ACCOUNT2_REGION)
code = error_code(lambda: base2.create_repository(repositoryName=a2name, registryId=ACCOUNT2))
check(code.startswith("AccessDeniedException") and "not authorized" in code,
      f"base credentials naming account 2's registry: {code[:90]}...")
token2, endpoint2 = password(base2, registryIds=[ACCOUNT2])
check(endpoint2 == f"https://{ACCOUNT2_HOST}", "a token for account 2's registry is issued (as ECR does)")
r = requests.post(f"https://{ACCOUNT2_HOST}/v2/{a2name}/blobs/uploads/", auth=("AWS", token2))
check(r.status_code == 403 and "DENIED" in r.text and "not authorized" in r.text,
      "but base credentials cannot push there: 403 DENIED")
creds = boto3.client("sts", region_name="us-east-1").assume_role(
    RoleArn=ROLE, RoleSessionName=f"{PREFIX.replace('/', '-')}-smoke",
    Tags=[{"Key": "repo", "Value": "smoke"}], TransitiveTagKeys=["repo"])["Credentials"]
role = boto3.Session(aws_access_key_id=creds["AccessKeyId"], aws_secret_access_key=creds["SecretAccessKey"],
                     aws_session_token=creds["SessionToken"])
who = role.client("sts", region_name=ACCOUNT2_REGION).get_caller_identity()
check(who["Account"] == ACCOUNT2 and ":assumed-role/ecr-build-push/" in who["Arn"], f"assumed: {who['Arn']}")
calls = [c for c in control("GET", "/sts")["calls"] if c["AccessKeyId"] == creds["AccessKeyId"]]
check(len(calls) == 1 and calls[0]["Action"] == "AssumeRole" and calls[0]["RoleArn"] == ROLE and calls[0]["Tags"] == [{"Key": "repo", "Value": "smoke"}]
      and calls[0]["TransitiveTagKeys"] == ["repo"] and calls[0]["SourceAccessKeyId"] == ENV["AWS_ACCESS_KEY_ID"],
      "GET /sts recorded RoleArn, RoleSessionName, Tags, TransitiveTagKeys, source key")
e2 = ecr(ACCOUNT2_REGION, role)
repo = e2.create_repository(repositoryName=a2name)["repository"]
check(repo["registryId"] == ACCOUNT2 and repo["repositoryArn"].startswith(f"arn:aws:ecr:{ACCOUNT2_REGION}:{ACCOUNT2}:"),
      f"the role's calls act in account 2: {repo['repositoryArn']}")
check(error_code(lambda: base2.describe_repositories(repositoryNames=[a2name])).startswith("RepositoryNotFoundException"),
      "account 1 in eu-west-1 does not see it")
role_password, endpoint = password(e2)
check(endpoint == f"https://{ACCOUNT2_HOST}", f"the role's token names {endpoint}")
digest2 = push(ACCOUNT2_HOST, a2name, "v1", ("AWS", role_password), "account2")
check(e2.describe_images(repositoryName=a2name)["imageDetails"][0]["imageDigest"] == digest2,
      "pushed with the role's token; DescribeImages in account 2 sees it")
r = requests.get(f"https://{REGION2_HOST}/v2/{name}/tags/list", auth=("AWS", role_password))
check(r.status_code == 403, "account 2's token at account 1's host: 403")

step("(t4) deny switch (POST /deny)")
denied = f"{PREFIX}/denied"
e2.create_repository(repositoryName=denied)
control("POST", "/deny", {"account": ACCOUNT2, "repository": denied})
code = error_code(lambda: e2.describe_images(repositoryName=denied))
check(code.startswith("AccessDeniedException: User: arn:aws:sts::210987654321:assumed-role/ecr-build-push/")
      and f"ecr:DescribeImages on resource: arn:aws:ecr:{ACCOUNT2_REGION}:{ACCOUNT2}:repository/{denied}" in code
      and "because no identity-based policy allows the ecr:DescribeImages action" in code,
      "the API: AccessDeniedException with IAM's message")
r = requests.post(f"https://{ACCOUNT2_HOST}/v2/{denied}/blobs/uploads/", auth=("AWS", role_password))
check(r.status_code == 403 and "DENIED" in r.text and "ecr:InitiateLayerUpload" in r.text, "the registry: 403 DENIED")
check(e2.describe_images(repositoryName=a2name)["imageDetails"], "other repositories unaffected")
check(any(d["repository"] == denied for d in control("GET", "/deny")["denied"]), "GET /deny lists it")

# --- replication ---------------------------------------------------------------------

def push_raw(host: str, name: str, reference: str, manifest: bytes, media_type: str, auth, blobs=()) -> str:
    """Upload `blobs` (bytes) and PUT `manifest` as `media_type`; its digest."""
    s = requests.Session()
    s.auth = auth
    for blob in blobs:
        r = s.post(f"https://{host}/v2/{name}/blobs/uploads/")
        digest = "sha256:" + hashlib.sha256(blob).hexdigest()
        location = r.headers["Location"]
        r = s.put(location + ("&" if "?" in location else "?") + f"digest={digest}", data=blob,
                  headers={"Content-Type": "application/octet-stream"})
        if r.status_code != 201:
            raise SystemExit(f"   FAIL: blob PUT at {host}/{name}: {r.status_code} {r.text}")
    r = s.put(f"https://{host}/v2/{name}/manifests/{reference}", data=manifest, headers={"Content-Type": media_type})
    if r.status_code != 201:
        raise SystemExit(f"   FAIL: manifest PUT at {host}/{name}:{reference}: {r.status_code} {r.text}")
    return "sha256:" + hashlib.sha256(manifest).hexdigest()


def replication_statuses(client, repository: str, image_id: dict) -> list[dict]:
    return client.describe_image_replication_status(repositoryName=repository, imageId=image_id)["replicationStatuses"]


def wait_replication(client, repository: str, image_id: dict, want: str, seconds: float = 30) -> list[dict]:
    deadline = time.monotonic() + seconds
    while True:
        statuses = replication_statuses(client, repository, image_id)
        if statuses and all(s["status"] == want for s in statuses):
            return statuses
        if time.monotonic() > deadline:
            raise SystemExit(f"   FAIL: replication of {repository} {image_id} not {want} in {seconds}s: {statuses}")
        time.sleep(0.25)


step("(t9) replication: us-east-1 -> us-west-2 (same account, prefix filter), then -> account 2")
rprefix = f"{PREFIX}-repl"
rname, other = f"{rprefix}/app", f"{PREFIX}/not-replicated"
destination = {"region": REGION2, "registryId": ACCOUNT}
config = {"rules": [{"destinations": [destination],
                     "repositoryFilters": [{"filter": rprefix, "filterType": "PREFIX_MATCH"}]}]}
check(error_code(lambda: east.put_replication_configuration(replicationConfiguration={"rules": [
    {"destinations": [{"region": "us-east-1", "registryId": ACCOUNT}]}]})).startswith("InvalidParameterException"),
      "the source registry as its own destination: InvalidParameterException")
check(error_code(lambda: east.put_replication_configuration(replicationConfiguration={"rules": [
    {"destinations": [destination]}] * 11})).startswith("InvalidParameterException"), "11 rules: InvalidParameterException")
check(error_code(lambda: east.put_replication_configuration(replicationConfiguration={"rules": [
    {"destinations": [{"region": REGION2, "registryId": f"{n:012d}"} for n in range(1, 27)]}]}))
      .startswith("InvalidParameterException"), "26 unique destinations: InvalidParameterException")
check(error_code(lambda: east.put_replication_configuration(replicationConfiguration={"rules": [
    {"destinations": [destination], "repositoryFilters": [{"filter": "x*", "filterType": "WILDCARD"}]}]}))
      .startswith("InvalidParameterException"), "filterType other than PREFIX_MATCH: InvalidParameterException")
east.create_repository(repositoryName=rname)
east.create_repository(repositoryName=other)
east_auth = ("AWS", east_password)
before = push(PRIMARY_HOST, rname, "before", east_auth, "pushed before replication was configured")
registry_policy = False
try:
    answer = east.put_replication_configuration(replicationConfiguration=config)
    check(answer["replicationConfiguration"] == config, "PutReplicationConfiguration answers the configuration")
    registry = east.describe_registry()
    check(registry["registryId"] == ACCOUNT and registry["replicationConfiguration"] == config,
          "DescribeRegistry at the source's API host")
    check(west.describe_registry()["replicationConfiguration"] == {"rules": []},
          "the destination region's registry has its own (empty) configuration")
    rdigest = push(PRIMARY_HOST, rname, "v1", east_auth, "replicated")
    statuses = replication_statuses(east, rname, {"imageTag": "v1"})
    check(statuses == [{"region": REGION2, "registryId": ACCOUNT, "status": "IN_PROGRESS"}],
          f"right after the push: IN_PROGRESS ({statuses})")
    statuses = wait_replication(east, rname, {"imageDigest": rdigest}, "COMPLETE")
    check(statuses == [{"region": REGION2, "registryId": ACCOUNT, "status": "COMPLETE"}], "then COMPLETE")
    answer = east.describe_image_replication_status(repositoryName=rname, imageId={"imageTag": "v1"})
    check(answer["repositoryName"] == rname and answer["imageId"] == {"imageDigest": rdigest, "imageTag": "v1"},
          "DescribeImageReplicationStatus names the image by digest and the tag asked")
    details = west.describe_images(repositoryName=rname)["imageDetails"]
    check([(d["imageDigest"], d.get("imageTags")) for d in details] == [(rdigest, ["v1"])],
          "DescribeImages at the destination: the digest and tag (the repository was created; the earlier image is not there)")
    got = west.batch_get_image(repositoryName=rname, imageIds=[{"imageTag": "v1"}])["images"]
    check(len(got) == 1 and got[0]["imageId"]["imageDigest"] == rdigest, "BatchGetImage at the destination")
    r = requests.get(f"https://{REGION2_HOST}/v2/{rname}/manifests/v1", auth=("AWS", west_password),
                     headers={"Accept": OCI_MANIFEST})
    check(r.status_code == 200 and "sha256:" + hashlib.sha256(r.content).hexdigest() == rdigest,
          "the destination registry host serves the manifest")
    layer = r.json()["layers"][0]
    r = requests.get(f"https://{REGION2_HOST}/v2/{rname}/blobs/{layer['digest']}", auth=("AWS", west_password))
    check(r.status_code == 200 and "sha256:" + hashlib.sha256(r.content).hexdigest() == layer["digest"],
          "and its layer (through the blob redirect)")
    check(replication_statuses(east, rname, {"imageTag": "before"}) == [],
          "an image pushed before the configuration: no statuses")
    odigest = push(PRIMARY_HOST, other, "v1", east_auth, "not replicated")
    time.sleep(0.3)
    check(replication_statuses(east, other, {"imageDigest": odigest}) == [],
          "a repository the filter does not match: no statuses")
    code = error_code(lambda: replication_statuses(east, rname, {"imageTag": "nope"}))
    check(code.startswith("ImageNotFoundException"), "an unknown tag: ImageNotFoundException")
    code = error_code(lambda: replication_statuses(east, f"{rprefix}/missing", {"imageTag": "v1"}))
    check(code.startswith("RepositoryNotFoundException"), "an unknown repository: RepositoryNotFoundException")

    # A referrer (subject) and an index are replicated too.
    empty = b"{}"
    referrer = json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": "application/vnd.example.sbom",
        "config": {"mediaType": "application/vnd.oci.empty.v1+json",
                   "digest": "sha256:" + hashlib.sha256(empty).hexdigest(), "size": 2},
        "layers": [{"mediaType": "application/vnd.oci.empty.v1+json",
                    "digest": "sha256:" + hashlib.sha256(empty).hexdigest(), "size": 2}],
        "subject": {"mediaType": OCI_MANIFEST, "digest": rdigest, "size": len(image("replicated")[2])},
    }).encode()
    ref_digest = push_raw(PRIMARY_HOST, rname, "sha256:" + hashlib.sha256(referrer).hexdigest(), referrer,
                          OCI_MANIFEST, east_auth, [empty])
    index = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [
        {"mediaType": OCI_MANIFEST, "digest": rdigest, "size": len(image("replicated")[2]),
         "platform": {"architecture": "amd64", "os": "linux"}}]}).encode()
    index_digest = push_raw(PRIMARY_HOST, rname, "multi", index, "application/vnd.oci.image.index.v1+json", east_auth)
    wait_replication(east, rname, {"imageDigest": ref_digest}, "COMPLETE")
    wait_replication(east, rname, {"imageDigest": index_digest}, "COMPLETE")
    refs = west.list_image_referrers(repositoryName=rname, subjectId={"imageDigest": rdigest})["referrers"]
    check([x["digest"] for x in refs] == [ref_digest], "the referrer is replicated (ListImageReferrers at the destination)")
    check(west.describe_images(repositoryName=rname, imageIds=[{"imageTag": "multi"}])["imageDetails"][0]["imageDigest"]
          == index_digest, "the index is replicated with its tag")

    # The fail switch.
    control("POST", "/replication", {"fail": [REGION2]})
    fdigest = push(PRIMARY_HOST, rname, "v2", east_auth, "replication fails")
    statuses = wait_replication(east, rname, {"imageDigest": fdigest}, "FAILED")
    check(statuses[0]["region"] == REGION2 and statuses[0].get("failureCode"),
          f"POST /replication fail: FAILED with a failureCode ({statuses[0].get('failureCode')})")
    check(error_code(lambda: west.describe_images(repositoryName=rname, imageIds=[{"imageTag": "v2"}]))
          .startswith("ImageNotFoundException"), "and nothing copied")
    control("POST", "/replication", {"fail": []})
    snapshot = control("GET", "/replication")
    check(any(c["registryId"] == ACCOUNT and c["region"] == "us-east-1" and c["replicationConfiguration"] == config
              for c in snapshot["configurations"])
          and any(i["imageDigest"] == rdigest and i["repositoryName"] == rname for i in snapshot["images"]),
          "GET /replication lists the configuration and the statuses")

    # Cross-account: the destination's registry permissions policy decides.
    xconfig = {"rules": [{"destinations": [{"region": ACCOUNT2_REGION, "registryId": ACCOUNT2}],
                          "repositoryFilters": [{"filter": rprefix, "filterType": "PREFIX_MATCH"}]}]}
    east.put_replication_configuration(replicationConfiguration=xconfig)
    xdigest = push(PRIMARY_HOST, rname, "v3", east_auth, "cross-account, no policy")
    statuses = wait_replication(east, rname, {"imageDigest": xdigest}, "FAILED")
    check(statuses[0]["registryId"] == ACCOUNT2 and statuses[0]["region"] == ACCOUNT2_REGION
          and error_code(lambda: e2.describe_repositories(repositoryNames=[rname])).startswith("RepositoryNotFoundException"),
          "to another account without its registry permissions policy: FAILED, nothing created there")
    e2.put_registry_policy(policyText=json.dumps({"Version": "2012-10-17", "Statement": [{
        "Sid": "ReplicationFromAccount1", "Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:root"},
        "Action": ["ecr:CreateRepository", "ecr:ReplicateImage"],
        "Resource": f"arn:aws:ecr:{ACCOUNT2_REGION}:{ACCOUNT2}:repository/*"}]}))
    registry_policy = True
    ydigest = push(PRIMARY_HOST, rname, "v4", east_auth, "cross-account, allowed")
    wait_replication(east, rname, {"imageDigest": ydigest}, "COMPLETE")
    check(e2.describe_images(repositoryName=rname, imageIds=[{"imageTag": "v4"}])["imageDetails"][0]["imageDigest"]
          == ydigest, "with ecr:ReplicateImage and ecr:CreateRepository allowed to account 1 there: COMPLETE, in account 2")
    if OUT:
        with open(os.path.join(OUT, "replicated-image"), "w") as f:
            f.write(f"{REGION2_HOST}/{rname}:v1\n")
finally:
    # Registry-wide: leave no configuration (and no fail switch) behind for other tests.
    east.put_replication_configuration(replicationConfiguration={"rules": []})
    requests.post(CONTROL + "/replication", json={"fail": []})
    if registry_policy:
        e2.delete_registry_policy()
check(east.describe_registry()["replicationConfiguration"] == {"rules": []}, "configuration emptied (rules: [])")

# --- ECR Public -----------------------------------------------------------------------

step("(t5) ECR Public API")
pub = boto3.client("ecr-public", region_name="us-east-1")
check(pub.meta.endpoint_url == "https://api.ecr-public.us-east-1.amazonaws.com", f"endpoint {pub.meta.endpoint_url}")
reg = pub.describe_registries()["registries"][0]
check(reg["registryId"] == ACCOUNT and reg["registryUri"] == f"{PUBLIC_HOST}/{ALIAS}"
      and reg["aliases"] == [{"name": ALIAS, "status": "ACTIVE", "primaryRegistryAlias": True,
                              "defaultRegistryAlias": False}], "DescribeRegistries")
pname = f"{PREFIX}-pub"
check(error_code(lambda: pub.create_repository(repositoryName=pname, catalogData={"architectures": ["sparc"]}))
      .startswith("InvalidParameterException"), "catalogData: an unsupported architecture is refused")
check(error_code(lambda: pub.create_repository(repositoryName=pname, catalogData={"description": "x" * 1025}))
      .startswith("InvalidParameterException"), "catalogData: description over 1,024 refused")
created = pub.create_repository(repositoryName=pname, catalogData={
    "description": "smoke", "architectures": ["x86-64", "ARM 64"], "operatingSystems": ["Linux"],
    "aboutText": "# about", "usageText": "docker pull", "logoImageBlob": b"\x89PNG"})
check(created["repository"]["repositoryUri"] == f"{PUBLIC_HOST}/{ALIAS}/{pname}"
      and created["catalogData"]["architectures"] == ["x86-64", "ARM 64"] and "logoUrl" in created["catalogData"],
      "CreateRepository with catalog data")
check(error_code(lambda: pub.create_repository(repositoryName=pname)).startswith("RepositoryAlreadyExistsException"),
      "RepositoryAlreadyExistsException")
pub.put_repository_catalog_data(repositoryName=pname, catalogData={"description": "changed"})
check(pub.get_repository_catalog_data(repositoryName=pname)["catalogData"] == {"description": "changed"},
      "Put/GetRepositoryCatalogData")
check(pub.describe_repositories(repositoryNames=[pname])["repositories"][0]["repositoryName"] == pname,
      "DescribeRepositories")
west_pub = boto3.client("ecr-public", region_name=REGION2)
check(error_code(lambda: west_pub.get_authorization_token()).startswith("UnsupportedCommandException"),
      "GetAuthorizationToken outside us-east-1: UnsupportedCommandException")
control("POST", "/public", {"deny_bearer": True})
code = error_code(lambda: pub.get_authorization_token())
control("POST", "/public", {"deny_bearer": False})
check(code.startswith("AccessDeniedException") and "sts:GetServiceBearerToken" in code,
      "without sts:GetServiceBearerToken: AccessDeniedException")
token = pub.get_authorization_token()["authorizationData"]["authorizationToken"]

step("(t6) public.ecr.aws authentication")
ppath = f"{ALIAS}/{pname}"
r = requests.get(f"https://{PUBLIC_HOST}/v2/{ppath}/tags/list")
check(r.status_code == 401 and r.headers.get("WWW-Authenticate") ==
      'Bearer realm="https://public.ecr.aws/token/",service="public.ecr.aws",scope="aws"',
      "no Authorization: 401 + Bearer challenge")
r = requests.get(f"https://{PUBLIC_HOST}/v2/{ppath}/tags/list", auth=("AWS", base64.b64decode(token).decode().split(":", 1)[1]))
check(r.status_code == 400 and r.json() == {"errors": [{"code": "DENIED", "message": "Your Authorization Token is invalid."}]},
      "Basic: 400 DENIED 'Your Authorization Token is invalid.'")
r = requests.get(f"https://{PUBLIC_HOST}/v2/{ppath}/tags/list", headers={"Authorization": "Bearer nonsense"})
check(r.status_code == 400 and "DENIED" in r.text and "WWW-Authenticate" not in r.headers, "unknown Bearer: 400 DENIED, no challenge")
pdigest = push(PUBLIC_HOST, ppath, "v1", f"Bearer {token}", "public")
ok("push with Bearer <authorizationToken>")
r = requests.post(f"https://{PUBLIC_HOST}/v2/{ALIAS}/{PREFIX}-nope/blobs/uploads/", headers={"Authorization": f"Bearer {token}"})
check(r.status_code == 404 and "NAME_UNKNOWN" in r.text, "push to a repository that does not exist: 404 NAME_UNKNOWN")
layer_digest = json.loads(image("public")[2])["layers"][0]["digest"]
r = requests.post(f"https://{PUBLIC_HOST}/v2/{ppath}/blobs/uploads/?mount={layer_digest}&from={ppath}",
                  headers={"Authorization": f"Bearer {token}"})
check(r.status_code == 202 and r.headers["Location"].startswith(f"https://{PUBLIC_HOST}/v2/{ppath}/"),
      "mount: never 201, a new session (202)")
anon = requests.get(f"https://{PUBLIC_HOST}/token/?scope=repository:{ppath}:pull&service=public.ecr.aws").json()["token"]
r = requests.get(f"https://{PUBLIC_HOST}/v2/{ppath}/manifests/v1", headers={"Authorization": f"Bearer {anon}",
                                                                            "Accept": OCI_MANIFEST})
check(r.status_code == 200 and "sha256:" + hashlib.sha256(r.content).hexdigest() == pdigest, "anonymous token pulls")
r = requests.post(f"https://{PUBLIC_HOST}/v2/{ppath}/blobs/uploads/", headers={"Authorization": f"Bearer {anon}"})
check(r.status_code == 403 and "DENIED" in r.text, "anonymous token cannot push: 403 DENIED")
control("POST", "/public", {"token_lifetime": 1})
short = pub.get_authorization_token()["authorizationData"]["authorizationToken"]
control("POST", "/public", {"token_lifetime": 43200})
time.sleep(1.2)
r = requests.get(f"https://{PUBLIC_HOST}/v2/{ppath}/tags/list", headers={"Authorization": f"Bearer {short}"})
check(r.status_code == 400 and "DENIED" in r.text and "WWW-Authenticate" not in r.headers,
      "expired Bearer (POST /public token_lifetime): 400 DENIED, no challenge")

step("(t7) ECR Public images")
details = pub.describe_images(repositoryName=pname)["imageDetails"]
check(len(details) == 1 and details[0]["imageDigest"] == pdigest and details[0]["imageTags"] == ["v1"]
      and details[0]["imageManifestMediaType"] == OCI_MANIFEST
      and details[0]["artifactMediaType"] == "application/vnd.oci.image.config.v1+json"
      and details[0]["imageSizeInBytes"] > 0, "DescribeImages")
check(pub.describe_images(repositoryName=pname, imageIds=[{"imageTag": "v1"}])["imageDetails"][0]["imageDigest"] == pdigest,
      "DescribeImages by tag")
tags = pub.describe_image_tags(repositoryName=pname)["imageTagDetails"]
check([t["imageTag"] for t in tags] == ["v1"] and tags[0]["imageDetail"]["imageDigest"] == pdigest, "DescribeImageTags")
check(error_code(lambda: pub.delete_repository(repositoryName=pname)).startswith("RepositoryNotEmptyException"),
      "DeleteRepository of a non-empty repository refused")
control("POST", "/deny", {"account": "public", "repository": pname})
check(error_code(lambda: pub.describe_images(repositoryName=pname)).startswith("AccessDeniedException"),
      "deny switch (account public): the API")
r = requests.get(f"https://{PUBLIC_HOST}/v2/{ppath}/tags/list", headers={"Authorization": f"Bearer {token}"})
check(r.status_code == 403 and "DENIED" in r.text, "deny switch (account public): the registry")
pname2 = f"{PREFIX}-pub2"
pub.create_repository(repositoryName=pname2)
push(PUBLIC_HOST, f"{ALIAS}/{pname2}", "latest", f"Bearer {token}", "public-docker-pull")
calls = control("GET", "/public")["calls"]
check(calls.get("CreateRepository", 0) >= 3 and calls.get("GetAuthorizationToken", 0) >= 3, f"GET /public counts calls")
if OUT:
    with open(os.path.join(OUT, "public-image"), "w") as f:
        f.write(f"{PUBLIC_HOST}/{ALIAS}/{pname2}:latest\n")
    with open(os.path.join(OUT, "public-repo"), "w") as f:
        f.write(pname2 + "\n")
print("\nsmoke_targets.py: all checks passed")
