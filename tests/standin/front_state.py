"""What the front remembers between requests to play ECR: registry tokens, account
settings, repository creation templates, eventual-consistency windows, per-repository
modes, referrer refusals, test counters, upload sessions and presigned blob URLs (and,
in their own modules, managed signing (front_signing.py), KMS deny rules
(front_kms.py) and replication (front_replication.py)).

All of it lives in memory, is thread-safe, and is emptied by POST /reset on the control
API (which `scripts/standin reset` calls). DELETE /faults leaves it alone.
"""
from __future__ import annotations

import base64
import json
import os
import re
import threading
import time
import uuid

from front_common import ACCOUNT, SpecError, epoch

DAY = 24 * 3600


class ApiError(Exception):
    """An ECR API error: the JSON protocol's __type, a message, the HTTP status."""

    def __init__(self, error_type: str, message: str, status: int = 400):
        super().__init__(message)
        self.type, self.message, self.status = error_type, message, status


# --- registry tokens (GetAuthorizationToken) ----------------------------------------

class Tokens:
    """Passwords the front issued, with their expiry and the access key id that asked.

    ECR's passwords are opaque, about 2 KB of base64 (a JSON envelope around an
    encrypted payload); ours look alike and are random, so every call gets a new one.
    """

    DEFAULT_LIFETIME = 12 * 3600   # ECR: "valid for 12 hours" (API model, AuthorizationData)
    MAX_LIFETIME = 12 * 3600
    KEEP_EXPIRED = DAY             # expired passwords still get ECR's 403 for a day

    def __init__(self):
        self._lock = threading.Lock()
        self._issued: dict[str, tuple[str, float]] = {}
        # password -> (account, region) of the registry it was issued for: ECR's tokens are
        # per registry (ECR User Guide, registry authentication).
        self._registries: dict[str, tuple[str, str]] = {}
        self._lifetimes: dict[str, int] = {}
        self._counts: dict[str, int] = {}

    def set_lifetime(self, access_key: str, seconds: int) -> None:
        with self._lock:
            self._lifetimes[access_key] = seconds

    def info(self, access_key: str) -> dict:
        with self._lock:
            return {"access_key": access_key,
                    "lifetime": self._lifetimes.get(access_key, self.DEFAULT_LIFETIME),
                    "issued": self._counts.get(access_key, 0)}

    def issue(self, access_key: str, registry: tuple[str, str] | None = None) -> tuple[str, float]:
        now = time.time()
        with self._lock:
            lifetime = self._lifetimes.get(access_key, self.DEFAULT_LIFETIME)
            expires = now + lifetime
            envelope = {
                "payload": base64.b64encode(os.urandom(1024)).decode(),
                "datakey": base64.b64encode(os.urandom(184)).decode(),
                "version": "2", "type": "DATA_KEY", "expiration": int(expires),
            }
            password = base64.b64encode(json.dumps(envelope).encode()).decode()
            self._issued[password] = (access_key, expires)
            if registry is not None:
                self._registries[password] = registry
            self._counts[access_key] = self._counts.get(access_key, 0) + 1
            if len(self._issued) % 256 == 0:
                for key, (_, until) in list(self._issued.items()):
                    if until + self.KEEP_EXPIRED < now:
                        del self._issued[key]
                        self._registries.pop(key, None)
            return password, expires

    def check(self, password: str) -> tuple[str, str | None]:
        """("valid" | "expired" | "unknown", the access key id it was issued to)."""
        with self._lock:
            found = self._issued.get(password)
        if found is None:
            return "unknown", None
        access_key, expires = found
        return ("valid" if time.time() < expires else "expired"), access_key

    def registry_of(self, password: str) -> tuple[str, str] | None:
        """(account, region) of the registry a password was issued for."""
        with self._lock:
            return self._registries.get(password)

    def clear(self) -> None:
        with self._lock:
            self._issued.clear()
            self._registries.clear()
            self._lifetimes.clear()
            self._counts.clear()


# --- account settings (GetAccountSetting / PutAccountSetting) ------------------------

