"""OCI 1.1 referrers, one index for both APIs: the registry's `GET /v2/<name>/referrers/
<digest>` (front_registry.py) and the ECR API's `ListImageReferrers` (front_api.py) both
list the manifests moto holds for the repository whose `subject.digest` is the digest, so
the two always agree (docker-registry 2.8 has no referrers API of its own).
"""
from __future__ import annotations

import json

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
INDEX_TYPES = (OCI_INDEX, DOCKER_LIST)
EMPTY_CONFIG = "application/vnd.oci.empty.v1+json"
# The OCI empty descriptor's blob: the 2 bytes `{}`.
EMPTY_BLOB = b"{}"
EMPTY_DIGEST = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"


def parse(raw: str | bytes | None) -> dict:
    try:
        doc = json.loads(raw or "{}")
    except ValueError:
        return {}
    return doc if isinstance(doc, dict) else {}


def artifact_type(manifest: dict) -> str | None:
    """The descriptor's artifactType as the distribution spec (v1.1, listing referrers)
    sets it: the manifest's `artifactType`, else its config's mediaType."""
    value = manifest.get("artifactType")
    if isinstance(value, str) and value:
        return value
    value = (manifest.get("config") or {}).get("mediaType")
    return value if isinstance(value, str) and value else None


def subject_of(manifest: dict) -> str | None:
    digest = (manifest.get("subject") or {}).get("digest") if isinstance(manifest.get("subject"), dict) else None
    return digest if isinstance(digest, str) else None


def descriptors(images: list[dict], subject: str, artifact_types=None, hidden=frozenset()) -> list[dict]:
    """Descriptors (mediaType, digest, size, artifactType, annotations) of the images
    (BatchGetImage's `images`) whose subject is `subject`, sorted by digest; with
    `artifact_types`, only those of these types."""
    found = {}
    for image in images:
        raw = image.get("imageManifest") or ""
        manifest = parse(raw)
        if subject_of(manifest) != subject:
            continue
        digest = image["imageId"]["imageDigest"]
        if digest in hidden or digest in found:
            continue
        kind = artifact_type(manifest)
        if artifact_types and kind not in artifact_types:
            continue
        entry = {"mediaType": manifest.get("mediaType") or image.get("imageManifestMediaType") or OCI_MANIFEST,
                 "digest": digest, "size": len(raw.encode())}
        if kind:
            entry["artifactType"] = kind
        if isinstance(manifest.get("annotations"), dict) and manifest["annotations"]:
            entry["annotations"] = manifest["annotations"]
        found[digest] = entry
    return [found[d] for d in sorted(found)]


def index(entries: list[dict]) -> dict:
    """The referrers API's answer: an OCI image index of the descriptors."""
    return {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}
