#!/usr/bin/env python3
"""ECR-conformance checks of the stand-in's front, over raw HTTP and boto3, for
tests/standin/smoke.sh (which runs them after `eval "$(scripts/standin env)"`).

  conformance.py NAMESPACE      every repository it makes is NAMESPACE/..., and its
                                access key ids are unique to the run, so it is safe
                                next to other tests; exits 1 on the first failure

Each section prints `== conformance <id>: ...` and `ok: ...` per check; README.md's
conformance table names them ("conformance `<id>`").
"""
from __future__ import annotations

import base64
import hashlib
import http.client
import json
import os
import random
import ssl
import sys
import time
import urllib.request
from urllib.parse import urlsplit

import boto3
from botocore.exceptions import ClientError

REG = os.environ["STANDIN_REGISTRY_HOST"]
CONTROL = os.environ["STANDIN_FAULTS_URL"]
S3_HOST = os.environ.get("STANDIN_S3_HOST", "")
CTX = ssl.create_default_context(cafile=os.environ["STANDIN_CA_CERT"])
V2 = "application/vnd.docker.distribution.manifest.v2+json"
OCI = "application/vnd.oci.image.manifest.v1+json"
RUN = f"{random.randrange(10**12):012d}"


class Failed(Exception):
    pass


def check(condition, what: str, detail=""):
    if not condition:
        raise Failed(f"{what}{': ' + str(detail) if detail != '' else ''}")


def ok(what: str):
    print(f"   ok: {what}", flush=True)


# --- clients -------------------------------------------------------------------------

def ecr(access_key: str):
    return boto3.client("ecr", aws_access_key_id=access_key, aws_secret_access_key="standin")


def control(method: str, path: str, body=None):
    data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    req = urllib.request.Request(CONTROL + path, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


class Response:
    def __init__(self, resp: http.client.HTTPResponse):
        self.status = resp.status
        self.headers = {k.lower(): v for k, v in resp.getheaders()}
        self.body = resp.read()

    def json(self):
        return json.loads(self.body or b"null")

    def code(self):
        try:
            return self.json()["errors"][0]["code"]
        except (ValueError, KeyError, IndexError, TypeError):
            return None

    def __repr__(self):
        return f"{self.status} {self.headers} {self.body[:300]!r}"


def request(method: str, url: str, password: str | None = None, body: bytes | None = None,
            headers: dict | None = None) -> Response:
    """One request to a front host (absolute URL, or a path on the registry host)."""
    if not url.startswith("https://"):
        url = f"https://{REG}{url}"
    parts = urlsplit(url)
    conn = http.client.HTTPSConnection(parts.hostname, context=CTX, timeout=60)
    headers = dict(headers or {})
    if password is not None:
        headers["Authorization"] = "Basic " + base64.b64encode(f"AWS:{password}".encode()).decode()
    try:
        conn.request(method, parts.path + (f"?{parts.query}" if parts.query else ""), body=body,
                     headers=headers)
        return Response(conn.getresponse())
    finally:
        conn.close()


def token(client) -> tuple[str, float]:
    data = client.get_authorization_token()["authorizationData"][0]
    user, password = base64.b64decode(data["authorizationToken"]).decode().split(":", 1)
    check(user == "AWS", "token user", user)
    return password, data["expiresAt"].timestamp()


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def start_upload(repo: str, password: str, query: str = "") -> Response:
    return request("POST", f"/v2/{repo}/blobs/uploads/{query}", password)


def push_blob(repo: str, password: str, data: bytes) -> str:
    """POST + one PATCH + PUT ?digest=, as docker does."""
    start = start_upload(repo, password)
    check(start.status == 202, "POST blob upload", start)
    patch = request("PATCH", start.headers["location"], password, data,
                    {"Content-Type": "application/octet-stream"})
    check(patch.status in (201, 202), "PATCH", patch)
    digest = sha(data)
    sep = "&" if "?" in patch.headers["location"] else "?"
    done = request("PUT", f"{patch.headers['location']}{sep}digest={digest}", password)
    check(done.status == 201, "PUT ?digest=", done)
    return digest


def image_manifest(repo: str, password: str, content: bytes, media_type: str = V2, layers: int = 1,
                   extra: dict | None = None) -> bytes:
    config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []},
                         "config": {}, "x": content.decode(errors="replace")}).encode()
    config_digest = push_blob(repo, password, config)
    layer_digest = push_blob(repo, password, content)
    layer = {"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip" if media_type == V2
             else "application/vnd.oci.image.layer.v1.tar+gzip", "size": len(content), "digest": layer_digest}
    manifest = {"schemaVersion": 2, "mediaType": media_type,
                "config": {"mediaType": "application/vnd.docker.container.image.v1+json" if media_type == V2
                           else "application/vnd.oci.image.config.v1+json",
                           "size": len(config), "digest": config_digest},
                "layers": [layer] * layers}
    manifest.update(extra or {})
    return json.dumps(manifest).encode()


def put_manifest(repo: str, reference: str, password: str, manifest: bytes, media_type: str = V2) -> Response:
    return request("PUT", f"/v2/{repo}/manifests/{reference}", password, manifest,
                   {"Content-Type": media_type})


def stats(repo: str) -> dict:
    status, payload = control("GET", f"/stats?repository={repo}")
    check(status == 200, "GET /stats", payload)
    return payload


# --- OCI 1.1 referrers, managed signing, KMS ------------------------------------------

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
EMPTY = ("application/vnd.oci.empty.v1+json", "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a")
NOTARY = "application/vnd.cncf.notary.signature"
PROFILE = "arn:aws:signer:us-east-1:123456789012:/signing-profiles/standin_smoke"


def artifact(repo: str, password: str, subject: dict | None, artifact_type: str, layers: list[tuple[str, bytes]],
             annotations: dict | None = None) -> bytes:
    """An OCI 1.1 artifact manifest: empty config, the given layers, subject."""
    check(push_blob(repo, password, b"{}") == EMPTY[1], "the empty config blob's digest")
    manifest = {"schemaVersion": 2, "mediaType": OCI, "artifactType": artifact_type,
                "config": {"mediaType": EMPTY[0], "digest": EMPTY[1], "size": 2},
                "layers": [{"mediaType": t, "digest": push_blob(repo, password, data), "size": len(data)}
                           for t, data in layers]}
    if subject:
        manifest["subject"] = subject
    if annotations:
        manifest["annotations"] = annotations
    return json.dumps(manifest).encode()


