"""ECR private image replication (cross-Region and cross-account), as the ECR User Guide
("Private image replication") and the API reference describe it.

  PutReplicationConfiguration     the registry's rules, per (account, region): up to 10
                                  rules, each with destinations {region, registryId} and
                                  optional repositoryFilters (PREFIX_MATCH); at most 25
                                  unique destinations in all; the source registry itself
                                  is not a valid destination
  DescribeRegistry                {registryId, replicationConfiguration} ({"rules": []}
                                  before any put)
  DescribeImageReplicationStatus  per image, one status per destination its push was
                                  replicated to: IN_PROGRESS, COMPLETE or FAILED (+ failureCode)

moto 5.2.1 has PutReplicationConfiguration and DescribeRegistry (per account and region),
but refuses more than one rule ("This feature is disabled"), checks nothing else than the
source-as-destination case, replicates nothing and lacks DescribeImageReplicationStatus;
so the front answers all three itself (the configurations live here, not in moto).

Replication: every manifest PUT the front accepts at a private registry (front_registry)
calls on_push; when a rule of that registry's configuration covers the repository (no
filter: every repository; PREFIX_MATCH: the name starts with the filter), each of the
rule's destinations gets IN_PROGRESS, and after the delay (POST /replication, default 2 s;
ECR gives no SLA, aws/containers-roadmap#1664) the front copies the manifest (an index
with its child manifests, and every blob) into the destination registry's namespace,
creating the repository in moto's destination account+region when it is missing, and
records the image with its tag there in moto; then COMPLETE. A destination the fail
switch names gets FAILED and nothing is copied; so does another account's registry whose
permissions policy (moto's PutRegistryPolicy there) does not allow the source account
ecr:ReplicateImage (and ecr:CreateRepository when the repository is missing). Only pushes made after the configuration
was put are replicated (images already there are not), and what replication writes is
not replicated further (no chained replication, aws/containers-roadmap#2125).
"""
from __future__ import annotations

import hashlib
import http.client
import json
import re
import threading
import time

from front_common import SpecError, log
from front_state import ApiError

MAX_RULES = 10
MAX_DESTINATIONS = 25            # unique destinations across every rule (ECR User Guide)
MAX_RULE_DESTINATIONS = 100      # API model ReplicationDestinationList
MAX_FILTERS = 100                # API model RepositoryFilterList
REGION = re.compile(r"^[0-9a-z-]{2,25}$")
REGISTRY_ID = re.compile(r"^[0-9]{12}$")
FILTER_VALUE = re.compile(r"^(?:[a-z0-9]+(?:[._-][a-z0-9]*)*/)*[a-z0-9]*(?:[._-][a-z0-9]*)*$")
DEFAULT_DELAY = 2.0
MAX_DELAY = 3600
DEFAULT_FAILURE_CODE = "REPLICATION_FAILED"   # unconfirmed: the model's ReplicationError is a free string
ACCEPT = ", ".join([
    "application/vnd.oci.image.index.v1+json", "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
])
INDEX_TYPES = ("application/vnd.oci.image.index.v1+json",
               "application/vnd.docker.distribution.manifest.list.v2+json")


def invalid(field: str, constraint: str) -> ApiError:
    return ApiError("InvalidParameterException",
                    f"Invalid parameter at '{field}' failed to satisfy constraint: '{constraint}'")


