"""ECR managed signing (November 2025), as the API reference and the User Guide describe it.

  PutSigningConfiguration     the registry's rules: up to 10, each a signing profile ARN
                              and optional repository filters (WILDCARD_MATCH, 1-100); per
                              SigV4 access key id, like the account settings (each key is
                              its own view of the registry, so parallel tests each have
                              their own), and a push signs by the configuration of the key
                              its registry token was issued to
  GetSigningConfiguration     SigningConfigurationNotFoundException when none
  DeleteSigningConfiguration  the same, and returns the deleted configuration
  DescribeImageSigningStatus  per image, one status per signing profile whose rule covered
                              the repository when the image was pushed

"Amazon ECR managed signing automatically signs images as they are pushed": an image pushed
to a covered repository gets a status per matching profile; what the status goes through
is scripted per repository (or digest) on the control API (POST /signing): by default
IN_PROGRESS for DEFAULT_SECONDS, then COMPLETE. When a status becomes COMPLETE, the
front stores the signature as ECR does, as a referrer of the image in its repository: a
Notary Project signature (artifactType application/vnd.cncf.notary.signature, one
application/jose+json envelope layer), pushed to the registry and recorded in moto, so
ListImageReferrers, the referrers API and DescribeImages all show it.
"""
from __future__ import annotations

import base64
import hashlib
import http.client
import json
import re
import threading
import time
import uuid

from front_common import ACCOUNT, REGISTRY_HOST, SpecError, log, wildcard_match
from front_referrers import EMPTY_BLOB, EMPTY_CONFIG, EMPTY_DIGEST, OCI_MANIFEST
from front_state import ApiError

PROFILE_ARN = re.compile(r"^arn:aws(-[a-z]+)*:signer:[a-z0-9-]+:[0-9]{12}:\/signing-profiles\/[a-zA-Z0-9_]{2,}$")
FILTER_VALUE = re.compile(r"^(?:[a-z0-9*]+(?:[._-][a-z0-9*]+)*/)*[a-z0-9*]+(?:[._-][a-z0-9*]+)*$")
STATUSES = ("IN_PROGRESS", "COMPLETE", "FAILED")
NOTARY_SIGNATURE = "application/vnd.cncf.notary.signature"
JWS_ENVELOPE = "application/jose+json"
DEFAULT_SECONDS = 2
MAX_SECONDS = 3600
DEFAULT_FAILURE = ("SIGNING_FAILED", "Signing failed")


def invalid(field: str, constraint: str) -> ApiError:
    return ApiError("InvalidParameterException",
                    f"Invalid parameter at '{field}' failed to satisfy constraint: '{constraint}'")


def check_configuration(config) -> dict:
    """The API model's constraints (SigningConfiguration, SigningRule,
    SigningRepositoryFilter); the normalised configuration."""
    if not isinstance(config, dict) or not isinstance(config.get("rules"), list):
        raise ApiError("ValidationException", "1 validation error detected: Value null at "
                       "'signingConfiguration.rules' failed to satisfy constraint: Member must not be null")
    rules = config["rules"]
    if len(rules) > 10:
        raise invalid("signingConfiguration.rules", "Member must have length less than or equal to 10")
    clean = []
    for n, rule in enumerate(rules, 1):
        where = f"signingConfiguration.rules.{n}.member"
        if not isinstance(rule, dict):
            raise invalid(where, "Member must be a SigningRule")
        unknown = set(rule) - {"signingProfileArn", "repositoryFilters"}
        if unknown:
            raise ApiError("SerializationException", f"Unknown field(s): {', '.join(sorted(unknown))}")
        arn = rule.get("signingProfileArn")
        if not isinstance(arn, str) or len(arn) > 200 or not PROFILE_ARN.match(arn):
            raise invalid(f"{where}.signingProfileArn",
                          "Member must satisfy regular expression pattern: " + PROFILE_ARN.pattern)
        entry = {"signingProfileArn": arn}
        filters = rule.get("repositoryFilters")
        if filters is not None:
            if not isinstance(filters, list) or not 1 <= len(filters) <= 100:
                raise invalid(f"{where}.repositoryFilters",
                              "Member must have length less than or equal to 100 and greater than or equal to 1")
            for f in filters:
                if not isinstance(f, dict) or set(f) != {"filter", "filterType"}:
                    raise invalid(f"{where}.repositoryFilters", "each filter is {filter, filterType}")
                if f["filterType"] != "WILDCARD_MATCH":
                    raise invalid(f"{where}.repositoryFilters.member.filterType",
                                  "Member must satisfy enum value set: [WILDCARD_MATCH]")
                value = f["filter"]
                if not isinstance(value, str) or not 1 <= len(value) <= 256 or not FILTER_VALUE.match(value):
                    raise invalid(f"{where}.repositoryFilters.member.filter",
                                  "Member must satisfy regular expression pattern: " + FILTER_VALUE.pattern)
            entry["repositoryFilters"] = [dict(f) for f in filters]
        clean.append(entry)
    return {"rules": clean}