def descriptor(body: bytes, media_type: str) -> dict:
    return {"mediaType": media_type, "digest": sha(body), "size": len(body)}


def referrers_api(repo: str, password: str, digest: str, query: str = "") -> Response:
    return request("GET", f"/v2/{repo}/referrers/{digest}{query}", password)


def referrers_checks(api, create, password: str, repo: str, manifest: bytes) -> None:
    subject = descriptor(manifest, V2)
    statement = json.dumps({"_type": "https://in-toto.io/Statement/v1", "subject": [],
                            "predicateType": "https://slsa.dev/provenance/v1", "predicate": {}}).encode()
    provenance = artifact(repo, password, subject, "application/vnd.in-toto+json",
                          [("application/vnd.in-toto+json", statement),
                           ("application/vnd.dsse.envelope.v1+json", b'{"payloadType":"x","payload":"","signatures":[]}'),
                           ("application/vnd.dev.cosign.simplesigning.v1+json", b'{"critical":{}}')],
                          {"org.opencontainers.image.created": "2026-01-01T00:00:00Z"})
    put = put_manifest(repo, sha(provenance), password, provenance, OCI)
    check(put.status == 201 and put.headers.get("oci-subject") == sha(manifest), "artifact PUT: 201 + OCI-Subject", put)
    got = request("GET", f"/v2/{repo}/manifests/{sha(provenance)}", password, headers={"Accept": OCI})
    check(got.status == 200 and got.body == provenance, "the artifact reads back byte for byte", got)
    sbom = image_manifest(repo, password, b"sbom " + RUN.encode(), OCI, extra={"subject": subject})
    check(put_manifest(repo, sha(sbom), password, sbom, OCI).status == 201, "a referrer without artifactType")
    ok("an OCI 1.1 artifact (empty config, in-toto / DSSE / simplesigning layers, subject) is accepted, "
       "with OCI-Subject; it reads back unchanged")

    listed = referrers_api(repo, password, sha(manifest))
    check(listed.status == 200 and listed.headers.get("content-type") == OCI_INDEX, "referrers API", listed)
    index = listed.json()
    want = sorted([dict(descriptor(provenance, OCI), artifactType="application/vnd.in-toto+json",
                        annotations={"org.opencontainers.image.created": "2026-01-01T00:00:00Z"}),
                   dict(descriptor(sbom, OCI), artifactType="application/vnd.oci.image.config.v1+json")],
                  key=lambda d: d["digest"])
    check(index == {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": want}, "the referrers index", index)
    check("oci-filters-applied" not in listed.headers, "no filter, no OCI-Filters-Applied", listed.headers)
    filtered = referrers_api(repo, password, sha(manifest), "?artifactType=application%2Fvnd.in-toto%2Bjson")
    check(filtered.headers.get("oci-filters-applied") == "artifactType"
          and [d["digest"] for d in filtered.json()["manifests"]] == [sha(provenance)], "artifactType filter", filtered)
    none = referrers_api(repo, password, sha(b"no referrers " + RUN.encode()))
    check(none.status == 200 and none.json()["manifests"] == [], "a digest without referrers: empty index", none)
    check(referrers_api(repo, password, "sha256:nothex").status == 400, "an invalid digest: 400")
    check(referrers_api(f"{repo}-missing", password, sha(manifest)).code() == "NAME_UNKNOWN", "missing repository")
    ok("GET /v2/<name>/referrers/<digest>: OCI index of (mediaType, digest, size, artifactType, annotations); "
       "?artifactType= filter with OCI-Filters-Applied; empty index (200) when none")

    refs = api.list_image_referrers(repositoryName=repo, subjectId={"imageDigest": sha(manifest)})["referrers"]
    check([{k: v for k, v in r.items() if k != "artifactStatus"} for r in refs] == want
          and all(r["artifactStatus"] == "ACTIVE" for r in refs), "ListImageReferrers agrees", refs)
    typed = api.list_image_referrers(repositoryName=repo, subjectId={"imageDigest": sha(manifest)},
                                     filter={"artifactTypes": ["application/vnd.in-toto+json"]})["referrers"]
    check([r["digest"] for r in typed] == [sha(provenance)], "ListImageReferrers artifactTypes filter", typed)
    details = {d["imageDigest"]: d for d in api.describe_images(repositoryName=repo)["imageDetails"]}
    art = details[sha(provenance)]
    check(art.get("subjectManifestDigest") == sha(manifest) and art.get("artifactMediaType") == "application/vnd.in-toto+json",
          "DescribeImages of a referrer", art)
    img = details[sha(manifest)]
    check("subjectManifestDigest" not in img and img.get("artifactMediaType") == "application/vnd.docker.container.image.v1+json"
          and img.get("imageStatus") == "ACTIVE", "DescribeImages of an image", img)
    ok("ListImageReferrers lists the same descriptors; DescribeImages has subjectManifestDigest, "
       "artifactMediaType (artifactType, else the config's type) and imageStatus")


def refused_referrer_checks(create, password: str) -> None:
    repo = create("refused")
    image = image_manifest(repo, password, b"refused " + RUN.encode(), OCI)
    check(put_manifest(repo, "v1", password, image, OCI).status == 201, "the image")
    index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        dict(descriptor(image, OCI), platform={"architecture": "amd64", "os": "linux"})]}).encode()
    check(put_manifest(repo, "multi", password, index, OCI_INDEX).status == 201, "the index")
    on_index = artifact(repo, password, descriptor(index, OCI_INDEX), "application/spdx+json",
                        [("application/spdx+json", b'{"spdxVersion":"SPDX-2.3"}')])
    refused = put_manifest(repo, sha(on_index), password, on_index, OCI)
    check(refused.status == 405 and refused.code() == "UNSUPPORTED", "a referrer of an index: 405 UNSUPPORTED", refused)
    lying = json.loads(on_index)
    lying["subject"]["mediaType"] = OCI
    lying = json.dumps(lying).encode()
    check(put_manifest(repo, sha(lying), password, lying, OCI).status == 405, "subject names a stored index")
    on_image = artifact(repo, password, descriptor(image, OCI), "application/spdx+json",
                        [("application/spdx+json", b'{"spdxVersion":"SPDX-2.3"}')])
    check(put_manifest(repo, sha(on_image), password, on_image, OCI).status == 201, "a referrer of an image manifest")
    ok("a referrer whose subject is an image index -> 405 UNSUPPORTED (aws/containers-roadmap#2783)")

    check(control("POST", "/referrers", {"repository": repo, "refuse": "yes"})[0] == 400, "POST /referrers validates")
    check(control("POST", "/referrers", {"repository": repo, "refuse": True}) ==
          (201, {"repository": repo, "refuse": True}), "POST /referrers")
    again = artifact(repo, password, descriptor(image, OCI), "application/vnd.in-toto+json",
                     [("application/vnd.in-toto+json", b'{"_type":"https://in-toto.io/Statement/v1"}')])
    refused = put_manifest(repo, sha(again), password, again, OCI)
    check(refused.status == 405 and refused.json() == {"errors": [{"code": "UNSUPPORTED", "message":
          "Invalid parameter at 'ImageManifest' failed to satisfy constraint: 'Invalid JSON syntax'"}]},
          "refuse switch: a referrer of an image -> 405", refused)
    plain = image_manifest(repo, password, b"plain " + RUN.encode(), OCI)
    check(put_manifest(repo, "v2", password, plain, OCI).status == 201, "refuse switch: manifests without subject pass")
    check(stats(repo)["referrer_refusals"] == 3, "referrer_refusals", stats(repo))
    check(control("GET", f"/referrers?repository={repo}")[1]["refuse"] is True, "GET /referrers")
    control("POST", "/referrers", {"repository": repo, "refuse": False})
    check(put_manifest(repo, sha(again), password, again, OCI).status == 201, "refuse off: accepted again")
    ok("POST /referrers refuse: every manifest PUT with a subject -> 405 UNSUPPORTED (others pass)")