def check_configuration(config, source) -> dict:
    """The API model's and the User Guide's constraints; the normalised configuration."""
    if not isinstance(config, dict) or not isinstance(config.get("rules"), list):
        raise ApiError("ValidationException", "1 validation error detected: Value null at "
                       "'replicationConfiguration.rules' failed to satisfy constraint: Member must not be null")
    unknown = set(config) - {"rules"}
    if unknown:
        raise ApiError("SerializationException", f"Unknown field(s): {', '.join(sorted(unknown))}")
    rules = config["rules"]
    if len(rules) > MAX_RULES:
        raise invalid("replicationConfiguration.rules", f"Member must have length less than or equal to {MAX_RULES}")
    clean, unique = [], []
    for n, rule in enumerate(rules, 1):
        where = f"replicationConfiguration.rules.{n}.member"
        if not isinstance(rule, dict) or not isinstance(rule.get("destinations"), list):
            raise ApiError("ValidationException", f"1 validation error detected: Value null at "
                           f"'{where}.destinations' failed to satisfy constraint: Member must not be null")
        unknown = set(rule) - {"destinations", "repositoryFilters"}
        if unknown:
            raise ApiError("SerializationException", f"Unknown field(s): {', '.join(sorted(unknown))}")
        if len(rule["destinations"]) > MAX_RULE_DESTINATIONS:
            raise invalid(f"{where}.destinations",
                          f"Member must have length less than or equal to {MAX_RULE_DESTINATIONS}")
        destinations = []
        for destination in rule["destinations"]:
            if not isinstance(destination, dict) or set(destination) != {"region", "registryId"}:
                raise invalid(f"{where}.destinations", "each destination is {region, registryId}")
            region, registry = destination["region"], destination["registryId"]
            if not isinstance(region, str) or not REGION.match(region):
                raise invalid(f"{where}.destinations.member.region",
                              "Member must satisfy regular expression pattern: [0-9a-z-]{2,25}")
            if not isinstance(registry, str) or not REGISTRY_ID.match(registry):
                raise invalid(f"{where}.destinations.member.registryId",
                              "Member must satisfy regular expression pattern: [0-9]{12}")
            if (registry, region) == (source.account, source.region):
                # moto 5.2's message for the same check.
                raise invalid("replicationConfiguration",
                              "Replication destination cannot be the same as the source registry")
            destinations.append({"region": region, "registryId": registry})
            if (registry, region) not in unique:
                unique.append((registry, region))
        entry = {"destinations": destinations}
        filters = rule.get("repositoryFilters")
        if filters is not None:
            if not isinstance(filters, list) or not 1 <= len(filters) <= MAX_FILTERS:
                raise invalid(f"{where}.repositoryFilters",
                              f"Member must have length less than or equal to {MAX_FILTERS} and greater than or equal to 1")
            for f in filters:
                if not isinstance(f, dict) or set(f) != {"filter", "filterType"}:
                    raise invalid(f"{where}.repositoryFilters", "each filter is {filter, filterType}")
                if f["filterType"] != "PREFIX_MATCH":
                    raise invalid(f"{where}.repositoryFilters.member.filterType",
                                  "Member must satisfy enum value set: [PREFIX_MATCH]")
                value = f["filter"]
                if not isinstance(value, str) or not 2 <= len(value) <= 256 or not FILTER_VALUE.match(value):
                    raise invalid(f"{where}.repositoryFilters.member.filter",
                                  "Member must satisfy regular expression pattern: " + FILTER_VALUE.pattern)
            entry["repositoryFilters"] = [{"filter": f["filter"], "filterType": f["filterType"]} for f in filters]
        clean.append(entry)
    if len(unique) > MAX_DESTINATIONS:
        # ECR User Guide: at most 25 unique destinations across all rules (message unconfirmed).
        raise invalid("replicationConfiguration",
                      f"The number of unique destinations across all rules cannot exceed {MAX_DESTINATIONS}")
    return {"rules": clean}


def destinations_for(config: dict | None, repository: str) -> list[tuple[str, str]]:
    """(registryId, region) of every destination whose rule covers `repository` (the
    client's name), unique, in rule order."""
    found: list[tuple[str, str]] = []
    for rule in (config or {}).get("rules") or []:
        filters = rule.get("repositoryFilters")
        if filters and not any(repository.startswith(f["filter"]) for f in filters):
            continue
        for d in rule["destinations"]:
            key = (d["registryId"], d["region"])
            if key not in found:
                found.append(key)
    return found


