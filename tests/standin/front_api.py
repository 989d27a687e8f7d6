"""The ECR API operations the front answers itself, or post-processes, instead of moto.

  GetAuthorizationToken           fresh password per call, remembered with its expiry
                                  and the SigV4 access key id that asked (front_state.Tokens)
  GetAccountSetting,              per access key id (BLOB_MOUNTING, BASIC_SCAN_TYPE_VERSION,
  PutAccountSetting               REGISTRY_POLICY_SCOPE); moto 5.2.1 lacks both
  *RepositoryCreationTemplate(s)  create / describe / update / delete; moto lacks them
  ListImageReferrers              from the manifests moto holds (their `subject`, the same
                                  index as the registry's referrers API: front_referrers.py);
                                  moto lacks it
  DescribeImages, BatchGetImage,  forwarded to moto, then manifests still inside a
  ListImages                      /visibility window are taken out of the answer; DescribeImages
                                  also gets what moto leaves out: artifactMediaType,
                                  subjectManifestDigest (referrers), imageStatus
  *SigningConfiguration,          ECR managed signing (front_signing.py); moto lacks them
  DescribeImageSigningStatus
  PutReplicationConfiguration,    private image replication per (account, region)
  DescribeRegistry,               (front_replication.py); moto keeps one rule at most and
  DescribeImageReplicationStatus  lacks the status
  BatchDeleteImage                an image an index of the repository lists is refused
                                  (ImageReferencedByManifestList), the rest forwarded to
                                  moto and deleted from the registry too, so both agree

Shapes follow botocore's service model (ecr 2015-09-21). Errors are the JSON protocol's
{"__type", "message"} with x-amzn-ErrorType.
"""
from __future__ import annotations

import base64
import json
import uuid

from front_common import (ACCOUNT, MANIFEST_LIMIT, REGION, TARGET_PREFIX, access_key_of,
                          json_dumps)
from front_state import ApiError

JSON_11 = "application/x-amz-json-1.1"


