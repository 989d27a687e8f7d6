"""The front's own client of moto (plain HTTP, never through the front): the few ECR
API calls the registry rules need."""
from __future__ import annotations

import json

from front_common import REGION, log


class Moto:
    """The few ECR API calls the registry rules need, against moto's plain-HTTP endpoint."""

    def __init__(self, url: str, region: str = REGION, account: str | None = None):
        import boto3  # imported here so `front.py --help` stays instant
        from botocore.config import Config

        self.url = url
        self.client = boto3.client(
            "ecr", endpoint_url=url, region_name=region,
            aws_access_key_id="standin", aws_secret_access_key="standin",
            config=Config(retries={"max_attempts": 2, "mode": "standard"},
                          max_pool_connections=64, connect_timeout=5, read_timeout=30),
        )
        self.errors = self.client.exceptions
        if account is not None:
            # moto acts in the account this header names (moto 5.2,
            # BaseResponse.get_current_account), not the access key's.
            def in_account(request, **_):
                request.headers["x-moto-account-id"] = account
            self.client.meta.events.register("before-sign.ecr", in_account)
        # moto's KMS (the same server): resolves the key a KMS request names.
        self.kms = boto3.client(
            "kms", endpoint_url=url, region_name=REGION,
            aws_access_key_id="standin", aws_secret_access_key="standin",
            config=Config(retries={"max_attempts": 2, "mode": "standard"},
                          max_pool_connections=16, connect_timeout=5, read_timeout=30),
        )
        from botocore.exceptions import ParamValidationError
        self.ParamValidationError = ParamValidationError

    def repository(self, name: str) -> dict | None:
        # Deliberately uncached: tests reset moto between cases, and a stale "exists"
        # would let a push succeed that real ECR would refuse.
        try:
            return self.client.describe_repositories(repositoryNames=[name])["repositories"][0]
        except (self.errors.RepositoryNotFoundException, self.errors.InvalidParameterException,
                self.ParamValidationError):
            # ParamValidationError: botocore's own check (e.g. a 1-character name); no
            # such repository can exist, so the client gets NAME_UNKNOWN, not a 502.
            return None

    def kms_key_id(self, key: str) -> str | None:
        """The key id that a key id, key ARN, alias/NAME or alias ARN names (None if none)."""
        try:
            return self.kms.describe_key(KeyId=key)["KeyMetadata"]["KeyId"]
        except Exception:  # noqa: BLE001 - NotFound, a malformed id: moto answers the request itself
            return None

    def digest_of(self, name: str, image_id: dict) -> str | None:
        try:
            details = self.client.describe_images(repositoryName=name, imageIds=[image_id])
        except self.errors.ImageNotFoundException:
            return None
        images = details.get("imageDetails") or []
        return images[0]["imageDigest"] if images else None

    def start_scan(self, name: str, digest: str) -> None:
        """What ECR does on push to a repository with scanOnPush: the scan starts."""
        try:
            self.client.start_image_scan(repositoryName=name, imageId={"imageDigest": digest})
        except self.errors.LimitExceededException:
            pass  # moto allows one scan a day per image: another tag of it started it
        except Exception:  # noqa: BLE001 - the push succeeded; a scan is a side effect
            log.exception("scan on push of %s@%s failed", name, digest)

    def image(self, name: str, tag: str) -> dict | None:
        """The image a tag points at now: imageId, imageManifest, imageManifestMediaType."""
        images = self.client.batch_get_image(repositoryName=name, imageIds=[{"imageTag": tag}])
        return (images.get("images") or [None])[0]

    def put_image(self, name: str, manifest: str, media_type: str | None,
                  tag: str | None, digest: str, previous: dict | None = None) -> None:
        if tag is None and self.digest_of(name, {"imageDigest": digest}):
            # moto 5.2 mishandles a digest-only re-push of a known manifest (it tries to
            # delete tag None); ECR treats it as a no-op, so do we.
            return
        args = {"repositoryName": name, "imageManifest": manifest, "imageDigest": digest}
        if media_type:
            args["imageManifestMediaType"] = media_type
        if tag is not None:
            args["imageTag"] = tag
        try:
            self.client.put_image(**args)
        except self.errors.ImageAlreadyExistsException:
            pass  # identical tag+manifest already recorded: ECR accepts the re-push
        old_digest = previous["imageId"]["imageDigest"] if previous else None
        if old_digest and old_digest != digest and not self.digest_of(name, {"imageDigest": old_digest}):
            # moto 5.2 deletes the image a moved tag used to name; ECR keeps it, untagged
            # (and so does the registry). Put it back so the two stay in step.
            self.client.put_image(
                repositoryName=name, imageManifest=previous["imageManifest"],
                imageManifestMediaType=previous.get("imageManifestMediaType")
                or json.loads(previous["imageManifest"]).get("mediaType"),
                imageDigest=old_digest)


    def images_by_digest(self, name: str, digests) -> dict[str, dict]:
        """digest -> BatchGetImage's image (imageId, imageManifest, imageManifestMediaType)."""
        found: dict[str, dict] = {}
        digests = sorted(set(digests))
        try:
            for start in range(0, len(digests), 100):
                chunk = [{"imageDigest": d} for d in digests[start:start + 100]]
                for image in self.client.batch_get_image(repositoryName=name, imageIds=chunk).get("images") or []:
                    found.setdefault(image["imageId"]["imageDigest"], image)
        except (self.errors.RepositoryNotFoundException, self.ParamValidationError):
            return {}
        return found

    def image_by_digest(self, name: str, digest: str) -> dict | None:
        return self.images_by_digest(name, [digest]).get(digest)

    def manifests(self, name: str) -> list[dict]:
        """Every image of a repository, with its manifest (BatchGetImage's `images`)."""
        ids = []
        for page in self.client.get_paginator("list_images").paginate(repositoryName=name):
            ids.extend(page.get("imageIds") or [])
        # One entry per digest: BatchGetImage by digest returns the manifest once.
        digests = sorted({i["imageDigest"] for i in ids if i.get("imageDigest")})
        images = []
        for start in range(0, len(digests), 100):
            chunk = [{"imageDigest": d} for d in digests[start:start + 100]]
            images.extend(self.client.batch_get_image(repositoryName=name, imageIds=chunk)
                          .get("images") or [])
        return images

    def references_blob(self, name: str, digest: str) -> bool:
        """Whether a manifest in repository `name` (an image manifest, including one an
        index lists, since those are images of the repository too) names the blob, as
        its config or a layer."""
        try:
            images = self.manifests(name)
        except (self.errors.RepositoryNotFoundException, self.ParamValidationError):
            return False
        for image in images:
            try:
                manifest = json.loads(image.get("imageManifest") or "{}")
            except ValueError:
                continue
            blobs = [manifest.get("config") or {}] + list(manifest.get("layers") or [])
            if any(isinstance(b, dict) and b.get("digest") == digest for b in blobs):
                return True
        return False

    def create_from_template(self, name: str, template: dict) -> dict | None:
        """Create repository `name` as ECR does for a CREATE_ON_PUSH template: its tag
        mutability (and exclusion filters), encryption, resource tags, lifecycle policy
        and repository policy (scan settings come from the registry's scanning
        configuration, which moto applies on creation). None if moto refused."""
        args = {"repositoryName": name,
                "imageTagMutability": template.get("imageTagMutability") or "MUTABLE",
                "encryptionConfiguration": template.get("encryptionConfiguration")
                or {"encryptionType": "AES256"}}
        if template.get("imageTagMutabilityExclusionFilters"):
            args["imageTagMutabilityExclusionFilters"] = template["imageTagMutabilityExclusionFilters"]
        if template.get("resourceTags"):
            args["tags"] = template["resourceTags"]
        try:
            self.client.create_repository(**args)
        except self.errors.RepositoryAlreadyExistsException:
            pass  # a parallel push created it first
        except Exception:  # noqa: BLE001 - the client gets NAME_UNKNOWN, the log says why
            log.exception("creating %s from template %s failed", name, template.get("prefix"))
            return None
        for call, key, arg in ((self.client.put_lifecycle_policy, "lifecyclePolicy", "lifecyclePolicyText"),
                               (self.client.set_repository_policy, "repositoryPolicy", "policyText")):
            if template.get(key):
                try:
                    call(repositoryName=name, **{arg: template[key]})
                except Exception:  # noqa: BLE001
                    log.exception("applying %s of template %s to %s failed", key, template.get("prefix"), name)
        return self.repository(name)
