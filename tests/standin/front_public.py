"""ECR Public: its API (moto has none) and its registry host, answered by the front.

  api.ecr-public.us-east-1.amazonaws.com   the API (botocore's endpoint rules for
                                           `ecr-public`: https://api.ecr-public.{Region}.
                                           {dnsSuffix}; JSON 1.1, target prefix
                                           SpencerFrontendService, model 2020-10-30).
                                           us-west-2's name is served too, so a client can
                                           see GetAuthorizationToken refused outside us-east-1.
  public.ecr.aws                           the registry: /v2/<alias>/<repository>/..., the
                                           alias `standin`; the docker-registry holds it
                                           under the internal prefix `standin-public/`.

State (repositories, catalog data, images, tokens, counters) is in memory (PublicState).

Registry authentication, as public.ecr.aws answers (README's conformance table):
  - `Authorization: Bearer <authorizationToken>`, the string GetAuthorizationToken
    returned, as is: push and pull (kreuzwerker/terraform-provider-docker#666);
  - `Basic ...`: 400 DENIED "Your Authorization Token is invalid." (same source);
  - an expired or unknown Bearer token: 400 DENIED, no challenge (aws/containers-roadmap#2835);
  - no Authorization: 401 with a Bearer challenge (realm https://public.ecr.aws/token/),
    whose token service hands out anonymous pull-only tokens (dependabot/proxy#157,
    lablup/backend.ai#2549); a pull token cannot push (403 DENIED).
No cross-repository mount (aws/containers-roadmap#1459): `mount=` is dropped, 202.
"""
from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import threading
import time
import uuid
from urllib.parse import urlsplit

from front_common import ACCOUNT, MANIFEST_LIMIT, access_key_of, epoch, json_dumps, log
from front_state import ApiError

PUBLIC_HOST = "public.ecr.aws"
PUBLIC_API_HOSTS = {"api.ecr-public.us-east-1.amazonaws.com": "us-east-1",
                    "api.ecr-public.us-west-2.amazonaws.com": "us-west-2"}
ALIAS = "standin"
INTERNAL = "standin-public"           # registry path: /v2/standin-public/<alias>/<repository>
TARGET_PREFIX = "SpencerFrontendService."
JSON_11 = "application/x-amz-json-1.1"
CHALLENGE = f'Bearer realm="https://{PUBLIC_HOST}/token/",service="{PUBLIC_HOST}",scope="aws"'
INVALID_TOKEN = "Your Authorization Token is invalid."
EXPIRED_TOKEN = "Your Authorization Token has expired."   # wording unconfirmed
REPO_PATH = re.compile(r"^/v2/(?P<name>.+)/(?P<kind>manifests|blobs|tags|referrers)/(?P<rest>.*)$")
NAME = re.compile(r"^(?:[a-z0-9]+(?:[._-][a-z0-9]+)*/)*[a-z0-9]+(?:[._-][a-z0-9]+)*$")
# RepositoryCatalogDataInput: the values the Gallery shows as badges (API model docs).
ARCHITECTURES = {"ARM", "ARM 64", "x86", "x86-64"}
OPERATING_SYSTEMS = {"Linux", "Windows"}
DAY = 86400