def api_error(call) -> tuple[str, str]:
    try:
        call()
    except ClientError as exc:
        return exc.response["Error"]["Code"], exc.response["Error"].get("Message", "")
    raise Failed("the call succeeded")


def signing_statuses(api, repo: str, digest: str) -> list[dict]:
    return api.describe_image_signing_status(repositoryName=repo, imageId={"imageDigest": digest})["signingStatuses"]


def signing_checks(api, create, password: str, key: str) -> None:
    code, _ = api_error(lambda: api.get_signing_configuration())
    check(code == "SigningConfigurationNotFoundException", "GetSigningConfiguration before any", code)
    check(api_error(lambda: api.delete_signing_configuration())[0] == "SigningConfigurationNotFoundException",
          "DeleteSigningConfiguration before any")
    bad = [{"rules": [{"signingProfileArn": PROFILE}] * 11},
           {"rules": [{"signingProfileArn": "arn:aws:signer:us-east-1:123456789012:signing-profiles/x"}]},
           {"rules": [{"signingProfileArn": PROFILE, "repositoryFilters": [{"filter": "Bad/*", "filterType": "WILDCARD_MATCH"}]}]},
           {"rules": [{"signingProfileArn": PROFILE, "repositoryFilters": [{"filter": "a*", "filterType": "PREFIX_MATCH"}]}]}]
    for config in bad:
        try:
            api.put_signing_configuration(signingConfiguration=config)
            raise Failed(f"PutSigningConfiguration accepted {config}")
        except ClientError as exc:
            check(exc.response["Error"]["Code"] == "InvalidParameterException", "refused config", exc)
        except Exception as exc:  # noqa: BLE001 - botocore's own checks (pattern) count too
            if isinstance(exc, Failed):
                raise
    other = f"{PROFILE}_other"
    config = {"rules": [{"signingProfileArn": PROFILE, "repositoryFilters": [
        {"filter": f"{create.ns}/signed*", "filterType": "WILDCARD_MATCH"}]},
        {"signingProfileArn": other, "repositoryFilters": [{"filter": f"{create.ns}/signed-twice", "filterType": "WILDCARD_MATCH"}]}]}
    check(api.put_signing_configuration(signingConfiguration=config)["signingConfiguration"] == config, "Put answer")
    got = api.get_signing_configuration()
    check(got["signingConfiguration"] == config and got["registryId"] == "123456789012", "GetSigningConfiguration", got)
    check(api_error(lambda: ecr(f"AKIASIGNOTHER{RUN}").get_signing_configuration())[0] ==
          "SigningConfigurationNotFoundException", "the configuration is the access key's own")
    ok("Put/Get/DeleteSigningConfiguration: model constraints (10 rules, ARN and filter patterns, "
       "WILDCARD_MATCH); SigningConfigurationNotFoundException when none")

    plain = create("unsigned")
    image = image_manifest(plain, password, b"unsigned " + RUN.encode())
    check(put_manifest(plain, "v1", password, image).status == 201, "push to an uncovered repository")
    check(signing_statuses(api, plain, sha(image)) == [], "no rule, no status")
    code, _ = api_error(lambda: signing_statuses(api, plain, sha(b"missing")))
    check(code == "ImageNotFoundException", "unknown image", code)

    signed = create("signed")
    check(control("POST", "/signing", {"repository": signed, "status": "COMPLETE", "seconds": 1})[0] == 201, "POST /signing")
    image = image_manifest(signed, password, b"signed " + RUN.encode())
    check(put_manifest(signed, "v1", password, image).status == 201, "push to a covered repository")
    first = signing_statuses(api, signed, sha(image))
    check(first == [{"signingProfileArn": PROFILE, "status": "IN_PROGRESS"}], "IN_PROGRESS at first", first)
    check(api.describe_image_signing_status(repositoryName=signed, imageId={"imageTag": "v1"})["imageId"] ==
          {"imageDigest": sha(image), "imageTag": "v1"}, "by tag")
    deadline = time.time() + 10
    while signing_statuses(api, signed, sha(image))[0]["status"] != "COMPLETE":
        check(time.time() < deadline, "COMPLETE within 10 s")
        time.sleep(0.3)
    refs = api.list_image_referrers(repositoryName=signed, subjectId={"imageDigest": sha(image)})["referrers"]
    check(len(refs) == 1 and refs[0]["artifactType"] == NOTARY, "the signature is a referrer", refs)
    index = referrers_api(signed, password, sha(image)).json()["manifests"]
    check([d["digest"] for d in index] == [refs[0]["digest"]], "the referrers API shows it", index)
    sig = json.loads(request("GET", f"/v2/{signed}/manifests/{refs[0]['digest']}", password, headers={"Accept": OCI}).body)
    check(sig["subject"]["digest"] == sha(image) and sig["layers"][0]["mediaType"] == "application/jose+json"
          and "io.cncf.notary.x509chain.thumbprint#S256" in sig["annotations"], "a Notary Project signature", sig)
    ok("a push to a covered repository: IN_PROGRESS, then COMPLETE, with a Notary Project signature referrer "
       "(ListImageReferrers, referrers API); an uncovered repository: signingStatuses []")

    twice = create("signed-twice")
    control("POST", "/signing", {"repository": twice, "status": "FAILED", "seconds": 0,
                                 "failure_code": "AccessDeniedException", "failure_reason": "not allowed"})
    image = image_manifest(twice, password, b"twice " + RUN.encode())
    check(put_manifest(twice, "v1", password, image).status == 201, "push to a repository two rules cover")
    statuses = signing_statuses(api, twice, sha(image))
    check(statuses == [{"signingProfileArn": p, "status": "FAILED", "failureCode": "AccessDeniedException",
                        "failureReason": "not allowed"} for p in (PROFILE, other)], "FAILED, one per profile", statuses)
    check(api.list_image_referrers(repositoryName=twice, subjectId={"imageDigest": sha(image)})["referrers"] == [],
          "no signature when FAILED")
    forever = create("signed-forever")
    control("POST", "/signing", {"repository": forever, "status": "IN_PROGRESS"})
    image = image_manifest(forever, password, b"forever " + RUN.encode())
    check(put_manifest(forever, "v1", password, image).status == 201, "push")
    time.sleep(1.2)
    check([s["status"] for s in signing_statuses(api, forever, sha(image))] == ["IN_PROGRESS"], "IN_PROGRESS for good")
    for body in ({"repository": forever, "status": "DONE"}, {"repository": forever, "status": "IN_PROGRESS", "seconds": 1},
                 {"repository": forever, "status": "COMPLETE", "failure_code": "x"}, {"status": "COMPLETE"}):
        check(control("POST", "/signing", body)[0] == 400, f"POST /signing {body} refused")
    deleted = api.delete_signing_configuration()
    check(deleted["signingConfiguration"] == config, "DeleteSigningConfiguration returns it", deleted)
    check(api_error(lambda: api.get_signing_configuration())[0] == "SigningConfigurationNotFoundException", "deleted")
    ok("scripts: FAILED with code and reason (one status per profile), IN_PROGRESS for good; "
       "DeleteSigningConfiguration returns the configuration")