def profiles_for(config: dict | None, repository: str) -> list[str]:
    """The distinct signing profiles whose rules cover `repository` (a rule without
    filters covers every repository), in rule order."""
    found: list[str] = []
    for rule in (config or {}).get("rules") or []:
        filters = rule.get("repositoryFilters")
        if filters and not any(wildcard_match(f["filter"], repository) for f in filters):
            continue
        if rule["signingProfileArn"] not in found:
            found.append(rule["signingProfileArn"])
    return found


def parse_script(raw: bytes) -> tuple[str, str | None, dict]:
    """A control-API body (POST /signing) -> (repository, digest or None, script)."""
    from front_control import body_object, number, repository_field
    spec = body_object(raw, {"repository", "digest", "status", "seconds", "failure_code", "failure_reason"},
                       {"repository", "status"})
    repository = repository_field(spec)
    digest = spec.get("digest")
    if digest is not None and (not isinstance(digest, str) or not re.fullmatch(r"sha256:[0-9a-f]{64}", digest)):
        raise SpecError("digest must be sha256:<64 hex digits>")
    status = spec["status"]
    if status not in STATUSES:
        raise SpecError(f"status must be one of {', '.join(STATUSES)}")
    if status == "IN_PROGRESS" and "seconds" in spec:
        raise SpecError("IN_PROGRESS stays for good: seconds only applies to COMPLETE and FAILED")
    if status != "FAILED" and ("failure_code" in spec or "failure_reason" in spec):
        raise SpecError("failure_code and failure_reason only apply to FAILED")
    script = {"status": status}
    if status != "IN_PROGRESS":
        script["seconds"] = number(spec.get("seconds", DEFAULT_SECONDS), 0, MAX_SECONDS, "seconds")
    if status == "FAILED":
        for key, default in zip(("failure_code", "failure_reason"), DEFAULT_FAILURE):
            value = spec.get(key, default)
            if not isinstance(value, str) or not value:
                raise SpecError(f"{key} must be a non-empty string")
            script[key] = value
    return repository, digest, script