class AccountSettings:
    """Per SigV4 access key id: each key is its own view of the account, so tests running
    in parallel can each have their own BLOB_MOUNTING."""

    # name -> (valid values, default). Values: API reference, PutAccountSetting.
    NAMES = {
        "BLOB_MOUNTING": (("ENABLED", "DISABLED"), "DISABLED"),
        "BASIC_SCAN_TYPE_VERSION": (("AWS_NATIVE", "CLAIR"), "AWS_NATIVE"),
        "REGISTRY_POLICY_SCOPE": (("V1", "V2"), "V2"),
    }

    def __init__(self):
        self._lock = threading.Lock()
        self._values: dict[str, dict[str, str]] = {}

    def _check_name(self, name) -> None:
        if not isinstance(name, str) or not 1 <= len(name) <= 64:
            raise ApiError("ValidationException", "1 validation error detected: Value at 'name' "
                           "failed to satisfy constraint: Member must have length between 1 and 64")
        if name not in self.NAMES:
            raise ApiError("InvalidParameterException",
                           f"Invalid parameter at 'name' failed to satisfy constraint: 'Member must "
                           f"satisfy enum value set: [{', '.join(self.NAMES)}]'")

    def get(self, access_key: str, name) -> str:
        self._check_name(name)
        with self._lock:
            return self._values.get(access_key, {}).get(name, self.NAMES[name][1])

    def put(self, access_key: str, name, value) -> str:
        self._check_name(name)
        allowed = self.NAMES[name][0]
        if value not in allowed:
            raise ApiError("InvalidParameterException",
                           f"Invalid parameter at 'value' failed to satisfy constraint: 'Member must "
                           f"satisfy enum value set: [{', '.join(allowed)}]'")
        with self._lock:
            self._values.setdefault(access_key, {})[name] = value
        return value

    def clear(self) -> None:
        with self._lock:
            self._values.clear()


# --- repository creation templates --------------------------------------------------

PREFIX = re.compile(r"^([a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*/?|ROOT)$")
MUTABILITIES = ("MUTABLE", "IMMUTABLE", "IMMUTABLE_WITH_EXCLUSION", "MUTABLE_WITH_EXCLUSION")
APPLIED_FOR = ("REPLICATION", "PULL_THROUGH_CACHE", "CREATE_ON_PUSH")
ENCRYPTION_TYPES = ("AES256", "KMS", "KMS_DSSE")
FILTER_VALUE = re.compile(r"^[0-9a-zA-Z._*-]{1,128}$")
TEMPLATE_FIELDS = {"prefix", "description", "encryptionConfiguration", "resourceTags",
                   "imageTagMutability", "imageTagMutabilityExclusionFilters",
                   "repositoryPolicy", "lifecyclePolicy", "appliedFor", "customRoleArn"}


def invalid(field: str, constraint: str) -> ApiError:
    return ApiError("InvalidParameterException",
                    f"Invalid parameter at '{field}' failed to satisfy constraint: '{constraint}'")


def check_mutability(mutability, filters) -> None:
    """ECR's rules for imageTagMutability + imageTagMutabilityExclusionFilters (API
    reference: up to 5 WILDCARD filters [0-9a-zA-Z._*-]{1,128}, only with a
    *_WITH_EXCLUSION value, which needs at least one)."""
    if mutability is not None and mutability not in MUTABILITIES:
        raise invalid("imageTagMutability", f"Member must satisfy enum value set: [{', '.join(MUTABILITIES)}]")
    if filters is not None:
        if not isinstance(filters, list) or not 1 <= len(filters) <= 5:
            raise invalid("imageTagMutabilityExclusionFilters",
                          "Member must have length less than or equal to 5 and greater than or equal to 1")
        for f in filters:
            if not isinstance(f, dict) or set(f) != {"filterType", "filter"}:
                raise invalid("imageTagMutabilityExclusionFilters",
                              "each filter is {filterType, filter}")
            if f["filterType"] != "WILDCARD":
                raise invalid("imageTagMutabilityExclusionFilters.filterType",
                              "Member must satisfy enum value set: [WILDCARD]")
            if not isinstance(f["filter"], str) or not FILTER_VALUE.match(f["filter"]):
                raise invalid("imageTagMutabilityExclusionFilters.filter",
                              "Member must satisfy regular expression pattern: ^[0-9a-zA-Z._*-]{1,128}$")
    excluding = (mutability or "").endswith("_WITH_EXCLUSION")
    if filters and not excluding:
        raise invalid("imageTagMutabilityExclusionFilters",
                      f"ImageTagMutabilityExclusionFilters can't be null when imageTagMutability "
                      f"is set as {mutability or 'MUTABLE'}")
    if excluding and not filters:
        raise invalid("imageTagMutabilityExclusionFilters",
                      f"ImageTagMutabilityExclusionFilters can't be null when imageTagMutability is set as {mutability}")