class Replication:
    """Configurations per registry, the control switches, and the status of every
    replicated push."""

    def __init__(self):
        self._lock = threading.Lock()
        self._copying = threading.Lock()
        self._configs: dict[tuple[str, str], dict] = {}
        # (source account, region, internal repository, digest) -> {dest: status entry}
        self._images: dict[tuple[str, str, str, str], dict] = {}
        self._tags: dict[tuple[str, str, str, str], list] = {}
        self.delay = DEFAULT_DELAY
        self.fail: list[str] = []
        self.failure_code = DEFAULT_FAILURE_CODE
        # Bumped by clear(): a copy scheduled before a reset is dropped.
        self._generation = 0

    # --- configuration (the API) ---------------------------------------------------------

    def put(self, source, config) -> dict:
        clean = check_configuration(config, source)
        with self._lock:
            if clean["rules"]:
                self._configs[(source.account, source.region)] = clean
            else:
                self._configs.pop((source.account, source.region), None)
        log.info("- - - - replication configuration of %s/%s: %s", source.account, source.region,
                 json.dumps(clean, sort_keys=True))
        return json.loads(json.dumps(clean))

    def get(self, source) -> dict:
        with self._lock:
            return json.loads(json.dumps(self._configs.get((source.account, source.region)) or {"rules": []}))

    # --- switches (the control API) ------------------------------------------------------

    def set_switches(self, spec: dict) -> None:
        from front_control import number
        if "delay" in spec:
            self.delay = float(number(spec["delay"], 0, MAX_DELAY, "delay (seconds)"))
        if "fail" in spec:
            fail = spec["fail"]
            if not isinstance(fail, list) or not all(
                    isinstance(f, str) and (REGION.match(f) or re.fullmatch(r"[0-9]{12}:[0-9a-z-]{2,25}", f))
                    for f in fail):
                raise SpecError('fail must be a list of "<region>" or "<account>:<region>"')
            self.fail = list(dict.fromkeys(fail))
        if "failure_code" in spec:
            code = spec["failure_code"]
            if not isinstance(code, str) or not code:
                raise SpecError("failure_code must be a non-empty string")
            self.failure_code = code

    def _fails(self, account: str, region: str) -> bool:
        return region in self.fail or f"{account}:{region}" in self.fail

    # --- pushes --------------------------------------------------------------------------

    def on_push(self, server, source, name: str, digest: str, tag: str | None) -> None:
        """A manifest was accepted at `source` (a front_targets.Target), repository `name`
        (internal): replicate it if a rule covers the repository."""
        with self._lock:
            config = self._configs.get((source.account, source.region))
        destinations = destinations_for(config, source.public(name))
        if not destinations:
            return
        key = (source.account, source.region, name, digest)
        with self._lock:
            entry = self._images.setdefault(key, {})
            for destination in destinations:
                entry[destination] = {"status": "IN_PROGRESS"}
            tags = self._tags.setdefault(key, [])
            if tag and tag not in tags:
                tags.append(tag)
            delay, generation = self.delay, self._generation
        log.info("- - - - replicating %s@%s%s to %s in %.1fs", source.public(name), digest,
                 f" ({tag})" if tag else "", ", ".join(f"{a}/{r}" for a, r in destinations), delay)
        timer = threading.Timer(delay, self._replicate, args=(server, source, name, digest, tag, destinations, generation))
        timer.daemon = True
        timer.start()

    def _replicate(self, server, source, name: str, digest: str, tag: str | None, destinations,
                   generation: int) -> None:
        from front_targets import Target
        key = (source.account, source.region, name, digest)
        for account, region in destinations:
            if generation != self._generation:
                return  # POST /reset since the push: moto and the registry were emptied too
            if self._fails(account, region):
                outcome = {"status": "FAILED", "failureCode": self.failure_code}
            else:
                try:
                    with self._copying:
                        copy_image(server, source, name, digest, tag, Target(account, region))
                    outcome = {"status": "COMPLETE"}
                except NotAllowed as exc:
                    log.info("- - - - replicating %s@%s to %s/%s: %s", name, digest, account, region, exc)
                    outcome = {"status": "FAILED", "failureCode": self.failure_code}
                except Exception as exc:  # noqa: BLE001 - reported as FAILED
                    log.exception("replicating %s@%s to %s/%s failed", name, digest, account, region)
                    outcome = {"status": "FAILED", "failureCode": f"{self.failure_code}: {type(exc).__name__}"}
            with self._lock:
                entry = self._images.get(key)
                if entry is not None and (account, region) in entry:
                    entry[(account, region)] = outcome
            log.info("- - - - replication of %s@%s to %s/%s: %s", source.public(name), digest, account, region,
                     outcome["status"])

    def statuses(self, source, name: str, digest: str) -> list[dict]:
        """DescribeImageReplicationStatus's replicationStatuses ([] when never replicated)."""
        with self._lock:
            entry = dict(self._images.get((source.account, source.region, name, digest)) or {})
        return [dict({"region": region, "registryId": account}, **outcome)
                for (account, region), outcome in entry.items()]

    def snapshot(self) -> dict:
        from front_targets import Target
        with self._lock:
            configs = [{"registryId": a, "region": r, "replicationConfiguration": c}
                       for (a, r), c in sorted(self._configs.items())]
            keys = sorted(self._images)
            tags = {k: list(v) for k, v in self._tags.items()}
        images = []
        for key in keys:
            account, region, name, digest = key
            source = Target(account, region)
            images.append({"registryId": account, "region": region, "repositoryName": source.public(name),
                           "imageDigest": digest, "imageTags": tags.get(key, []),
                           "replicationStatuses": self.statuses(source, name, digest)})
        return {"delay": self.delay, "fail": list(self.fail), "failure_code": self.failure_code,
                "configurations": json.loads(json.dumps(configs)), "images": images}

    def clear(self) -> None:
        with self._lock:
            self._configs.clear()
            self._images.clear()
            self._tags.clear()
            self.delay = DEFAULT_DELAY
            self.fail = []
            self.failure_code = DEFAULT_FAILURE_CODE
            self._generation += 1