def kms_checks() -> None:
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    kms = boto3.client("kms", aws_access_key_id=f"AKIAKMS{RUN}", aws_secret_access_key="standin")
    check(kms.meta.endpoint_url == f"https://{os.environ['STANDIN_KMS_HOST']}", "KMS endpoint", kms.meta.endpoint_url)
    key_id = kms.create_key(KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")["KeyMetadata"]["KeyId"]
    alias = f"alias/smoke-{RUN}"
    kms.create_alias(AliasName=alias, TargetKeyId=key_id)
    meta = kms.describe_key(KeyId=alias)["KeyMetadata"]
    check(meta["KeyId"] == key_id and meta["SigningAlgorithms"] == ["ECDSA_SHA_256"], "DescribeKey by alias", meta)
    public = serialization.load_der_public_key(kms.get_public_key(KeyId=alias)["PublicKey"])
    message = f"payload {RUN}".encode()
    digest = hashlib.sha256(message).digest()
    signature = kms.sign(KeyId=alias, Message=digest, MessageType="DIGEST", SigningAlgorithm="ECDSA_SHA_256")["Signature"]
    public.verify(signature, message, ec.ECDSA(hashes.SHA256()))
    ok("https://kms.us-east-1.amazonaws.com (moto): ECC_NIST_P256 SIGN_VERIFY key, alias, Sign with "
       "MessageType DIGEST verifies with GetPublicKey's key")

    status, rule = control("POST", "/kms", {"key": alias, "deny": ["Sign"]})
    check(status == 201 and rule == {"key": alias, "key_id": key_id, "deny": ["Sign"]}, "POST /kms", rule)
    check(control("POST", "/kms", {"key": "alias/none-such", "deny": ["Sign"]})[0] == 400, "unknown key")
    check(control("POST", "/kms", {"key": alias, "deny": ["Encrypt"]})[0] == 400, "unknown operation")
    url = f"https://{os.environ['STANDIN_KMS_HOST']}/"
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    body = json.dumps({"KeyId": f"arn:aws:kms:us-east-1:123456789012:key/{key_id}",
                       "Message": base64.b64encode(digest).decode(), "MessageType": "DIGEST",
                       "SigningAlgorithm": "ECDSA_SHA_256"})
    raw = AWSRequest(method="POST", url=url, data=body, headers={
        "Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": "TrentService.Sign"})
    SigV4Auth(kms._request_signer._credentials, "kms", "us-east-1").add_auth(raw)
    denied = request("POST", url, body=body.encode(), headers=dict(raw.headers))
    check(denied.status == 400 and set(denied.json()) == {"__type", "Message"}
          and denied.json()["__type"] == "AccessDeniedException"
          and f"is not authorized to perform: kms:Sign on resource: arn:aws:kms:us-east-1:123456789012:key/{key_id}"
          in denied.json()["Message"], "Sign denied", denied)
    check(api_error(lambda: kms.sign(KeyId=alias, Message=digest, MessageType="DIGEST",
                                     SigningAlgorithm="ECDSA_SHA_256"))[0] == "AccessDeniedException", "by alias too")
    kms.get_public_key(KeyId=alias)
    control("POST", "/kms", {"key": key_id, "deny": []})
    kms.sign(KeyId=alias, Message=digest, MessageType="DIGEST", SigningAlgorithm="ECDSA_SHA_256")
    ok("POST /kms deny Sign: 400 AccessDeniedException {__type, Message} for that key (by id, ARN or "
       "alias); GetPublicKey still works; deny [] allows again")


def concurrent_link_checks(create, password: str, rounds: int = 40, pushers: int = 8) -> None:
    """Pushes of one blob to one repository that race manifest PUTs naming it, as matrix
    legs do with the empty config blob: ECR accepts every PUT. The reference registry
    rewrites the blob's link in place, so without the front's link lock a PUT that reads
    it meanwhile was refused 400 DIGEST_INVALID (the CI failure of
    shared_build::two_legs_at_once_make_one_index_and_leave_nothing_behind)."""
    from concurrent.futures import ThreadPoolExecutor
    repo = create("links")

    def push(n: int) -> Response:
        layer = f"link race {RUN} {n}".encode()
        manifest = {"schemaVersion": 2, "mediaType": OCI, "artifactType": "application/vnd.example.record",
                    "config": {"mediaType": EMPTY[0], "digest": push_blob(repo, password, b"{}"), "size": 2},
                    "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                                "digest": push_blob(repo, password, layer), "size": len(layer)}]}
        return put_manifest(repo, f"leg-{n}", password, json.dumps(manifest).encode(), OCI)

    with ThreadPoolExecutor(pushers) as pool:
        answers = list(pool.map(push, range(rounds * pushers)))
    refused = [a for a in answers if a.status != 201]
    check(not refused, f"{len(refused)} of {len(answers)} manifest PUTs racing pushes of their blob were refused",
          refused[:1])
    ok(f"{len(answers)} manifest PUTs, {pushers} at a time, each racing pushes of the blob it names: all 201")


# --- the checks ----------------------------------------------------------------------

def main(ns: str) -> None:
    key = f"AKIASMOKE{RUN}"
    api = ecr(key)

    def create(name: str, **kw) -> str:
        api.create_repository(repositoryName=f"{ns}/{name}", **kw)
        return f"{ns}/{name}"
    create.ns = ns

    print("\n== conformance control: the control API validates its bodies")
    for path, body in (("/tokens", {"access_key": key, "lifetime": 0}),
                       ("/tokens", {"access_key": key, "lifetime": 43201}),
                       ("/tokens", {"access_key": "", "lifetime": 5}),
                       ("/tokens", {"access_key": key, "lifetime": 5, "extra": 1}),
                       ("/visibility", {"repository": f"{ns}/x", "seconds": -1}),
                       ("/visibility", {"repository": "UPPER", "seconds": 1}),
                       ("/mode", {"repository": f"{ns}/x", "mode": "lax"}),
                       ("/mode", {"repository": f"{ns}/x", "mode": "reference", "patches": "keep"}),
                       ("/mode", {"repository": f"{ns}/x"}),
                       ("/reset", {"everything": True}),
                       ("/stats", {"repository": f"{ns}/x"}),
                       ("/referrers", {"repository": f"{ns}/x"}),
                       ("/referrers", {"repository": f"{ns}/x", "refuse": 1}),
                       ("/signing", {"repository": f"{ns}/x", "status": "DONE"}),
                       ("/signing", {"repository": f"{ns}/x", "status": "COMPLETE", "seconds": 3601}),
                       ("/signing", {"repository": f"{ns}/x", "status": "COMPLETE", "digest": "sha256:x"}),
                       ("/kms", {"key": "alias/x"}),
                       ("/kms", {"key": "alias/x", "deny": "Sign"})):
        status, payload = control("POST", path, body)
        check(status in (400, 405), f"POST {path} {body} was accepted", (status, payload))
    status, payload = control("POST", "/tokens", b"not json")
    check(status == 400 and "error" in payload, "POST /tokens with a non-JSON body", (status, payload))
    check(control("GET", "/stats")[0] == 400, "GET /stats without a repository")
    ok("/tokens, /visibility, /mode, /reset, /stats, /referrers, /signing, /kms refuse bad bodies with 400 {\"error\": ...}")

    print("\n== conformance tokens: registry tokens (GetAuthorizationToken)")
    p1, expires = token(api)
    p2, _ = token(api)
    check(p1 != p2, "two GetAuthorizationToken calls gave the same password")
    check(11.9 * 3600 < expires - time.time() <= 12 * 3600 + 5, "default lifetime is 12 h", expires - time.time())
    check(request("GET", "/v2/", p1).status == 200, "/v2/ with an issued password")
    check(request("GET", "/v2/", "123456789012-auth-token").status == 200, "/v2/ with the fixed password")
    check(request("GET", "/v2/", "not-a-token").status == 401, "/v2/ with an unknown password")
    ok("fresh password per call, expiresAt now + 12 h, issued and fixed passwords accepted, unknown ones 401")
    short_key = f"AKIASHORT{RUN}"
    status, payload = control("POST", "/tokens", {"access_key": short_key, "lifetime": 1})
    check(status == 201 and payload["lifetime"] == 1, "POST /tokens", (status, payload))
    short, short_expires = token(ecr(short_key))
    check(short_expires - time.time() <= 1.5, "a 1 s lifetime", short_expires - time.time())
    check(token(api)[1] - time.time() > 11 * 3600, "the lifetime leaked to another access key")
    repo_tok = create("tokens")
    time.sleep(1.3)
    denied = request("GET", f"/v2/{repo_tok}/tags/list", short)
    check(denied.status == 403 and denied.json() == {"errors": [{"code": "DENIED", "message":
          "Your authorization token has expired. Reauthenticate and try again."}]}, "expired token", denied)
    check(stats(repo_tok)["expired_token_refusals"] == 1, "expired_token_refusals", stats(repo_tok))
    status, info = control("GET", f"/tokens?access_key={short_key}")
    check(status == 200 and info["issued"] == 1, "GET /tokens", info)
    ok("POST /tokens lifetime 1 s: that key's token expires -> 403 DENIED (other keys keep 12 h)")

    print("\n== conformance uploads: blob uploads")
    repo = create("uploads")
    password = p1
    start = start_upload(repo, password)
    check(start.status == 202 and start.headers["location"].startswith(f"https://{REG}/v2/{repo}/blobs/uploads/"),
          "upload Location is absolute", start)
    chunks = [os.urandom(3000), os.urandom(2000)]
    first = request("PATCH", start.headers["location"], password, chunks[0],
                    {"Content-Type": "application/octet-stream", "Content-Range": f"0-{len(chunks[0]) - 1}"})
    check(first.status == 201, "first PATCH answers 201", first)
    check(first.headers.get("range") == f"0-{len(chunks[0]) - 1}" and first.headers.get("docker-upload-uuid")
          and first.headers["location"].startswith("https://"), "first PATCH headers", first.headers)
    second = request("PATCH", first.headers["location"], password, chunks[1],
                     {"Content-Type": "application/octet-stream",
                      "Content-Range": f"{len(chunks[0])}-{len(chunks[0]) + len(chunks[1]) - 1}"})
    check(second.status == 201 and second.headers.get("range") == first.headers["range"]
          and second.headers["location"] == first.headers["location"], "second PATCH: same Range and Location", second)
    done = request("PUT", f"{second.headers['location']}&digest={sha(b''.join(chunks))}", password)
    check(done.status == 400 and done.code() == "DIGEST_INVALID", "PUT after a dropped PATCH", done)
    s = stats(repo)
    check(s["patches"] == 2 and s["dropped_patches"] == 1 and s["max_patches_per_session"] == 2, "stats", s)
    ok("PATCH 201 with Location/Range/Docker-Upload-UUID; a 2nd PATCH is dropped (Range stays), PUT ?digest= "
       "fails DIGEST_INVALID")

    start = start_upload(repo, password)
    blob = os.urandom(5000)
    mono = request("PUT", f"{start.headers['location']}&digest={sha(blob)}", password, blob,
                   {"Content-Type": "application/octet-stream"})
    check(mono.status == 201 and "location" in mono.headers, "monolithic PUT", mono)
    check(request("HEAD", f"/v2/{repo}/blobs/{sha(blob)}", password).status == 200, "monolithic blob readable")
    check(stats(repo)["monolithic_puts"] == 1, "monolithic_puts", stats(repo))
    ok("monolithic upload (POST, PUT ?digest= with the body) accepted")

    keep = create("keep")
    check(control("POST", "/mode", {"repository": keep, "mode": "ecr", "patches": "keep"})[0] == 201, "POST /mode keep")
    start = start_upload(keep, password)
    first = request("PATCH", start.headers["location"], password, chunks[0], {"Content-Type": "application/octet-stream"})
    second = request("PATCH", first.headers["location"], password, chunks[1], {"Content-Type": "application/octet-stream"})
    check(second.status == 201 and second.headers["range"] == first.headers["range"], "keep: stale Range", second)
    done = request("PUT", f"{second.headers['location']}&digest={sha(b''.join(chunks))}", password)
    check(done.status == 201, "keep: the PUT completes", done)
    ok("mode patches=keep: a 2nd PATCH is stored but Range stays stale; the PUT completes")

    print("\n== conformance manifests: manifest PUT")
    content = f"layer {RUN}".encode()
    manifest = image_manifest(repo, password, content)
    put = put_manifest(repo, "v1", password, manifest)
    check(put.status == 201 and "location" not in put.headers and put.headers.get("docker-content-digest") == sha(manifest),
          "manifest PUT: 201, Docker-Content-Digest, no Location", put)
    big = put_manifest(repo, "big", password, manifest[:-1] + b', "pad": "' + b"x" * (4 * 1024 * 1024) + b'"}')
    check(big.status == 405 and big.code() == "UNSUPPORTED", "a manifest over 4 MiB", big)
    many = image_manifest(repo, password, content, layers=501)
    check(put_manifest(repo, "many", password, many).code() == "UNSUPPORTED", "501 layers")
    check(put_manifest(repo, "five-hundred", password, image_manifest(repo, password, content, layers=500)).status == 201,
          "500 layers")
    ctype = put_manifest(repo, "param", password, manifest, V2 + "; charset=utf-8")
    check(ctype.status == 405 and ctype.code() == "UNSUPPORTED", "Content-Type with parameters", ctype)
    art = image_manifest(repo, password, content, OCI, extra={"artifactType": "application/vnd.dev.sigstore.bundle+json;version=0.2"})
    check(put_manifest(repo, "art", password, art, OCI).status == 405, "artifactType with parameters")
    ok("no Location; > 4 MiB, > 500 layers (500 pass), ';' in Content-Type or a media type -> 405 UNSUPPORTED")

    frozen = create("frozen", imageTagMutability="IMMUTABLE")
    frozen_manifest = image_manifest(frozen, password, content)
    check(put_manifest(frozen, "v1", password, frozen_manifest).status == 201, "first PUT to an immutable tag")
    again = put_manifest(frozen, "v1", password, frozen_manifest)
    check(again.status == 400 and again.code() == "TAG_INVALID", "identical re-put to an immutable tag", again)
    check(put_manifest(frozen, sha(frozen_manifest), password, frozen_manifest).status == 201, "re-put by digest")
    ok("IMMUTABLE: identical re-put of a tag -> 400 TAG_INVALID (by digest still fine)")

    excl = create("excl", imageTagMutability="IMMUTABLE_WITH_EXCLUSION",
                  imageTagMutabilityExclusionFilters=[{"filterType": "WILDCARD", "filter": "dev-*"}])
    m1 = image_manifest(excl, password, b"one " + content)
    m2 = image_manifest(excl, password, b"two " + content)
    for tag in ("dev-1", "v1"):
        check(put_manifest(excl, tag, password, m1).status == 201, f"first PUT of {tag}")
    check(put_manifest(excl, "dev-1", password, m2).status == 201, "IMMUTABLE_WITH_EXCLUSION: excluded tag moves")
    check(put_manifest(excl, "v1", password, m2).code() == "TAG_INVALID", "IMMUTABLE_WITH_EXCLUSION: other tags stay")
    moved = api.describe_images(repositoryName=excl, imageIds=[{"imageTag": "dev-1"}])["imageDetails"][0]
    check(moved["imageDigest"] == sha(m2), "moto moved dev-1", moved)
    mut = create("mutexcl", imageTagMutability="MUTABLE_WITH_EXCLUSION",
                 imageTagMutabilityExclusionFilters=[{"filterType": "WILDCARD", "filter": "release-*"}])
    m1 = image_manifest(mut, password, b"one " + content)
    m2 = image_manifest(mut, password, b"two " + content)
    for tag in ("release-1", "latest"):
        check(put_manifest(mut, tag, password, m1).status == 201, f"first PUT of {tag}")
    check(put_manifest(mut, "latest", password, m2).status == 201, "MUTABLE_WITH_EXCLUSION: latest moves")
    check(put_manifest(mut, "release-1", password, m2).code() == "TAG_INVALID", "MUTABLE_WITH_EXCLUSION: release-* stays")
    ok("*_WITH_EXCLUSION: a tag an exclusion filter matches has the opposite mutability")

    print("\n== conformance links: pushes of one blob racing manifest PUTs")
    concurrent_link_checks(create, password)

    print("\n== conformance redirect: blob GET")
    config_digest = json.loads(manifest)["config"]["digest"]
    got = request("GET", f"/v2/{repo}/blobs/{config_digest}", password)
    location = got.headers.get("location", "")
    check(got.status == 307 and location.startswith(f"https://{S3_HOST}/") and "X-Amz-Signature=" in location,
          "blob GET -> 307 to S3", got)
    with_auth = request("GET", location, password)
    check(with_auth.status == 400 and b"InvalidArgument" in with_auth.body, "S3 refuses an Authorization header", with_auth)
    s3 = request("GET", location)
    check(s3.status == 200 and sha(s3.body) == config_digest, "S3 serves the blob", s3)
    check(request("GET", location, headers={"Range": "bytes=0-9"}).status == 206, "S3 serves a range")
    missing = request("GET", f"/v2/{repo}/blobs/{sha(b'nothing here' + RUN.encode())}", password)
    check(missing.status == 404 and missing.code() == "BLOB_UNKNOWN", "a missing blob is not redirected", missing)
    check(request("HEAD", f"/v2/{repo}/blobs/{config_digest}", password).status == 200, "HEAD is not redirected")
    check(stats(repo)["blob_redirects"] == 1, "blob_redirects", stats(repo))
    ok("GET blob -> 307 presigned URL on S3's host (reusable, Range works, no Authorization allowed); "
       "HEAD and missing blobs answered directly")

    print("\n== conformance mount: cross-repository mount")
    target = create("mount-target")
    mount_q = f"?mount={config_digest}&from={repo}"
    refused = start_upload(target, password, mount_q)
    check(refused.status == 202 and refused.headers.get("location"), "mount with BLOB_MOUNTING disabled", refused)
    api.put_account_setting(name="BLOB_MOUNTING", value="ENABLED")
    check(api.get_account_setting(name="BLOB_MOUNTING")["value"] == "ENABLED", "GetAccountSetting")
    check(ecr(f"AKIAOTHER{RUN}").get_account_setting(name="BLOB_MOUNTING")["value"] == "DISABLED",
          "the setting is per access key")
    mounted = start_upload(target, password, mount_q)
    check(mounted.status == 201, "mount with BLOB_MOUNTING enabled", mounted)
    stray = push_blob(repo, password, os.urandom(100))   # in the repository, in no manifest
    check(start_upload(target, password, f"?mount={stray}&from={repo}").status == 202, "a blob no manifest names")
    check(start_upload(target, p1, f"?mount={config_digest}&from={ns}/nowhere").status == 202, "a missing source")
    other_password, _ = token(ecr(f"AKIAOTHER{RUN}"))
    check(start_upload(target, other_password, mount_q).status == 202, "another key's token: disabled")
    s = stats(target)
    check(s["mount_attempts"] == 5 and s["mounts"] == 1, "mount stats", s)
    ok("mount honoured only with BLOB_MOUNTING=ENABLED (for the token's access key) and the blob in a "
       "source manifest; else 202 and a new session")

    print("\n== conformance visibility: eventual consistency (/visibility)")
    slow = create("slow")
    check(control("POST", "/visibility", {"repository": slow, "seconds": 2})[0] == 201, "POST /visibility")
    slow_manifest = image_manifest(slow, password, content)
    check(put_manifest(slow, "v1", password, slow_manifest).status == 201, "PUT into a slow repository")
    digest = sha(slow_manifest)
    hidden = request("GET", f"/v2/{slow}/manifests/v1", password, headers={"Accept": V2})
    check(hidden.status == 404 and hidden.code() == "MANIFEST_UNKNOWN", "GET by tag while invisible", hidden)
    check(request("HEAD", f"/v2/{slow}/manifests/{digest}", password).status == 404, "HEAD by digest while invisible")
    try:
        api.describe_images(repositoryName=slow, imageIds=[{"imageTag": "v1"}])
        raise Failed("DescribeImages found an invisible image")
    except ClientError as exc:
        check(exc.response["Error"]["Code"] == "ImageNotFoundException", "DescribeImages", exc)
    check(api.describe_images(repositoryName=slow)["imageDetails"] == [], "DescribeImages listing")
    check(api.list_images(repositoryName=slow)["imageIds"] == [], "ListImages")
    batch = api.batch_get_image(repositoryName=slow, imageIds=[{"imageTag": "v1"}])
    check(batch["images"] == [] and batch["failures"][0]["failureCode"] == "ImageNotFound", "BatchGetImage", batch)
    time.sleep(2.1)
    check(request("GET", f"/v2/{slow}/manifests/v1", password, headers={"Accept": V2}).status == 200, "visible later")
    check(api.describe_images(repositoryName=slow, imageIds=[{"imageTag": "v1"}])["imageDetails"][0]["imageDigest"] == digest,
          "DescribeImages later")
    ok("a manifest is invisible for S s after its PUT (registry 404 MANIFEST_UNKNOWN, DescribeImages "
       "ImageNotFoundException, ListImages/BatchGetImage), then appears")

    print("\n== conformance templates: repository creation templates, CREATE_ON_PUSH")
    prefix = f"{ns}/auto"
    api.create_repository_creation_template(
        prefix=prefix, appliedFor=["CREATE_ON_PUSH"], imageTagMutability="IMMUTABLE",
        resourceTags=[{"Key": "made-by", "Value": "template"}])
    api.create_repository_creation_template(prefix=f"{prefix}/deeper", appliedFor=["CREATE_ON_PUSH"],
                                            imageTagMutability="MUTABLE")
    try:
        api.create_repository_creation_template(prefix=prefix, appliedFor=["CREATE_ON_PUSH"])
        raise Failed("a second template with one prefix")
    except ClientError as exc:
        check(exc.response["Error"]["Code"] == "TemplateAlreadyExistsException", "duplicate template", exc)
    found = api.describe_repository_creation_templates(prefixes=[prefix])["repositoryCreationTemplates"]
    check(len(found) == 1 and found[0]["appliedFor"] == ["CREATE_ON_PUSH"], "DescribeRepositoryCreationTemplates", found)
    api.update_repository_creation_template(prefix=prefix, description="smoke")
    check(request("GET", f"/v2/{prefix}/app/tags/list", password).code() == "NAME_UNKNOWN", "a read creates nothing")
    pushed = image_manifest(f"{prefix}/app", password, content)
    check(put_manifest(f"{prefix}/app", "v1", password, pushed).status == 201, "push to a covered name")
    made = api.describe_repositories(repositoryNames=[f"{prefix}/app"])["repositories"][0]
    check(made["imageTagMutability"] == "IMMUTABLE", "the template's mutability", made)
    tags = api.list_tags_for_resource(resourceArn=made["repositoryArn"])["tags"]
    check({"Key": "made-by", "Value": "template"} in tags, "the template's tags", tags)
    check(stats(f"{prefix}/app")["created_on_push"] == prefix, "created_on_push", stats(f"{prefix}/app"))
    start_upload(f"{prefix}/deeper/app", password)
    deeper = api.describe_repositories(repositoryNames=[f"{prefix}/deeper/app"])["repositories"][0]
    check(deeper["imageTagMutability"] == "MUTABLE", "the longest prefix wins", deeper)
    check(start_upload(f"{ns}/uncovered/app", password).code() == "NAME_UNKNOWN", "no template, no repository")
    for p in (prefix, f"{prefix}/deeper"):
        api.delete_repository_creation_template(prefix=p)
    try:
        api.delete_repository_creation_template(prefix=prefix)
        raise Failed("deleted a template twice")
    except ClientError as exc:
        check(exc.response["Error"]["Code"] == "TemplateNotFoundException", "TemplateNotFoundException", exc)
    ok("templates CRUD; a blob upload POST or manifest PUT to a covered name creates the repository "
       "(longest prefix wins, settings and tags applied); reads and uncovered names stay NAME_UNKNOWN")

    print("\n== conformance referrers: OCI 1.1 referrers (registry API, ListImageReferrers, DescribeImages)")
    referrers_checks(api, create, password, repo, manifest)

    print("\n== conformance refused-referrers: referrer pushes ECR refuses (405)")
    refused_referrer_checks(create, password)

    print("\n== conformance signing: ECR managed signing")
    signing_checks(api, create, password, key)

    print("\n== conformance kms: KMS at its real host name")
    kms_checks()

    print("\n== conformance reference: POST /mode reference")
    ref = create("reference", imageTagMutability="IMMUTABLE")
    check(control("POST", "/mode", {"repository": ref, "mode": "reference"}) ==
          (201, {"repository": ref, "mode": "reference", "patches": "drop"}), "POST /mode reference")
    start = start_upload(ref, password)
    first = request("PATCH", start.headers["location"], password, chunks[0], {"Content-Type": "application/octet-stream"})
    second = request("PATCH", first.headers["location"], password, chunks[1], {"Content-Type": "application/octet-stream"})
    check(first.status == 202 and second.status == 202, "reference: PATCH 202, both kept", (first, second))
    done = request("PUT", f"{second.headers['location']}&digest={sha(b''.join(chunks))}", password)
    check(done.status == 201, "reference: chunked upload completes", done)
    ref_manifest = image_manifest(ref, password, content)
    put = put_manifest(ref, "v1", password, ref_manifest)
    check(put.status == 201 and "location" in put.headers, "reference: manifest PUT has a Location", put)
    check(put_manifest(ref, "v1", password, ref_manifest).status == 201, "reference: identical re-put allowed")
    cfg = json.loads(ref_manifest)["config"]["digest"]
    check(request("GET", f"/v2/{ref}/blobs/{cfg}", password).status == 200, "reference: blob GET answered directly")
    check(control("GET", f"/mode?repository={ref}")[1]["mode"] == "reference", "GET /mode")
    ok("mode reference: PATCH 202 and kept, Location on manifest PUT, identical re-put, direct blob GET")

    if os.environ.get("SMOKE_EXCLUSIVE") == "1":
        # DELETE /faults drops everyone's pending rules: only when nothing else runs.
        print("\n== conformance faults: DELETE /faults leaves the rest alone")
        check(control("DELETE", "/faults")[0] == 200, "DELETE /faults")
        check(control("GET", f"/mode?repository={ref}")[1]["mode"] == "reference", "mode kept")
        check(control("GET", f"/tokens?access_key={short_key}")[1]["lifetime"] == 1, "token lifetime kept")
        check(control("GET", f"/visibility?repository={slow}")[1]["seconds"] == 2, "visibility kept")
        ok("modes, token lifetimes and visibility survive DELETE /faults")


if __name__ == "__main__":
    try:
        main(sys.argv[1])
    except Failed as exc:
        print(f"   FAIL: {exc}", file=sys.stderr)
        sys.exit(1)