class PublicState:
    DEFAULT_LIFETIME = 12 * 3600   # API model, AuthorizationData: "valid for 12 hours"

    def __init__(self):
        self._lock = threading.Lock()
        self.clear()

    def clear(self) -> None:
        with getattr(self, "_lock", threading.Lock()):
            self.repositories: dict[str, dict] = {}
            self.catalog: dict[str, dict] = {}
            self.images: dict[str, dict[str, dict]] = {}
            self.tokens: dict[str, tuple[str, float]] = {}
            self.lifetime = self.DEFAULT_LIFETIME
            self.deny_bearer = False
            self.calls: dict[str, int] = {}

    def count(self, op: str) -> None:
        with self._lock:
            self.calls[op] = self.calls.get(op, 0) + 1

    def issue(self, kind: str) -> tuple[str, float]:
        """A registry token: "push" (GetAuthorizationToken) or "pull" (anonymous)."""
        with self._lock:
            expires = time.time() + self.lifetime
            token = base64.b64encode(os.urandom(48)).decode()
            if kind == "push":
                token = base64.b64encode(f"AWS:{token}".encode()).decode()
            self.tokens[token] = (kind, expires)
            return token, expires

    def check(self, token: str) -> str:
        """"push" | "pull" | "expired" | "unknown"."""
        with self._lock:
            found = self.tokens.get(token)
        if found is None:
            return "unknown"
        return found[0] if time.time() < found[1] else "expired"

    def snapshot(self) -> dict:
        with self._lock:
            return {"calls": dict(self.calls), "token_lifetime": self.lifetime,
                    "deny_bearer": self.deny_bearer,
                    "repositories": sorted(self.repositories),
                    "images": {r: sorted(i) for r, i in self.images.items()}}


def repository_shape(name: str, created: float) -> dict:
    return {"repositoryArn": f"arn:aws:ecr-public::{ACCOUNT}:repository/{name}",
            "registryId": ACCOUNT, "repositoryName": name,
            "repositoryUri": f"{PUBLIC_HOST}/{ALIAS}/{name}", "createdAt": epoch(created)}


def invalid(message: str) -> ApiError:
    return ApiError("InvalidParameterException", message)


def check_catalog(data) -> dict:
    """RepositoryCatalogDataInput, validated as the model bounds it; the stored
    RepositoryCatalogData (logoUrl instead of the blob)."""
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise invalid("Invalid parameter at 'catalogData'")
    unknown = set(data) - {"description", "architectures", "operatingSystems", "logoImageBlob",
                           "aboutText", "usageText"}
    if unknown:
        raise invalid(f"Invalid parameter at 'catalogData': unknown field {sorted(unknown)[0]}")
    out = {}
    for key, limit in (("description", 1024), ("aboutText", 25600), ("usageText", 25600)):
        if key in data:
            if not isinstance(data[key], str) or len(data[key]) > limit:
                raise invalid(f"Invalid parameter at 'catalogData.{key}' failed to satisfy "
                              f"constraint: 'Member must have length less than or equal to {limit}'")
            out[key] = data[key]
    for key, allowed in (("architectures", ARCHITECTURES), ("operatingSystems", OPERATING_SYSTEMS)):
        if key in data:
            values = data[key]
            if not isinstance(values, list) or len(values) > 50 or not all(isinstance(v, str) for v in values):
                raise invalid(f"Invalid parameter at 'catalogData.{key}'")
            bad = [v for v in values if v not in allowed]
            if bad:
                # The model's docs: only these values are supported; the exact refusal
                # (error or stored-but-hidden) is unconfirmed: refused here (stricter).
                raise invalid(f"Invalid parameter at 'catalogData.{key}': unsupported value "
                              f"'{bad[0]}' (supported: {', '.join(sorted(allowed))})")
            out[key] = values
    if "logoImageBlob" in data:
        try:
            logo = base64.b64decode(data["logoImageBlob"], validate=True)
        except (ValueError, TypeError):
            raise invalid("Invalid parameter at 'catalogData.logoImageBlob'") from None
        if len(logo) > 512000:
            raise invalid("Invalid parameter at 'catalogData.logoImageBlob' failed to satisfy "
                          "constraint: 'Member must have length less than or equal to 512000'")
        out["logoUrl"] = (f"https://d2c6p0j6pmrdtp.cloudfront.net/logos/{uuid.uuid4()}/"
                          f"{hashlib.sha256(logo).hexdigest()[:16]}.png")
    return out