# --- the copy ------------------------------------------------------------------------------

def _registry(server, method: str, path: str, body: bytes | None = None, headers=None):
    from front_registry import REGISTRY_AUTH
    conn = http.client.HTTPConnection(*server.registry_addr, timeout=300)
    try:
        conn.request(method, path, body=body, headers={"Authorization": REGISTRY_AUTH, **(headers or {})})
        resp = conn.getresponse()
        return resp.status, dict((k.lower(), v) for k, v in resp.getheaders()), resp.read()
    finally:
        conn.close()


def _copy_blob(server, src: str, dst: str, digest: str) -> None:
    status, _, _ = _registry(server, "HEAD", f"/v2/{dst}/blobs/{digest}")
    if status == 200:
        return
    # Same storage behind both names: a mount is a copy without the bytes moving.
    status, headers, body = _registry(server, "POST", f"/v2/{dst}/blobs/uploads/?mount={digest}&from={src}")
    if status == 201:
        return
    if status != 202 or "location" not in headers:
        raise RuntimeError(f"blob upload POST for {dst} answered {status}: {body[:200]!r}")
    status, _, data = _registry(server, "GET", f"/v2/{src}/blobs/{digest}")
    if status != 200:
        raise RuntimeError(f"blob {digest} of {src}: {status}")
    location = headers["location"]
    path = "/v2/" + location.split("/v2/", 1)[1]
    status, _, body = _registry(server, "PUT", f"{path}{'&' if '?' in path else '?'}digest={digest}", data,
                                {"Content-Type": "application/octet-stream"})
    if status != 201:
        raise RuntimeError(f"blob PUT for {dst} answered {status}: {body[:200]!r}")


def _copy_manifest(server, src: str, dst: str, reference: str, tag: str | None) -> tuple[bytes, str, str]:
    """Copy one manifest (children and blobs first); (body, media type, digest)."""
    status, headers, body = _registry(server, "GET", f"/v2/{src}/manifests/{reference}", headers={"Accept": ACCEPT})
    if status != 200:
        raise RuntimeError(f"manifest {reference} of {src}: {status}")
    media_type = (headers.get("content-type") or "").split(";")[0].strip()
    doc = json.loads(body)
    media_type = doc.get("mediaType") or media_type
    digest = "sha256:" + hashlib.sha256(body).hexdigest()
    for child in doc.get("manifests") or []:
        if isinstance(child, dict) and isinstance(child.get("digest"), str):
            _copy_manifest(server, src, dst, child["digest"], None)
    blobs = [doc.get("config")] + list(doc.get("layers") or []) + list(doc.get("blobs") or [])
    for blob in blobs:
        if isinstance(blob, dict) and isinstance(blob.get("digest"), str):
            _copy_blob(server, src, dst, blob["digest"])
    status, _, answer = _registry(server, "PUT", f"/v2/{dst}/manifests/{tag or digest}", body,
                                  {"Content-Type": media_type})
    if status != 201:
        raise RuntimeError(f"manifest PUT for {dst} answered {status}: {answer[:200]!r}")
    return body, media_type, digest