class ApiMixin:
    """Mixed into front.Handler; uses its _read_body, _answer, _api_error, _upstream, _relay."""

    API_OPERATIONS = {
        "GetAuthorizationToken": "_api_get_authorization_token",
        "GetAccountSetting": "_api_get_account_setting",
        "PutAccountSetting": "_api_put_account_setting",
        "CreateRepositoryCreationTemplate": "_api_create_template",
        "DescribeRepositoryCreationTemplates": "_api_describe_templates",
        "UpdateRepositoryCreationTemplate": "_api_update_template",
        "DeleteRepositoryCreationTemplate": "_api_delete_template",
        "ListImageReferrers": "_api_list_image_referrers",
        "DescribeImages": "_api_visible_images",
        "BatchGetImage": "_api_visible_images",
        "ListImages": "_api_visible_images",
        "BatchDeleteImage": "_api_batch_delete_image",
        "PutSigningConfiguration": "_api_put_signing_configuration",
        "GetSigningConfiguration": "_api_get_signing_configuration",
        "DeleteSigningConfiguration": "_api_delete_signing_configuration",
        "DescribeImageSigningStatus": "_api_describe_image_signing_status",
        "PutReplicationConfiguration": "_api_put_replication_configuration",
        "DescribeRegistry": "_api_describe_registry",
        "DescribeImageReplicationStatus": "_api_describe_image_replication_status",
    }

    # What the front also answers for the other registries (front_targets); templates and
    # managed signing stay the primary registry's (their calls elsewhere go to moto).
    REGIONAL_OPERATIONS = {"GetAuthorizationToken", "GetAccountSetting", "PutAccountSetting",
                           "ListImageReferrers", "DescribeImages", "BatchGetImage", "ListImages",
                           "BatchDeleteImage", "PutReplicationConfiguration", "DescribeRegistry",
                           "DescribeImageReplicationStatus"}

    def _api_intercept(self) -> bool:
        """Answer (or post-process) the operations above; True if this request was one."""
        target = self.headers.get("X-Amz-Target") or ""
        if not target.startswith(TARGET_PREFIX):
            return False
        action = target[len(TARGET_PREFIX):]
        method = self.API_OPERATIONS.get(action)
        if method is None:
            return False
        if not self.target.primary and action not in self.REGIONAL_OPERATIONS:
            return False
        body = self._read_body(MANIFEST_LIMIT)
        if body is None:
            self._api_error(413, "SerializationException", "request too large")
            return True
        try:
            request = json.loads(body or b"{}")
            if not isinstance(request, dict):
                raise ValueError("not an object")
        except ValueError:
            self._api_error(400, "SerializationException", "Start of structure or map found where not expected")
            return True
        self._action = action
        try:
            getattr(self, method)(request, body)
        except ApiError as exc:
            self._api_error(exc.status, exc.type, exc.message)
        return True

    def _api_ok(self, payload: dict) -> None:
        self._answer(200, JSON_11, json_dumps(payload), [("x-amzn-RequestId", str(uuid.uuid4()))])

    def _access_key(self) -> str:
        return access_key_of(self.headers.get("Authorization"))

    # --- tokens ------------------------------------------------------------------------

    def _api_get_authorization_token(self, request: dict, _body: bytes) -> None:
        # Per registry: the caller's account (or each of registryIds) in the API host's
        # region; the password works at that registry's host only.
        region = getattr(self, "_api_region", REGION)
        registry_ids = request.get("registryIds") or [self.target.account]
        if not isinstance(registry_ids, list) or not all(isinstance(r, str) for r in registry_ids):
            raise ApiError("InvalidParameterException", "Invalid parameter at 'registryIds'")
        access_key = self._access_key()
        data = []
        for registry_id in registry_ids:
            password, expires = self.server.state.tokens.issue(access_key, (registry_id, region))
            data.append({
                "authorizationToken": base64.b64encode(f"AWS:{password}".encode()).decode(),
                "expiresAt": round(expires, 3),
                "proxyEndpoint": f"https://{registry_id}.dkr.ecr.{region}.amazonaws.com",
            })
        self._api_ok({"authorizationData": data})

    # --- account settings --------------------------------------------------------------

    def _api_get_account_setting(self, request: dict, _body: bytes) -> None:
        name = request.get("name")
        value = self.server.state.settings.get(self._access_key(), name)
        self._api_ok({"name": name, "value": value})

    def _api_put_account_setting(self, request: dict, _body: bytes) -> None:
        name, value = request.get("name"), request.get("value")
        if value is None:
            raise ApiError("ValidationException", "1 validation error detected: Value null at "
                           "'value' failed to satisfy constraint: Member must not be null")
        self.server.state.settings.put(self._access_key(), name, value)
        self._api_ok({"name": name, "value": value})

    # --- repository creation templates -------------------------------------------------

    def _api_create_template(self, request: dict, _body: bytes) -> None:
        template = self.server.state.templates.create(request)
        self._api_ok({"registryId": ACCOUNT, "repositoryCreationTemplate": template})

    def _api_update_template(self, request: dict, _body: bytes) -> None:
        template = self.server.state.templates.update(request)
        self._api_ok({"registryId": ACCOUNT, "repositoryCreationTemplate": template})

    def _api_delete_template(self, request: dict, _body: bytes) -> None:
        template = self.server.state.templates.delete(request.get("prefix"))
        self._api_ok({"registryId": ACCOUNT, "repositoryCreationTemplate": template})

    def _api_describe_templates(self, request: dict, _body: bytes) -> None:
        prefixes = request.get("prefixes")
        if prefixes is not None and (not isinstance(prefixes, list)
                                     or not all(isinstance(p, str) for p in prefixes)):
            raise ApiError("InvalidParameterException", "Invalid parameter at 'prefixes'")
        templates = self.server.state.templates.describe(prefixes)
        start, count = self._page(request, len(templates), 1000)
        payload = {"registryId": ACCOUNT, "repositoryCreationTemplates": templates[start:start + count]}
        if start + count < len(templates):
            payload["nextToken"] = str(start + count)
        self._api_ok(payload)

    @staticmethod
    def _page(request: dict, total: int, most: int) -> tuple[int, int]:
        count = request.get("maxResults", most)
        if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= most:
            raise ApiError("InvalidParameterException",
                           f"Invalid parameter at 'maxResults' failed to satisfy constraint: "
                           f"'Member must have value less than or equal to {most}'")
        token = request.get("nextToken")
        try:
            start = int(token) if token is not None else 0
        except (TypeError, ValueError):
            raise ApiError("InvalidParameterException", "Invalid parameter at 'nextToken'") from None
        if not 0 <= start <= total:
            raise ApiError("InvalidParameterException", "Invalid parameter at 'nextToken'")
        return start, count

    # --- referrers -----------------------------------------------------------------------

    def _api_list_image_referrers(self, request: dict, _body: bytes) -> None:
        from front_referrers import descriptors
        name = request.get("repositoryName")
        subject = (request.get("subjectId") or {}).get("imageDigest")
        if not isinstance(name, str) or not isinstance(subject, str):
            raise ApiError("InvalidParameterException",
                           "Invalid parameter: repositoryName and subjectId.imageDigest are required")
        name = self.target.internal(name)
        moto = self.moto
        if moto.repository(name) is None:
            raise self._repository_not_found(name)
        wanted = ((request.get("filter") or {}).get("artifactTypes")) or None
        if wanted is not None and (not isinstance(wanted, list) or len(wanted) > 5):
            raise ApiError("InvalidParameterException", "Invalid parameter at 'filter.artifactTypes' failed to "
                           "satisfy constraint: 'Member must have length less than or equal to 5'")
        state = self.server.state
        state.signing.settle(name)
        hidden, _ = state.visibility.hidden(name)
        referrers = [dict(entry, artifactStatus="ACTIVE")
                     for entry in descriptors(moto.manifests(name), subject, wanted, hidden)]
        start, count = self._page(request, len(referrers), 50)
        payload = {"referrers": referrers[start:start + count]}
        if start + count < len(referrers):
            payload["nextToken"] = str(start + count)
        self._api_ok(payload)

    def _repository_not_found(self, name: str) -> ApiError:
        return ApiError("RepositoryNotFoundException",
                        f"The repository with name '{self.target.public(name)}' does not exist in the "
                        f"registry with id '{self.target.account}'")

    # --- managed signing -----------------------------------------------------------------

    def _api_put_signing_configuration(self, request: dict, _body: bytes) -> None:
        if "signingConfiguration" not in request:
            raise ApiError("ValidationException", "1 validation error detected: Value null at "
                           "'signingConfiguration' failed to satisfy constraint: Member must not be null")
        config = self.server.state.signing.put(self._access_key(), request["signingConfiguration"])
        self._api_ok({"signingConfiguration": config})

    def _api_get_signing_configuration(self, _request: dict, _body: bytes) -> None:
        self._api_ok({"registryId": ACCOUNT, "signingConfiguration": self.server.state.signing.get(self._access_key())})

    def _api_delete_signing_configuration(self, _request: dict, _body: bytes) -> None:
        self._api_ok({"registryId": ACCOUNT,
                      "signingConfiguration": self.server.state.signing.delete(self._access_key())})

    def _api_describe_image_signing_status(self, request: dict, _body: bytes) -> None:
        name, image_id = request.get("repositoryName"), request.get("imageId")
        if not isinstance(name, str) or not isinstance(image_id, dict) \
                or not (image_id.get("imageDigest") or image_id.get("imageTag")):
            raise ApiError("InvalidParameterException",
                           "Invalid parameter: repositoryName and imageId (imageDigest or imageTag) are required")
        moto = self.moto
        if moto.repository(name) is None:
            raise self._repository_not_found(name)
        digest = moto.digest_of(name, {k: v for k, v in image_id.items() if k in ("imageDigest", "imageTag")})
        if digest is None:
            raise self._image_not_found(name, image_id)
        answer_id = {"imageDigest": digest}
        if image_id.get("imageTag"):
            answer_id["imageTag"] = image_id["imageTag"]
        self._api_ok({"registryId": ACCOUNT, "repositoryName": name, "imageId": answer_id,
                      "signingStatuses": self.server.state.signing.statuses(name, digest)})

    def _image_not_found(self, name: str, image_id: dict) -> ApiError:
        return ApiError("ImageNotFoundException",
                        f"The image with imageId {{imageDigest:'{image_id.get('imageDigest', 'null')}', "
                        f"imageTag:'{image_id.get('imageTag', 'null')}'}} does not exist within the "
                        f"repository with name '{self.target.public(name)}' in the registry with id "
                        f"'{self.target.account}'")

    # --- replication (front_replication.py) ------------------------------------------------

    def _api_put_replication_configuration(self, request: dict, _body: bytes) -> None:
        if "replicationConfiguration" not in request:
            raise ApiError("ValidationException", "1 validation error detected: Value null at "
                           "'replicationConfiguration' failed to satisfy constraint: Member must not be null")
        config = self.server.state.replication.put(self.target, request["replicationConfiguration"])
        self._api_ok({"replicationConfiguration": config})

    def _api_describe_registry(self, _request: dict, _body: bytes) -> None:
        self._api_ok({"registryId": self.target.account,
                      "replicationConfiguration": self.server.state.replication.get(self.target)})

    def _api_describe_image_replication_status(self, request: dict, _body: bytes) -> None:
        name, image_id = request.get("repositoryName"), request.get("imageId")
        if not isinstance(name, str) or not isinstance(image_id, dict) \
                or not (image_id.get("imageDigest") or image_id.get("imageTag")):
            raise ApiError("InvalidParameterException",
                           "Invalid parameter: repositoryName and imageId (imageDigest or imageTag) are required")
        name = self.target.internal(name)
        moto = self.moto
        if moto.repository(name) is None:
            raise self._repository_not_found(name)
        digest = moto.digest_of(name, {k: v for k, v in image_id.items() if k in ("imageDigest", "imageTag")})
        if digest is None:
            raise self._image_not_found(name, image_id)
        answer_id = {"imageDigest": digest}
        if image_id.get("imageTag"):
            answer_id["imageTag"] = image_id["imageTag"]
        self._api_ok({"repositoryName": self.target.public(name), "imageId": answer_id,
                      "replicationStatuses": self.server.state.replication.statuses(self.target, name, digest)})

    # --- eventual consistency ------------------------------------------------------------

    def _api_visible_images(self, request: dict, body: bytes) -> None:
        """Forward to moto; while the repository has manifests inside their /visibility
        window, answer as ECR would before they show up."""
        name = self.target.internal(request.get("repositoryName"))
        visibility = self.server.state.visibility
        action = self._action
        active = isinstance(name, str) and visibility.active(name)
        if not active and (action != "DescribeImages" or not isinstance(name, str)):
            return self._moto_answer(body)
        hidden_digests, hidden_tags = visibility.hidden(name) if active else (set(), set())
        if active:
            self._rule = "visibility"

        def hides(image_id: dict) -> bool:
            return image_id.get("imageDigest") in hidden_digests or image_id.get("imageTag") in hidden_tags

        asked = [i for i in request.get("imageIds") or [] if isinstance(i, dict)]
        missing = [i for i in asked if hides(i)]
        if action == "DescribeImages" and missing:
            raise self._image_not_found(name, missing[0])
        if action == "BatchGetImage" and missing:
            request = dict(request, imageIds=[i for i in asked if not hides(i)])
            if not request["imageIds"]:
                return self._api_ok({"images": [], "failures": [self._not_found(i) for i in missing]})
            body = json_dumps(request)
        conn, resp = self._upstream(self.server.moto_addr, body=body)
        try:
            answer = resp.read()
            if resp.status != 200:
                return self._relay(resp, answer)
        finally:
            conn.close()
        payload = json.loads(answer)
        if action == "DescribeImages":
            details = []
            for detail in payload.get("imageDetails") or []:
                if detail.get("imageDigest") in hidden_digests:
                    continue
                if detail.get("imageTags"):
                    detail["imageTags"] = [t for t in detail["imageTags"] if t not in hidden_tags]
                    if not detail["imageTags"]:
                        del detail["imageTags"]
                details.append(detail)
            payload["imageDetails"] = self._detail_fields(name, details)
        elif action == "ListImages":
            payload["imageIds"] = [i for i in payload.get("imageIds") or [] if not hides(i)]
        else:
            payload["images"] = [i for i in payload.get("images") or [] if not hides(i.get("imageId") or {})]
            payload["failures"] = (payload.get("failures") or []) + [self._not_found(i) for i in missing]
        self._api_ok(payload)

    def _detail_fields(self, name: str, details: list[dict]) -> list[dict]:
        """What ECR's ImageDetail has and moto 5.2's lacks: `artifactMediaType` (the
        manifest's artifactType, else its config's mediaType; an index has none),
        `subjectManifestDigest` for a referrer, and `imageStatus` (ACTIVE: nothing here is
        ever archived)."""
        from front_referrers import INDEX_TYPES, artifact_type, parse, subject_of
        images = self.moto.images_by_digest(name, [d["imageDigest"] for d in details if d.get("imageDigest")])
        for detail in details:
            image = images.get(detail.get("imageDigest"))
            if image is not None:
                manifest = parse(image.get("imageManifest"))
                kind = artifact_type(manifest)
                if kind and manifest.get("mediaType") not in INDEX_TYPES and "manifests" not in manifest:
                    detail.setdefault("artifactMediaType", kind)
                elif manifest.get("artifactType"):
                    detail.setdefault("artifactMediaType", manifest["artifactType"])
                if subject_of(manifest):
                    detail["subjectManifestDigest"] = subject_of(manifest)
            detail.setdefault("imageStatus", "ACTIVE")
        return details

    def _api_batch_delete_image(self, request: dict, body: bytes) -> None:
        """ECR's BatchDeleteImage: an image that an index in the repository lists is not
        deleted (failure `ImageReferencedByManifestList`, a code of the API model's
        ImageFailureCode); the others are deleted in moto and in the registry."""
        import http.client

        name = self.target.internal(request.get("repositoryName"))
        asked = [i for i in request.get("imageIds") or [] if isinstance(i, dict)]
        listed = set()
        if isinstance(name, str):
            for image in self.moto.manifests(name) if self.moto.repository(name) else []:
                try:
                    manifest = json.loads(image.get("imageManifest") or "{}")
                except ValueError:
                    continue
                for entry in manifest.get("manifests") or []:
                    if isinstance(entry, dict):
                        listed.add(entry.get("digest"))
        referenced = [i for i in asked if i.get("imageDigest") in listed]
        rest = [i for i in asked if i not in referenced]
        failures = [{"imageId": i, "failureCode": "ImageReferencedByManifestList",
                     "failureReason": "Requested image is referenced by an image index"}
                    for i in referenced]
        if referenced:
            self._rule = "referenced-by-index"
        if not rest:
            return self._api_ok({"imageIds": [], "failures": failures})
        conn, resp = self._upstream(self.server.moto_addr, body=json_dumps(dict(request, imageIds=rest)))
        try:
            answer = resp.read()
            if resp.status != 200:
                return self._relay(resp, answer)
        finally:
            conn.close()
        payload = json.loads(answer)
        from front_registry import REGISTRY_AUTH
        for digest in {i.get("imageDigest") for i in payload.get("imageIds") or []} - {None}:
            registry = http.client.HTTPConnection(*self.server.registry_addr, timeout=30)
            try:
                registry.request("DELETE", f"/v2/{name}/manifests/{digest}",
                                 headers={"Authorization": REGISTRY_AUTH})
                registry.getresponse().read()
            finally:
                registry.close()
        payload["failures"] = (payload.get("failures") or []) + failures
        self._api_ok(payload)

    @staticmethod
    def _not_found(image_id: dict) -> dict:
        return {"imageId": image_id, "failureCode": "ImageNotFound",
                "failureReason": "Requested image not found"}

    def _moto_answer(self, body: bytes) -> None:
        conn, resp = self._upstream(self.server.moto_addr, body=body)
        try:
            self._relay(resp, resp.read())
        finally:
            conn.close()