class Signing:
    """The registry's signing configuration, the scripts, and every signed push."""

    def __init__(self):
        self._lock = threading.Lock()
        self._configs: dict[str, dict] = {}
        self._scripts: dict[tuple[str, str | None], dict] = {}
        # (repository, digest) -> {"pushed", "profiles", "script", "subject": descriptor,
        # "stored": {profile: signature digest}}
        self._images: dict[tuple[str, str], dict] = {}
        self._storing = threading.Lock()
        self.moto = None
        self.registry_addr = None

    def bind(self, moto, registry_addr) -> None:
        self.moto, self.registry_addr = moto, registry_addr

    # --- configuration (the API) -------------------------------------------------------

    def put(self, access_key: str, config) -> dict:
        clean = check_configuration(config)
        with self._lock:
            self._configs[access_key] = clean
        return json.loads(json.dumps(clean))

    def get(self, access_key: str) -> dict:
        with self._lock:
            if access_key not in self._configs:
                raise self._not_found()
            return json.loads(json.dumps(self._configs[access_key]))

    def delete(self, access_key: str) -> dict:
        with self._lock:
            config = self._configs.pop(access_key, None)
        if config is None:
            raise self._not_found()
        return config

    @staticmethod
    def _not_found() -> ApiError:
        return ApiError("SigningConfigurationNotFoundException",
                        f"Signing configuration not found for registry with id '{ACCOUNT}'")

    # --- scripts (the control API) -----------------------------------------------------

    def set_script(self, repository: str, digest: str | None, script: dict) -> None:
        with self._lock:
            self._scripts[(repository, digest)] = script

    def script(self, repository: str, digest: str | None = None) -> dict:
        with self._lock:
            return dict(self._scripts.get((repository, digest)) or self._scripts.get((repository, None))
                        or {"status": "COMPLETE", "seconds": DEFAULT_SECONDS})

    # --- pushes ------------------------------------------------------------------------

    def on_push(self, access_key: str, repository: str, digest: str, media_type: str, size: int) -> None:
        """An image was pushed with a token of `access_key`: if that key's rules cover the
        repository, its signing starts now."""
        with self._lock:
            profiles = profiles_for(self._configs.get(access_key), repository)
            if not profiles or (repository, digest) in self._images:
                return
        script = self.script(repository, digest)
        with self._lock:
            self._images[(repository, digest)] = {
                "pushed": time.monotonic(), "profiles": profiles, "script": script,
                "subject": {"mediaType": media_type, "digest": digest, "size": size}, "stored": {}}
        log.info("- - - - signing %s@%s with %s: %s", repository, digest, ", ".join(profiles),
                 json.dumps(script, sort_keys=True))
        if script["status"] == "COMPLETE":
            timer = threading.Timer(script["seconds"], self.settle, args=(repository,))
            timer.daemon = True
            timer.start()

    def settle(self, repository: str) -> None:
        """Store the signatures that are due in `repository` (idempotent)."""
        now = time.monotonic()
        with self._lock:
            due = [(digest, dict(image)) for (repo, digest), image in self._images.items()
                   if repo == repository and image["script"]["status"] == "COMPLETE"
                   and now >= image["pushed"] + image["script"]["seconds"]
                   and len(image["stored"]) < len(image["profiles"])]
        if not due:
            return
        with self._storing:
            for digest, image in due:
                for profile in image["profiles"]:
                    with self._lock:
                        if profile in self._images[(repository, digest)]["stored"]:
                            continue
                    try:
                        signature = self._store(repository, image["subject"], profile)
                    except Exception:  # noqa: BLE001 - retried on the next look
                        log.exception("storing the signature of %s@%s failed", repository, digest)
                        continue
                    with self._lock:
                        self._images[(repository, digest)]["stored"][profile] = signature
                    log.info("- - - - signed %s@%s (%s): signature %s", repository, digest, profile, signature)

    def statuses(self, repository: str, digest: str) -> list[dict]:
        """DescribeImageSigningStatus's signingStatuses: [] for an image no rule covered."""
        self.settle(repository)
        with self._lock:
            image = self._images.get((repository, digest))
            if image is None:
                return []
            image = dict(image, stored=dict(image["stored"]))
        script, elapsed = image["script"], time.monotonic() - image["pushed"]
        answer = []
        for profile in image["profiles"]:
            status = script["status"]
            if status != "IN_PROGRESS" and elapsed < script["seconds"]:
                status = "IN_PROGRESS"
            if status == "COMPLETE" and profile not in image["stored"]:
                status = "IN_PROGRESS"  # the signature is not in the repository yet
            entry = {"signingProfileArn": profile, "status": status}
            if status == "FAILED":
                entry["failureCode"], entry["failureReason"] = script["failure_code"], script["failure_reason"]
            answer.append(entry)
        return answer

    def snapshot(self, repository: str) -> list[dict]:
        with self._lock:
            digests = sorted(d for (r, d) in self._images if r == repository)
        return [{"digest": d, "signingStatuses": self.statuses(repository, d)} for d in digests]

    def clear(self) -> None:
        with self._lock:
            self._configs.clear()
            self._scripts.clear()
            self._images.clear()

    # --- the signature referrer --------------------------------------------------------

    def _store(self, repository: str, subject: dict, profile: str) -> str:
        """Push a Notary Project signature of `subject` to the repository (registry and
        moto), as ECR stores a managed signature; its digest."""
        created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        payload = base64.urlsafe_b64encode(json.dumps({"targetArtifact": subject}).encode()).rstrip(b"=")
        protected = base64.urlsafe_b64encode(json.dumps({
            "alg": "PS384", "cty": "application/vnd.cncf.notary.payload.v1+json",
            "io.cncf.notary.signingScheme": "notary.x509.signingAuthority",
            "io.cncf.notary.signingTime": created,
            "io.cncf.notary.verificationPlugin": "com.amazonaws.signer.notation.plugin",
            "crit": ["io.cncf.notary.signingScheme", "io.cncf.notary.verificationPlugin"],
        }).encode()).rstrip(b"=")
        envelope = json.dumps({
            "payload": payload.decode(), "protected": protected.decode(),
            "header": {"x5c": [], "io.cncf.notary.signingAgent": f"ecr-standin managed signing ({profile})"},
            "signature": base64.urlsafe_b64encode(hashlib.sha384(payload + uuid.uuid4().bytes).digest())
            .rstrip(b"=").decode(),
        }).encode()
        self._push_blob(repository, EMPTY_BLOB)
        envelope_digest = self._push_blob(repository, envelope)
        thumbprint = hashlib.sha256(profile.encode()).hexdigest()
        manifest = json.dumps({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": NOTARY_SIGNATURE,
            "config": {"mediaType": EMPTY_CONFIG, "digest": EMPTY_DIGEST, "size": len(EMPTY_BLOB)},
            "layers": [{"mediaType": JWS_ENVELOPE, "digest": envelope_digest, "size": len(envelope)}],
            "subject": subject,
            "annotations": {"io.cncf.notary.x509chain.thumbprint#S256": json.dumps([thumbprint]),
                            "org.opencontainers.image.created": created},
        }, separators=(",", ":")).encode()
        digest = "sha256:" + hashlib.sha256(manifest).hexdigest()
        status, _, body = self._registry("PUT", f"/v2/{repository}/manifests/{digest}", manifest,
                                         {"Content-Type": OCI_MANIFEST})
        if status != 201:
            raise RuntimeError(f"manifest PUT answered {status}: {body[:200]!r}")
        self.moto.put_image(repository, manifest.decode(), OCI_MANIFEST, None, digest)
        return digest

    def _registry(self, method: str, path: str, body: bytes | None = None, headers=None):
        from front_registry import REGISTRY_AUTH
        conn = http.client.HTTPConnection(*self.registry_addr, timeout=60)
        try:
            conn.request(method, path, body=body,
                         headers={"Authorization": REGISTRY_AUTH, "Host": REGISTRY_HOST, **(headers or {})})
            resp = conn.getresponse()
            return resp.status, resp.getheader("Location"), resp.read()
        finally:
            conn.close()

    def _push_blob(self, repository: str, data: bytes) -> str:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        status, _, _ = self._registry("HEAD", f"/v2/{repository}/blobs/{digest}")
        if status == 200:
            return digest
        status, location, body = self._registry("POST", f"/v2/{repository}/blobs/uploads/")
        if status != 202 or not location:
            raise RuntimeError(f"blob upload POST answered {status}: {body[:200]!r}")
        path = "/v2/" + location.split("/v2/", 1)[1]
        status, _, body = self._registry("PUT", f"{path}{'&' if '?' in path else '?'}digest={digest}", data,
                                         {"Content-Type": "application/octet-stream"})
        if status != 201:
            raise RuntimeError(f"blob PUT answered {status}: {body[:200]!r}")
        return digest