class Templates:
    """Repository creation templates: global to the registry (not per access key)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._templates: dict[str, dict] = {}

    @staticmethod
    def _validate(spec: dict, creating: bool) -> None:
        unknown = set(spec) - TEMPLATE_FIELDS - {"registryId"}
        if unknown:
            raise ApiError("SerializationException", f"Unknown field(s): {', '.join(sorted(unknown))}")
        prefix = spec.get("prefix")
        if not isinstance(prefix, str) or not 1 <= len(prefix) <= 256 or not PREFIX.match(prefix):
            raise invalid("prefix", "Member must satisfy regular expression pattern: " + PREFIX.pattern)
        if creating or "appliedFor" in spec:
            applied = spec.get("appliedFor")
            if not isinstance(applied, list) or not applied or any(a not in APPLIED_FOR for a in applied):
                raise invalid("appliedFor", f"Member must satisfy enum value set: [{', '.join(APPLIED_FOR)}]")
        for key, limit in (("description", 256), ("repositoryPolicy", 10240),
                           ("lifecyclePolicy", 30720), ("customRoleArn", 2048)):
            value = spec.get(key)
            if value is not None and (not isinstance(value, str) or len(value) > limit):
                raise invalid(key, f"Member must have length less than or equal to {limit}")
        enc = spec.get("encryptionConfiguration")
        if enc is not None and (not isinstance(enc, dict) or enc.get("encryptionType") not in ENCRYPTION_TYPES):
            raise invalid("encryptionConfiguration.encryptionType",
                          f"Member must satisfy enum value set: [{', '.join(ENCRYPTION_TYPES)}]")
        tags = spec.get("resourceTags")
        if tags is not None and (not isinstance(tags, list) or not all(
                isinstance(t, dict) and isinstance(t.get("Key"), str) and isinstance(t.get("Value"), str)
                for t in tags)):
            raise invalid("resourceTags", "each tag is {Key, Value}")

    def create(self, spec: dict) -> dict:
        self._validate(spec, creating=True)
        check_mutability(spec.get("imageTagMutability"), spec.get("imageTagMutabilityExclusionFilters"))
        now = epoch()
        template = {
            "prefix": spec["prefix"],
            "imageTagMutability": "MUTABLE",
            "encryptionConfiguration": {"encryptionType": "AES256"},
            "resourceTags": [],
            **{k: v for k, v in spec.items() if k in TEMPLATE_FIELDS},
            "createdAt": now, "updatedAt": now,
        }
        with self._lock:
            if spec["prefix"] in self._templates:
                raise ApiError("TemplateAlreadyExistsException",
                               f"The repository creation template with prefix '{spec['prefix']}' already "
                               f"exists in the registry with id '{ACCOUNT}'")
            self._templates[spec["prefix"]] = template
        return dict(template)

    def update(self, spec: dict) -> dict:
        self._validate(spec, creating=False)
        with self._lock:
            current = self._templates.get(spec["prefix"])
            if current is None:
                raise self._not_found(spec["prefix"])
            merged = dict(current, **{k: v for k, v in spec.items() if k in TEMPLATE_FIELDS})
            mutability = merged.get("imageTagMutability")
            filters = merged.get("imageTagMutabilityExclusionFilters")
            if "imageTagMutability" in spec and not mutability.endswith("_WITH_EXCLUSION") \
                    and "imageTagMutabilityExclusionFilters" not in spec:
                merged.pop("imageTagMutabilityExclusionFilters", None)
                filters = None
            check_mutability(mutability, filters)
            merged["updatedAt"] = epoch()
            self._templates[spec["prefix"]] = merged
            return dict(merged)

    def delete(self, prefix) -> dict:
        if not isinstance(prefix, str) or not PREFIX.match(prefix):
            raise invalid("prefix", "Member must satisfy regular expression pattern: " + PREFIX.pattern)
        with self._lock:
            template = self._templates.pop(prefix, None)
        if template is None:
            raise self._not_found(prefix)
        return template

    def describe(self, prefixes=None) -> list[dict]:
        with self._lock:
            templates = [dict(t) for p, t in sorted(self._templates.items())
                         if not prefixes or p in prefixes]
        return templates

    def covering(self, name: str, applied_for: str = "CREATE_ON_PUSH") -> dict | None:
        """The template ECR applies to a new repository `name`: the longest prefix that
        covers it (a prefix P covers P/...; "There is always an assumed / applied to the
        end of the prefix"), else ROOT; only templates applied for `applied_for`."""
        with self._lock:
            candidates = [t for t in self._templates.values() if applied_for in t.get("appliedFor", [])]
        best = None
        for template in candidates:
            prefix = template["prefix"]
            if prefix == "ROOT":
                continue
            if name.startswith(prefix.rstrip("/") + "/"):
                if best is None or len(prefix.rstrip("/")) > len(best["prefix"].rstrip("/")):
                    best = template
        if best is None:
            best = next((t for t in candidates if t["prefix"] == "ROOT"), None)
        return dict(best) if best else None

    @staticmethod
    def _not_found(prefix: str) -> ApiError:
        return ApiError("TemplateNotFoundException",
                        f"The specified repository creation template with prefix '{prefix}' was not "
                        f"found in the registry with id '{ACCOUNT}'")

    def clear(self) -> None:
        with self._lock:
            self._templates.clear()


# --- eventual consistency ------------------------------------------------------------

class Visibility:
    """Per repository: how long a pushed manifest stays invisible, and the manifests
    (digest, tag) still invisible now."""

    MAX_SECONDS = 3600

    def __init__(self):
        self._lock = threading.Lock()
        self._seconds: dict[str, float] = {}
        self._pending: dict[str, list[tuple[str, str | None, float]]] = {}

    def set(self, repository: str, seconds: float) -> None:
        with self._lock:
            if seconds:
                self._seconds[repository] = seconds
            else:
                self._seconds.pop(repository, None)

    def seconds(self, repository: str) -> float:
        with self._lock:
            return self._seconds.get(repository, 0.0)

    def record(self, repository: str, digest: str, tag: str | None) -> None:
        with self._lock:
            seconds = self._seconds.get(repository)
            if seconds:
                self._pending.setdefault(repository, []).append((digest, tag, time.monotonic() + seconds))

    def _live(self, repository: str) -> list[tuple[str, str | None, float]]:
        now = time.monotonic()
        entries = [e for e in self._pending.get(repository, []) if e[2] > now]
        if entries:
            self._pending[repository] = entries
        else:
            self._pending.pop(repository, None)
        return entries

    def active(self, repository: str) -> bool:
        with self._lock:
            return bool(self._live(repository))

    def hidden(self, repository: str) -> tuple[set[str], set[str]]:
        """(digests, tags) invisible right now."""
        with self._lock:
            entries = self._live(repository)
        return {e[0] for e in entries}, {e[1] for e in entries if e[1]}

    def clear(self) -> None:
        with self._lock:
            self._seconds.clear()
            self._pending.clear()


# --- per-repository modes ------------------------------------------------------------

class Modes:
    """"ecr" (the default) or "reference" (the plain registry's own answers), and in ECR
    mode what a later PATCH of an upload session does: "drop" (default) or "keep"."""

    MODES = ("ecr", "reference")
    PATCHES = ("drop", "keep")

    def __init__(self):
        self._lock = threading.Lock()
        self._modes: dict[str, tuple[str, str]] = {}

    def set(self, repository: str, mode: str, patches: str) -> None:
        with self._lock:
            if mode == "ecr" and patches == "drop":
                self._modes.pop(repository, None)
            else:
                self._modes[repository] = (mode, patches)

    def get(self, repository: str) -> tuple[str, str]:
        with self._lock:
            return self._modes.get(repository, ("ecr", "drop"))

    def clear(self) -> None:
        with self._lock:
            self._modes.clear()


# --- referrer pushes ------------------------------------------------------------------

class RefuseReferrers:
    """Repositories where every manifest PUT carrying a `subject` is refused the way ECR
    refused some (POST /referrers): for the client's "refused referrer" path."""

    def __init__(self):
        self._lock = threading.Lock()
        self._refusing: set[str] = set()

    def set(self, repository: str, refuse: bool) -> None:
        with self._lock:
            (self._refusing.add if refuse else self._refusing.discard)(repository)

    def get(self, repository: str) -> bool:
        with self._lock:
            return repository in self._refusing

    def clear(self) -> None:
        with self._lock:
            self._refusing.clear()


# --- counters for tests --------------------------------------------------------------

class Stats:
    COUNTERS = ("patches", "max_patches_per_session", "dropped_patches", "monolithic_puts",
                "mount_attempts", "mounts", "manifest_puts", "expired_token_refusals",
                "blob_redirects", "referrer_refusals")

    def __init__(self):
        self._lock = threading.Lock()
        self._stats: dict[str, dict] = {}

    def _of(self, repository: str) -> dict:
        return self._stats.setdefault(repository, dict({c: 0 for c in self.COUNTERS},
                                                        created_on_push=False))

    def bump(self, repository: str, counter: str, n: int = 1) -> None:
        with self._lock:
            self._of(repository)[counter] += n

    def at_least(self, repository: str, counter: str, value: int) -> None:
        with self._lock:
            stats = self._of(repository)
            stats[counter] = max(stats[counter], value)

    def set(self, repository: str, key: str, value) -> None:
        with self._lock:
            self._of(repository)[key] = value

    def get(self, repository: str) -> dict:
        with self._lock:
            return dict(self._stats.get(repository) or self._of(repository))

    def clear(self, repository: str | None = None) -> None:
        with self._lock:
            if repository is None:
                self._stats.clear()
            else:
                self._stats.pop(repository, None)


# --- blob upload sessions ------------------------------------------------------------

class Uploads:
    """Upload sessions by the UUID in their path: how many PATCHes each had, and what the
    first one's answer said (Location, Range, Docker-Upload-UUID)."""

    TTL = DAY

    def __init__(self):
        self._lock = threading.Lock()
        self._sessions: dict[str, dict] = {}

    def patch(self, session: str) -> tuple[int, dict | None]:
        """Count a PATCH; (its number in the session, the first PATCH's answer or None)."""
        now = time.monotonic()
        with self._lock:
            state = self._sessions.setdefault(session, {"patches": 0, "first": None, "seen": now})
            state["patches"] += 1
            state["seen"] = now
            if len(self._sessions) > 4096:
                for key, value in list(self._sessions.items()):
                    if value["seen"] + self.TTL < now:
                        del self._sessions[key]
            return state["patches"], state["first"]

    def first_answer(self, session: str, headers: dict) -> None:
        with self._lock:
            state = self._sessions.get(session)
            if state is not None and state["first"] is None:
                state["first"] = headers

    def finish(self, session: str) -> dict | None:
        with self._lock:
            return self._sessions.pop(session, None)

    def clear(self) -> None:
        with self._lock:
            self._sessions.clear()


# --- presigned blob URLs -------------------------------------------------------------

class Presigned:
    """S3's side of ECR's blob redirects: signature -> (registry path, Authorization to
    use there, expiry). Reusable until they expire, as presigned URLs are."""

    TTL = 3600

    def __init__(self):
        self._lock = threading.Lock()
        self._urls: dict[str, tuple[str, str, float]] = {}

    def add(self, path: str, authorization: str) -> str:
        token = uuid.uuid4().hex + uuid.uuid4().hex
        now = time.monotonic()
        with self._lock:
            self._urls[token] = (path, authorization, now + self.TTL)
            if len(self._urls) % 512 == 0:
                for key, (_, _, until) in list(self._urls.items()):
                    if until < now:
                        del self._urls[key]
        return token

    def get(self, token: str) -> tuple[str, str] | None:
        with self._lock:
            found = self._urls.get(token)
        if found is None or found[2] < time.monotonic():
            return None
        return found[0], found[1]

    def clear(self) -> None:
        with self._lock:
            self._urls.clear()


# --- STS: assumed roles (front_sts.py) and the deny switch ----------------------------

class AssumedRoles:
    """Every AssumeRole that went through the front, and the account and ARN of the
    credentials it returned (moto issues them; the front needs to know whose they are to
    answer GetAuthorizationToken and to refuse cross-account calls)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._calls: list[dict] = []
        self._keys: dict[str, tuple[str, str]] = {}
        # Roles whose trust policy does not trust the caller (POST /sts {"deny": [...]}).
        self._denied: set[str] = set()

    def deny(self, roles: list[str]) -> None:
        with self._lock:
            self._denied = set(roles)

    def denied(self, role: str | None) -> bool:
        with self._lock:
            return role in self._denied

    def record(self, call: dict, access_key: str | None, account: str | None, arn: str | None) -> None:
        with self._lock:
            self._calls.append(call)
            if access_key and account:
                self._keys[access_key] = (account, arn or "")

    def principal(self, access_key: str) -> tuple[str, str] | None:
        """(account, assumed-role ARN) of credentials AssumeRole returned, else None."""
        with self._lock:
            return self._keys.get(access_key)

    def calls(self) -> list[dict]:
        with self._lock:
            return [dict(c) for c in self._calls]

    def clear(self) -> None:
        with self._lock:
            self._calls.clear()
            self._keys.clear()
            self._denied.clear()


class Denies:
    """POST /deny: (account or "public", repository) pairs every call is refused for."""

    def __init__(self):
        self._lock = threading.Lock()
        self._pairs: set[tuple[str, str]] = set()

    def add(self, account: str, repository: str) -> None:
        with self._lock:
            self._pairs.add((account, repository))

    def remove(self, account: str, repository: str) -> None:
        with self._lock:
            self._pairs.discard((account, repository))

    def denied(self, account: str, repository) -> bool:
        with self._lock:
            return (account, repository) in self._pairs

    def snapshot(self) -> list[dict]:
        with self._lock:
            return [{"account": a, "repository": r} for a, r in sorted(self._pairs)]

    def clear(self) -> None:
        with self._lock:
            self._pairs.clear()


class EcrState:
    def __init__(self):
        self.tokens = Tokens()
        self.settings = AccountSettings()
        self.templates = Templates()
        self.visibility = Visibility()
        self.modes = Modes()
        self.stats = Stats()
        self.uploads = Uploads()
        self.presigned = Presigned()
        self.refuse_referrers = RefuseReferrers()
        self.assumed = AssumedRoles()
        self.denies = Denies()
        from front_public import PublicState
        self.public = PublicState()
        from front_kms import KmsRules
        from front_signing import Signing
        self.signing = Signing()
        self.kms = KmsRules()
        from front_replication import Replication
        self.replication = Replication()

    def clear(self) -> None:
        for part in (self.tokens, self.settings, self.templates, self.visibility, self.modes,
                     self.stats, self.uploads, self.presigned, self.refuse_referrers,
                     self.signing, self.kms, self.assumed, self.denies, self.public,
                     self.replication):
            part.clear()


__all__ = ["ApiError", "EcrState", "SpecError", "check_mutability", "MUTABILITIES"]
