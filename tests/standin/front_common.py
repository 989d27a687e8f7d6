"""Names and small helpers shared by the front's modules (see front.py)."""
from __future__ import annotations

import json
import logging
import re
import time

ACCOUNT = "123456789012"
REGION = "us-east-1"
REGISTRY_HOST = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com"
API_HOST = f"api.ecr.{REGION}.amazonaws.com"
# The API's VPC endpoint name (scripts/standin VPCE_API_HOST), served as the API.
VPCE_API_HOST = f"vpce-0standin-api.api.ecr.{REGION}.vpce.amazonaws.com"
# AWS KMS's host for the region (scripts/standin puts it in /etc/hosts, on the API's address,
# and in the front's certificate): forwarded to moto's KMS (front_kms.py).
KMS_HOST = f"kms.{REGION}.amazonaws.com"
# Where ECR's blob GETs redirect to: S3's bucket for the region (served by the front,
# on the API's address; scripts/standin puts it in /etc/hosts and the certificate).
S3_HOST = f"prod-{REGION}-starport-layer-bucket.s3.{REGION}.amazonaws.com"
# The path prefix under which the front serves S3's side of a redirect (on S3_HOST, and
# on API_HOST for clients of older fronts).
S3_PREFIX = "/starport-layer-bucket"

# The password the registry's htpasswd accepts (moto's fixed token, kept for scripts).
FIXED_PASSWORD = f"{ACCOUNT}-auth-token"
# The access key id whose account view the fixed password belongs to: the one
# `scripts/standin env` exports.
DEFAULT_ACCESS_KEY = "AKIAIOSFODNN7EXAMPLE"

MANIFEST_LIMIT = 4 * 1024 * 1024  # ECR's manifest size limit (API model: ImageManifest max)
LAYER_LIMIT = 500                 # measured on ECR (spinframework/spin#1787), undocumented

TARGET_PREFIX = "AmazonEC2ContainerRegistry_V20150921."
CREDENTIAL = re.compile(r"Credential=([A-Za-z0-9]+)/")

log = logging.getLogger("front")


class ClientGone(Exception):
    """The downstream client went away; nothing useful can be sent to it any more."""


class UpstreamGone(Exception):
    """The upstream closed the connection before answering."""


class SpecError(ValueError):
    """A control-API body (or an API request) that does not describe anything valid."""


def access_key_of(authorization: str | None) -> str:
    """The SigV4 access key id that signed a request ("" when unsigned)."""
    m = CREDENTIAL.search(authorization or "")
    return m[1] if m else ""


def epoch(seconds: float | None = None) -> float:
    """A timestamp as ECR's JSON protocol sends it: epoch seconds, milliseconds kept."""
    return round(time.time() if seconds is None else seconds, 3)


def query_params(query: str) -> list[tuple[str, str]]:
    """A query string's pairs, in order, undecoded (values go back upstream as they came)."""
    return [tuple(p.split("=", 1)) if "=" in p else (p, "") for p in query.split("&") if p]


def wildcard_match(pattern: str, text: str) -> bool:
    """ECR's WILDCARD filter: `*` matches any run of characters, the rest is literal,
    and the whole tag must match."""
    return re.fullmatch(".*".join(re.escape(part) for part in pattern.split("*")), text) is not None


def tag_is_immutable(repo: dict, tag: str) -> bool:
    """Whether `tag` is immutable in a repository as DescribeRepositories shows it: the
    base setting, inverted for a tag an exclusion filter matches."""
    mutability = repo.get("imageTagMutability") or "MUTABLE"
    immutable = mutability.startswith("IMMUTABLE")
    if mutability.endswith("_WITH_EXCLUSION"):
        filters = repo.get("imageTagMutabilityExclusionFilters") or []
        if any(wildcard_match(f.get("filter", ""), tag) for f in filters):
            return not immutable
    return immutable


def json_dumps(payload) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode()