class PublicMixin:
    """Mixed into front.Handler."""

    # --- the API -----------------------------------------------------------------------

    PUBLIC_OPERATIONS = {
        "GetAuthorizationToken": "_pub_get_authorization_token",
        "DescribeRegistries": "_pub_describe_registries",
        "CreateRepository": "_pub_create_repository",
        "DescribeRepositories": "_pub_describe_repositories",
        "GetRepositoryCatalogData": "_pub_get_catalog",
        "PutRepositoryCatalogData": "_pub_put_catalog",
        "DescribeImages": "_pub_describe_images",
        "DescribeImageTags": "_pub_describe_image_tags",
        "BatchDeleteImage": "_pub_batch_delete_image",
        "DeleteRepository": "_pub_delete_repository",
    }

    @property
    def _pub(self) -> PublicState:
        return self.server.state.public

    def _public_prefix(self) -> str:
        return INTERNAL

    def _public_api(self, region: str):
        target = self.headers.get("X-Amz-Target") or ""
        body = self._read_body(MANIFEST_LIMIT) or b"{}"
        op = target[len(TARGET_PREFIX):] if target.startswith(TARGET_PREFIX) else ""
        method = self.PUBLIC_OPERATIONS.get(op)
        if method is None:
            return self._api_error(400, "UnknownOperationException", f"Unknown operation {target}")
        self._pub.count(op)
        try:
            request = json.loads(body)
            if not isinstance(request, dict):
                raise ValueError
        except ValueError:
            return self._api_error(400, "SerializationException", "Start of structure or map found where not expected")
        try:
            name = request.get("repositoryName")
            if name is not None and (not isinstance(name, str) or not 2 <= len(name) <= 205
                                     or not NAME.match(name)):
                raise invalid("Invalid parameter at 'repositoryName' failed to satisfy constraint: "
                              "'must satisfy regular expression "
                              "'(?:[a-z0-9]+(?:[._-][a-z0-9]+)*/)*[a-z0-9]+(?:[._-][a-z0-9]+)*''")
            if isinstance(name, str) and self.server.state.denies.denied("public", name):
                _, arn = self._principal(access_key_of(self.headers.get("Authorization")))
                self._injected = "denied"
                from front_sts import not_authorized
                raise ApiError("AccessDeniedException", not_authorized(
                    arn, f"ecr-public:{op}", f"arn:aws:ecr-public::{ACCOUNT}:repository/{name}"))
            payload = getattr(self, method)(request, region)
        except ApiError as exc:
            return self._api_error(exc.status, exc.type, exc.message)
        self._answer(200, JSON_11, json_dumps(payload), [("x-amzn-RequestId", str(uuid.uuid4()))])

    def _pub_repository(self, name) -> dict:
        repo = self._pub.repositories.get(name)
        if repo is None:
            raise ApiError("RepositoryNotFoundException",
                           f"The repository with name '{name}' does not exist in the registry with id '{ACCOUNT}'")
        return repo

    def _pub_get_authorization_token(self, _request: dict, region: str) -> dict:
        if region != "us-east-1":
            # The model lists UnsupportedCommandException ("The action isn't supported in
            # this Region.") for it; the CLI docs: get-login-password needs us-east-1.
            raise ApiError("UnsupportedCommandException", "The action isn't supported in this Region.")
        if self._pub.deny_bearer:
            _, arn = self._principal(access_key_of(self.headers.get("Authorization")))
            from front_sts import not_authorized
            raise ApiError("AccessDeniedException",
                           not_authorized(arn, "sts:GetServiceBearerToken", "*"))
        token, expires = self._pub.issue("push")
        return {"authorizationData": {"authorizationToken": token, "expiresAt": epoch(expires)}}

    def _pub_describe_registries(self, _request: dict, _region: str) -> dict:
        return {"registries": [{
            "registryId": ACCOUNT, "registryArn": f"arn:aws:ecr-public::{ACCOUNT}:registry/{ACCOUNT}",
            "registryUri": f"{PUBLIC_HOST}/{ALIAS}", "verified": False,
            "aliases": [{"name": ALIAS, "status": "ACTIVE", "primaryRegistryAlias": True,
                         "defaultRegistryAlias": False}]}]}

    def _pub_create_repository(self, request: dict, _region: str) -> dict:
        name = request.get("repositoryName")
        if not isinstance(name, str):
            raise invalid("Invalid parameter at 'repositoryName': required")
        catalog = check_catalog(request.get("catalogData"))
        tags = request.get("tags") or []
        if not isinstance(tags, list) or len(tags) > 200 or not all(
                isinstance(t, dict) and isinstance(t.get("Key"), str) and 1 <= len(t["Key"]) <= 128
                and isinstance(t.get("Value", ""), str) and len(t.get("Value", "")) <= 256 for t in tags):
            raise ApiError("InvalidTagParameterException", "Invalid parameter at 'tags'")
        with self._pub._lock:
            if name in self._pub.repositories:
                raise ApiError("RepositoryAlreadyExistsException",
                               f"The repository with name '{name}' already exists in the registry with id '{ACCOUNT}'")
            repo = repository_shape(name, time.time())
            self._pub.repositories[name] = dict(repo, tags=tags)
            self._pub.catalog[name] = catalog
            self._pub.images[name] = {}
        return {"repository": repo, "catalogData": catalog}

    def _pub_describe_repositories(self, request: dict, _region: str) -> dict:
        names = request.get("repositoryNames")
        repos = self._pub.repositories
        if names is None:
            chosen = [repos[n] for n in sorted(repos)]
        else:
            chosen = [self._pub_repository(n) for n in names]
        return {"repositories": [{k: v for k, v in r.items() if k != "tags"} for r in chosen]}

    def _pub_get_catalog(self, request: dict, _region: str) -> dict:
        self._pub_repository(request.get("repositoryName"))
        return {"catalogData": self._pub.catalog.get(request["repositoryName"], {})}

    def _pub_put_catalog(self, request: dict, _region: str) -> dict:
        self._pub_repository(request.get("repositoryName"))
        if "catalogData" not in request:
            raise invalid("Invalid parameter at 'catalogData': required")
        catalog = check_catalog(request["catalogData"])
        self._pub.catalog[request["repositoryName"]] = catalog
        return {"catalogData": catalog}

    def _pub_find(self, name: str, image_id: dict) -> str | None:
        images = self._pub.images.get(name, {})
        if image_id.get("imageDigest"):
            digest = image_id["imageDigest"]
            if digest in images and (not image_id.get("imageTag") or image_id["imageTag"] in images[digest]["tags"]):
                return digest
            return None
        for digest, image in images.items():
            if image_id.get("imageTag") in image["tags"]:
                return digest
        return None

    def _pub_detail(self, name: str, digest: str, image: dict, referenced: bool = False) -> dict:
        detail = {"imageDigest": digest, "imageSizeInBytes": image["size"],
                  "imagePushedAt": epoch(image["pushed"]),
                  "imageManifestMediaType": image["mediaType"]}
        if image.get("artifactMediaType"):
            detail["artifactMediaType"] = image["artifactMediaType"]
        if not referenced:
            detail = {"registryId": ACCOUNT, "repositoryName": name, **detail}
            if image["tags"]:
                detail["imageTags"] = list(image["tags"])
        return detail

    def _pub_describe_images(self, request: dict, _region: str) -> dict:
        name = request.get("repositoryName")
        self._pub_repository(name)
        images = self._pub.images.get(name, {})
        asked = request.get("imageIds")
        if asked is None:
            digests = sorted(images, key=lambda d: images[d]["pushed"])
        else:
            digests = []
            for image_id in asked:
                digest = self._pub_find(name, image_id if isinstance(image_id, dict) else {})
                if digest is None:
                    raise ApiError("ImageNotFoundException",
                                   f"The image with imageId {{imageDigest:'{image_id.get('imageDigest', 'null')}', "
                                   f"imageTag:'{image_id.get('imageTag', 'null')}'}} does not exist within the "
                                   f"repository with name '{name}' in the registry with id '{ACCOUNT}'")
                digests.append(digest)
        return {"imageDetails": [self._pub_detail(name, d, images[d]) for d in digests]}

    def _pub_describe_image_tags(self, request: dict, _region: str) -> dict:
        name = request.get("repositoryName")
        self._pub_repository(name)
        details = []
        for digest, image in self._pub.images.get(name, {}).items():
            for tag, created in image["tags"].items():
                details.append({"imageTag": tag, "createdAt": epoch(created),
                                "imageDetail": self._pub_detail(name, digest, image, referenced=True)})
        details.sort(key=lambda d: d["createdAt"])
        return {"imageTagDetails": details}

    def _pub_batch_delete_image(self, request: dict, _region: str) -> dict:
        name = request.get("repositoryName")
        self._pub_repository(name)
        asked = request.get("imageIds")
        if not isinstance(asked, list) or not 1 <= len(asked) <= 100:
            raise invalid("Invalid parameter at 'imageIds'")
        deleted, failures = [], []
        images = self._pub.images.setdefault(name, {})
        for image_id in asked:
            digest = self._pub_find(name, image_id if isinstance(image_id, dict) else {})
            if digest is None:
                failures.append({"imageId": image_id, "failureCode": "ImageNotFound",
                                 "failureReason": "Requested image not found"})
                continue
            image = images[digest]
            if image_id.get("imageTag") and not image_id.get("imageDigest"):
                image["tags"].pop(image_id["imageTag"], None)   # a tag goes; the image with its last tag
                if image["tags"]:
                    deleted.append({"imageDigest": digest, "imageTag": image_id["imageTag"]})
                    continue
            del images[digest]
            self._pub_registry_delete(name, digest)
            deleted.append(dict({"imageDigest": digest}, **({"imageTag": image_id["imageTag"]}
                                                              if image_id.get("imageTag") else {})))
        return {"imageIds": deleted, "failures": failures}

    def _pub_delete_repository(self, request: dict, _region: str) -> dict:
        name = request.get("repositoryName")
        repo = self._pub_repository(name)
        images = self._pub.images.get(name, {})
        if images and not request.get("force"):
            raise ApiError("RepositoryNotEmptyException",
                           f"The repository with name '{name}' in registry with id '{ACCOUNT}' cannot be "
                           "deleted because it still contains images")
        for digest in list(images):
            self._pub_registry_delete(name, digest)
        with self._pub._lock:
            self._pub.repositories.pop(name, None)
            self._pub.catalog.pop(name, None)
            self._pub.images.pop(name, None)
        return {"repository": {k: v for k, v in repo.items() if k != "tags"}}

    def _pub_registry_delete(self, name: str, digest: str) -> None:
        import http.client
        from front_registry import REGISTRY_AUTH
        conn = http.client.HTTPConnection(*self.server.registry_addr, timeout=30)
        try:
            conn.request("DELETE", f"/v2/{INTERNAL}/{ALIAS}/{name}/manifests/{digest}",
                         headers={"Authorization": REGISTRY_AUTH})
            conn.getresponse().read()
        finally:
            conn.close()

    # --- the registry host -------------------------------------------------------------

    def _public_denied(self, status: int, message: str):
        self._drain_body()
        self._rule = "public-auth"
        self._json_error(status, "DENIED", message)

    def _public_registry(self):
        from front_registry import REGISTRY_AUTH
        parts = urlsplit(self.path)
        path = parts.path
        if path.rstrip("/") == "/token":
            # The anonymous token service of the challenge: pull-only tokens.
            self._drain_body()
            token, _ = self._pub.issue("pull")
            self._rule = "public-anonymous-token"
            return self._answer(200, "application/json", json_dumps({"token": token}))
        header = self.headers.get("Authorization") or ""
        if not header:
            self._drain_body()
            self._status = 401
            payload = json_dumps({"errors": [{"code": "UNAUTHORIZED", "message": "Not Authorized"}]})
            return self._answer(401, "application/json", payload, [("WWW-Authenticate", CHALLENGE)])
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer":
            return self._public_denied(400, INVALID_TOKEN)
        kind = self._pub.check(token.strip())
        if kind == "unknown":
            return self._public_denied(400, INVALID_TOKEN)
        if kind == "expired":
            return self._public_denied(400, EXPIRED_TOKEN)
        del self.headers["Authorization"]
        self.headers["Authorization"] = REGISTRY_AUTH
        if path in ("/v2", "/v2/"):
            return self._forward(self.server.registry_addr)
        m = REPO_PATH.match(path)
        if not m:
            self._drain_body()
            return self._json_error(404, "NOT_FOUND", "Not Found")
        name, kind_of_path, rest = m["name"], m["kind"], m["rest"]
        repository = name[len(ALIAS) + 1:] if name.startswith(ALIAS + "/") else None
        writes = self.command not in ("GET", "HEAD")
        if repository is not None and self.server.state.denies.denied("public", repository):
            self._injected = "denied"
            return self._public_denied(403, f"Not authorized to access repository {repository}")
        if writes and kind == "pull":
            # An anonymous token pulls only (wording unconfirmed).
            return self._public_denied(403, "Your Authorization Token does not allow this operation.")
        if repository is None or repository not in self._pub.repositories:
            # Unconfirmed for Public: the private registry's answer.
            self._drain_body()
            return self._json_error(404, "NAME_UNKNOWN",
                                    f"The repository with name '{repository or name}' does not exist in "
                                    f"the registry with id '{ACCOUNT}'")
        self.path = f"/v2/{INTERNAL}/{path[4:]}"
        query = parts.query
        if kind_of_path == "blobs" and self.command == "POST" and rest.rstrip("/") == "uploads":
            kept = [p for p in query.split("&") if p and p.split("=", 1)[0] not in ("mount", "from")]
            if len(kept) != len([p for p in query.split("&") if p]):
                self._rule = "mount-refused"   # aws/containers-roadmap#1459
            query = "&".join(kept)
        if query:
            self.path += "?" + query
        if kind_of_path == "manifests" and self.command == "PUT":
            return self._public_put_manifest(repository, rest)
        self._forward(self.server.registry_addr)

    def _public_put_manifest(self, repository: str, reference: str):
        body = self._read_body(MANIFEST_LIMIT)
        if body is None:
            return self._json_error(405, "UNSUPPORTED", "manifest larger than 4 MiB")
        conn, resp = self._upstream(self.server.registry_addr, body=body)
        try:
            answer = resp.read()
            if resp.status == 201:
                digest = resp.getheader("Docker-Content-Digest") or "sha256:" + hashlib.sha256(body).hexdigest()
                self._public_record(repository, reference, digest, body)
            self._relay(resp, answer, drop=("location",))
        finally:
            conn.close()

    def _public_record(self, repository: str, reference: str, digest: str, body: bytes) -> None:
        """What DescribeImages and DescribeImageTags report for a pushed manifest."""
        try:
            doc = json.loads(body)
        except ValueError:
            doc = {}
        media_type = (self.headers.get("Content-Type") or "").split(";")[0].strip() or doc.get("mediaType") or ""
        now = time.time()
        with self._pub._lock:
            images = self._pub.images.setdefault(repository, {})
            if "layers" in doc:
                size = sum(layer.get("size", 0) for layer in doc["layers"] if isinstance(layer, dict))
            else:  # an index: the largest of its manifests held here (as ECR's ImageDetail)
                size = max([images[m["digest"]]["size"] for m in doc.get("manifests") or []
                            if isinstance(m, dict) and m.get("digest") in images] or [0])
            image = images.setdefault(digest, {"tags": {}, "pushed": now, "size": size,
                                               "mediaType": media_type})
            artifact = doc.get("artifactType") or ((doc.get("config") or {}).get("mediaType")
                                                   if "layers" in doc else None)
            if artifact:
                image["artifactMediaType"] = artifact
            if not reference.startswith("sha256:"):
                for other in images.values():
                    other["tags"].pop(reference, None)   # a tag moves
                image["tags"][reference] = now
        log.info("- - - - public image %s/%s@%s recorded", ALIAS, repository, digest)