def _record(server, dest, dst: str, body: bytes, media_type: str, digest: str, tag: str | None) -> None:
    """Record a copied manifest in the destination's moto (children before the index)."""
    moto = server.moto_for(dest)
    doc = json.loads(body)
    for child in doc.get("manifests") or []:
        if isinstance(child, dict) and isinstance(child.get("digest"), str) \
                and moto.image_by_digest(dst, child["digest"]) is None:
            status, headers, child_body = _registry(server, "GET", f"/v2/{dst}/manifests/{child['digest']}",
                                                    headers={"Accept": ACCEPT})
            if status == 200:
                child_type = json.loads(child_body).get("mediaType") or \
                    (headers.get("content-type") or "").split(";")[0].strip()
                _record(server, dest, dst, child_body, child_type, child["digest"], None)
    previous = moto.image(dst, tag) if tag else None
    moto.put_image(dst, body.decode("utf-8"), media_type or None, tag, digest, previous)


class NotAllowed(Exception):
    """The destination's registry permissions policy does not allow the replication."""


def allowed_actions(moto, source_account: str) -> set[str]:
    """The actions ("ecr:ReplicateImage", "ecr:CreateRepository") the destination registry's
    permissions policy (moto's GetRegistryPolicy in its account+region) allows
    `source_account`: an Allow statement whose AWS principal is the account id, its root
    ARN or "*" (Deny statements, conditions and resources are not evaluated)."""
    try:
        text = moto.client.get_registry_policy()["policyText"]
        policy = json.loads(text)
    except Exception:  # noqa: BLE001 - RegistryPolicyNotFoundException, or not JSON
        return set()
    statements = policy.get("Statement") or []
    if isinstance(statements, dict):
        statements = [statements]
    found: set[str] = set()
    for statement in statements:
        if not isinstance(statement, dict) or statement.get("Effect") != "Allow":
            continue
        principal = statement.get("Principal")
        principals = principal.get("AWS") if isinstance(principal, dict) else principal
        principals = [principals] if isinstance(principals, str) else principals or []
        if not any(p in ("*", source_account, f"arn:aws:iam::{source_account}:root") for p in principals):
            continue
        actions = statement.get("Action") or []
        found.update([actions] if isinstance(actions, str) else actions)
    return found


def copy_image(server, source, name: str, digest: str, tag: str | None, dest) -> None:
    """Copy `name`@`digest` (tagged `tag`) of registry `source` into registry `dest`."""
    public = source.public(name)
    dst = dest.internal(public)
    moto = server.moto_for(dest)
    missing = moto.repository(dst) is None
    if dest.account != source.account:
        # ECR User Guide, "Private image replication": the destination's registry
        # permissions policy must allow ecr:ReplicateImage (and ecr:CreateRepository for
        # a repository it has to create) to the source account.
        allowed = allowed_actions(moto, source.account)
        needed = {"ecr:ReplicateImage"} | ({"ecr:CreateRepository"} if missing else set())
        if needed - allowed:
            raise NotAllowed(f"the registry policy of {dest.account}/{dest.region} does not allow "
                             f"{', '.join(sorted(needed - allowed))} to {source.account}")
    if missing:
        # ECR creates the destination repository (the service-linked role's
        # ecr:CreateRepository); a REPLICATION creation template applies where the
        # stand-in keeps templates (the primary registry).
        template = None
        if dest.primary:
            template = server.state.templates.covering(public, "REPLICATION")
        if template is not None:
            moto.create_from_template(dst, template)
        else:
            try:
                moto.client.create_repository(repositoryName=public)
            except moto.errors.RepositoryAlreadyExistsException:
                pass
        log.info("- - - - created %s in %s/%s for replication", public, dest.account, dest.region)
    body, media_type, copied = _copy_manifest(server, name, dst, digest, tag)
    if copied != digest:
        raise RuntimeError(f"copied {copied}, expected {digest}")
    _record(server, dest, dst, body, media_type, digest, tag)
