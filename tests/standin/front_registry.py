"""ECR's rules on the registry host, on top of the plain registry (see README.md's
conformance table). Per repository, POST /mode on the control API can put the plain
registry's own answers back ("reference" mode) for the rules marked (R) below.

Credentials:  HTTP Basic AWS:<password>; a password GetAuthorizationToken issued is
              swapped for the registry's htpasswd one, an expired one gets 403 DENIED;
              the fixed moto password still works; anything else reaches the registry
              (its 401).
Repository:   NAME_UNKNOWN unless moto knows it, or a CREATE_ON_PUSH template covers it
              and the request starts a push (blob upload POST, manifest PUT).
Uploads:      (R) PATCH answers 201; only the first PATCH of a session keeps its body
              ("drop"; "keep" stores it but leaves Range stale); a cross-repository mount
              only with BLOB_MOUNTING=ENABLED for the token's access key and the blob in a
              manifest of the source repository, else a plain new session (202).
Manifests:    (R) no Location on PUT; over 4 MiB, over 500 layers, media types with
              parameters refused; (R) an existing immutable tag refused even for the same
              digest; every accepted PUT recorded in moto; GET/HEAD hidden while inside a
              /visibility window.
Blob GET:     (R) 307 to a presigned URL on S3's host, served by the front.
"""
from __future__ import annotations

import base64
import hashlib
import http.client
import json
import re
import time
import uuid
from urllib.parse import unquote, urlsplit

from front_common import (ACCOUNT, DEFAULT_ACCESS_KEY, FIXED_PASSWORD, LAYER_LIMIT,
                          MANIFEST_LIMIT, REGION, S3_HOST, log, query_params, tag_is_immutable)

# Greedy (.+) makes <name> run up to the LAST /manifests/, /blobs/ or /tags/ segment,
# so names with slashes ("team/app") work.
REPO_PATH = re.compile(r"^/v2/(?P<name>.+)/(?P<kind>manifests|blobs|tags|referrers)/(?P<rest>.*)$")
DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
UPLOAD_SESSION = re.compile(r"^uploads/(?P<session>[^/]+)$")
UPSTREAM_TIMEOUT = 300
REGISTRY_AUTH = "Basic " + base64.b64encode(f"AWS:{FIXED_PASSWORD}".encode()).decode()

EXPIRED_TOKEN = "Your authorization token has expired. Reauthenticate and try again."
NOT_FOUND_IMAGE = "Requested image not found"
MANIFEST_TOO_LARGE = ("Invalid parameter at 'ImageManifest' failed to satisfy constraint: "
                      "'Member must have length less than or equal to 4194304'")
TOO_MANY_LAYERS = ("Invalid parameter at 'ImageManifest' failed to satisfy constraint: "
                   "'Limit on number of layers per image exceeded'")
# ECR's 405 body for a manifest it will not take (opcr-io/policy#149, falcosecurity/falcoctl#302:
# OCI 1.1 artifact manifests before ECR took them); what it answered the refused referrers of
# aws/containers-roadmap#2783 and moby/buildkit#5747 with is not quoted there (unconfirmed).
REFERRER_REFUSED = "Invalid parameter at 'ImageManifest' failed to satisfy constraint: 'Invalid JSON syntax'"


def rewrite_location(value: str, host: str | None = None, prefix: str = "") -> str:
    # The registry is told its external URL, but a Location naming the loopback port
    # would send clients around the front (and around the ECR rules). Another registry's
    # host (front_targets) gets its own name back, without the internal prefix.
    from front_common import REGISTRY_HOST
    host = host or REGISTRY_HOST
    for internal in ("http://127.0.0.1:5002", "http://localhost:5002", f"https://{REGISTRY_HOST}"):
        if value.startswith(internal):
            rest = value[len(internal):]
            if prefix and rest.startswith(f"/v2/{prefix}/"):
                rest = "/v2/" + rest[len(prefix) + 5:]
            return f"https://{host}" + rest
    return value


def presigned_location(token: str) -> str:
    """A URL shaped like the ones ECR's blob redirects send (S3 SigV4 query auth); the
    signature is the front's lookup key."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    return (f"https://{S3_HOST}/e501-{ACCOUNT}-{uuid.uuid4()}/{uuid.uuid4()}"
            f"?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=ASIASTANDIN%2F{stamp[:8]}%2F"
            f"{REGION}%2Fs3%2Faws4_request&X-Amz-Date={stamp}&X-Amz-Expires=3600"
            f"&X-Amz-SignedHeaders=host&X-Amz-Signature={token}")


def basic_password(header: str | None) -> str | None:
    """The password of an HTTP Basic `AWS:<password>` header, else None."""
    header = header or ""
    if header[:6].lower() != "basic ":
        return None
    try:
        user, _, password = base64.b64decode(header[6:].strip(), validate=True).decode().partition(":")
    except (ValueError, UnicodeDecodeError):
        return None
    return password if user == "AWS" else None


class RegistryMixin:
    """Mixed into front.Handler; uses its _upstream, _relay, _forward, _read_body,
    _drain_body, _json_error and _answer."""

    def _registry(self):
        parts = urlsplit(self.path)
        m = REPO_PATH.match(parts.path)
        credentials = self._registry_credentials(m["name"] if m else None)
        if credentials is None:
            return  # answered (an expired token)
        authenticated, access_key = credentials
        # Unauthenticated requests (and unknown passwords) go straight to the registry so
        # they get its 401 challenge first, as on ECR; the rules apply to real clients.
        if not m or not authenticated:
            return self._forward(self.server.registry_addr)
        name, kind, rest = m["name"], m["kind"], m["rest"]
        target = self.target
        if self._registry_guard(target, name, access_key, kind, rest):
            return
        state, moto, method = self.server.state, self.moto, self.command
        starts_push = (kind == "blobs" and method == "POST" and rest.rstrip("/") == "uploads") \
            or (kind == "manifests" and method == "PUT")
        repo = moto.repository(name)
        if repo is None and starts_push:
            repo = self._create_on_push(name)
        if repo is None:
            self._drain_body()
            return self._json_error(
                404, "NAME_UNKNOWN",
                f"The repository with name '{target.public(name)}' does not exist in the registry "
                f"with id '{target.account}'")
        mode, patches = state.modes.get(name)
        ecr = mode == "ecr"
        if kind == "manifests":
            if method == "PUT":
                return self._put_manifest(name, rest, repo, ecr, access_key)
            if method in ("GET", "HEAD") and self._manifest_hidden(name, rest):
                self._drain_body()
                self._rule = "visibility"
                return self._json_error(404, "MANIFEST_UNKNOWN", NOT_FOUND_IMAGE)
        elif kind == "referrers" and method in ("GET", "HEAD"):
            self._drain_body()
            return self._referrers(name, rest, parts.query)
        elif kind == "blobs":
            session = UPLOAD_SESSION.match(rest)
            if method == "POST" and rest.rstrip("/") == "uploads":
                return self._start_upload(name, parts, repo, ecr, access_key)
            if session and method == "PATCH":
                return self._patch_upload(name, session["session"], ecr, patches)
            if session and method == "PUT":
                return self._finish_upload(name, session["session"], parts.query)
            if session and method == "DELETE":
                state.uploads.finish(session["session"])
            elif method == "GET" and ecr and not rest.startswith("uploads"):
                return self._redirect_blob(name)
        self._forward(self.server.registry_addr)

    # --- credentials -------------------------------------------------------------------

    def _registry_credentials(self, name: str | None):
        """(authenticated, access key id whose account view applies), or None when the
        request was answered here (403 for an expired token)."""
        password = basic_password(self.headers.get("Authorization"))
        if password is None:
            return False, ""
        target = self.target
        if password == FIXED_PASSWORD:
            # moto's fixed token is the primary registry's only.
            return (True, DEFAULT_ACCESS_KEY) if target.primary else (False, "")
        tokens = self.server.state.tokens
        status, access_key = tokens.check(password)
        if status == "unknown":
            return False, ""
        issued_for = tokens.registry_of(password)
        if issued_for is not None and issued_for != (target.account, target.region):
            # ECR's tokens are per registry (ECR User Guide, registry authentication); the
            # exact answer to another registry's token is unconfirmed.
            self._drain_body()
            self._rule = "other-registry-token"
            self._json_error(403, "DENIED", "Your authorization token is not valid for this registry.")
            return None
        if status == "expired":
            self._drain_body()
            if name:
                self.server.state.stats.bump(name, "expired_token_refusals")
            self._rule = "expired-token"
            self._json_error(403, "DENIED", EXPIRED_TOKEN)
            return None
        del self.headers["Authorization"]
        self.headers["Authorization"] = REGISTRY_AUTH
        return True, access_key

    def _registry_authorization(self, header: str) -> str:
        """The header to send the registry for this one: a password the front issued
        (expired or not) becomes the registry's own."""
        password = basic_password(header)
        if password and self.server.state.tokens.check(password)[0] != "unknown":
            return REGISTRY_AUTH
        return header

    # --- repositories ------------------------------------------------------------------

    def _create_on_push(self, name: str) -> dict | None:
        """ECR creates a repository a push names when a CREATE_ON_PUSH template covers
        it (ECR User Guide, repository creation templates)."""
        state, moto = self.server.state, self.moto
        if not self.target.primary:
            return None  # templates are the primary registry's (front_api)
        template = state.templates.covering(name)
        if template is None:
            return None
        with self.server.repo_lock(name):
            repo = moto.repository(name)
            if repo is None:
                repo = moto.create_from_template(name, template)
                if repo is not None:
                    state.stats.set(name, "created_on_push", template["prefix"])
                    self._rule = f"created-on-push:{template['prefix']}"
                    log.info("- - - - created %s on push from template %s", name, template["prefix"])
        return repo

    # --- blob uploads ------------------------------------------------------------------

    def _start_upload(self, name: str, parts, repo: dict, ecr: bool, access_key: str):
        params = query_params(parts.query)
        values = dict(params)
        if "mount" not in values:
            if "digest" in values:  # a monolithic POST links the blob
                with self.server.link_lock(name):
                    return self._forward(self.server.registry_addr)
            return self._forward(self.server.registry_addr)
        stats = self.server.state.stats
        stats.bump(name, "mount_attempts")
        if ecr and not self._mount_allowed(name, repo, values, access_key):
            # As ECR: no mount, a plain new upload session (202).
            kept = [(k, v) for k, v in params if k not in ("mount", "from")]
            self.path = parts.path + ("?" + "&".join(f"{k}={v}" for k, v in kept) if kept else "")
            self._rule = "mount-refused"
            return self._forward(self.server.registry_addr)
        with self.server.link_lock(name):
            conn, resp = self._upstream(self.server.registry_addr, stream=True)
            try:
                if resp.status == 201:
                    stats.bump(name, "mounts")
                self._relay(resp)
            finally:
                conn.close()

    def _mount_allowed(self, name: str, repo: dict, values: dict, access_key: str) -> bool:
        """ECR User Guide, blob mounting: only with BLOB_MOUNTING=ENABLED, within the
        registry, between repositories with the same encryption, for a blob a manifest of
        the source repository references."""
        state, moto = self.server.state, self.moto
        if state.settings.get(access_key, "BLOB_MOUNTING") != "ENABLED":
            return False
        source = unquote(values.get("from") or "")
        if not source or source == name:
            return False
        src = moto.repository(source)
        if src is None or src.get("encryptionConfiguration") != repo.get("encryptionConfiguration"):
            return False
        return moto.references_blob(source, unquote(values["mount"]))

    def _patch_upload(self, name: str, session: str, ecr: bool, patches: str):
        state = self.server.state
        state.stats.bump(name, "patches")
        number, first = state.uploads.patch(session)
        state.stats.at_least(name, "max_patches_per_session", number)
        if not ecr:
            return self._forward(self.server.registry_addr)
        if first is not None and patches == "drop":
            # aws/containers-roadmap#2831: a later PATCH is answered like the first one,
            # and its bytes go nowhere.
            self._drain_body()
            state.stats.bump(name, "dropped_patches")
            self._rule = "patch-dropped"
            return self._answer_empty(201, first)
        conn, resp = self._upstream(self.server.registry_addr, stream=True)
        try:
            answer = resp.read()
            if resp.status != 202:
                return self._relay(resp, answer)
            headers = {key: resp.getheader(key) for key in ("Location", "Range", "Docker-Upload-UUID")
                       if resp.getheader(key) is not None}
            if "Location" in headers:
                headers["Location"] = rewrite_location(headers["Location"], self._host, self.target.prefix)
            if first is None:
                state.uploads.first_answer(session, headers)
                return self._relay(resp, answer, status=201)
            # "keep": stored, but Range stays where the first PATCH left it.
            self._rule = "patch-stale-range"
            return self._relay(resp, answer, status=201, replace={"Range": first.get("Range", "0-0")})
        finally:
            conn.close()

    def _finish_upload(self, name: str, session: str, query: str):
        state = self.server.state
        has_body = self._is_chunked() or int(self.headers.get("Content-Length") or 0) > 0
        earlier = state.uploads.finish(session)
        if "digest" in dict(query_params(query)) and has_body and not (earlier and earlier["patches"]):
            state.stats.bump(name, "monolithic_puts")
        with self.server.link_lock(name):
            self._forward(self.server.registry_addr)

    # --- blob reads --------------------------------------------------------------------

    def _redirect_blob(self, name: str):
        """ECR answers a blob GET with a 307 to a presigned S3 URL (open-policy-agent/opa#6728);
        a blob the registry does not hold keeps the registry's own answer (404)."""
        registry = self.server.registry_addr
        conn = http.client.HTTPConnection(*registry, timeout=UPSTREAM_TIMEOUT)
        try:
            conn.request("HEAD", self.path, headers={"Authorization": self.headers.get("Authorization", ""),
                                                     "Host": self.headers.get("Host", "")})
            status = conn.getresponse().status
        finally:
            conn.close()
        if status != 200:
            return self._forward(registry)
        self.server.state.stats.bump(name, "blob_redirects")
        self._redirect_to_s3()

    def _redirect_to_s3(self):
        token = self.server.state.presigned.add(self.path, self.headers.get("Authorization") or "")
        self._drain_body()
        self._answer_empty(307, {"Location": presigned_location(token)})

    # --- referrers ---------------------------------------------------------------------

    def _referrers(self, name: str, digest: str, query: str):
        """The OCI distribution spec v1.1 referrers API, which ECR serves (AWS What's New,
        2024-06-27): an image index of the descriptors of every manifest of the repository
        whose subject is `digest` (an empty one when there is none, never a 404), from the
        same index as ListImageReferrers; `?artifactType=` filters, and the answer then says
        so with `OCI-Filters-Applied: artifactType`."""
        from urllib.parse import unquote

        from front_referrers import OCI_INDEX, descriptors, index
        if not DIGEST.match(digest):
            return self._json_error(400, "DIGEST_INVALID", "provided digest did not match uploaded content")
        wanted = [unquote(v) for k, v in query_params(query) if k == "artifactType" and v]
        state = self.server.state
        state.signing.settle(name)
        hidden, _ = state.visibility.hidden(name)
        entries = descriptors(self.moto.manifests(name), digest, wanted or None, hidden)
        headers = [("Docker-Distribution-Api-Version", "registry/2.0")]
        if wanted:
            headers.append(("OCI-Filters-Applied", "artifactType"))
        self._answer(200, OCI_INDEX, json.dumps(index(entries)).encode(), headers)

    def _referrer_refusal(self, name: str, doc: dict, ecr: bool) -> bool:
        """ECR refused some referrer pushes with 405: a referrer whose subject is an image
        index (aws/containers-roadmap#2783, `oras copy -r`), in ECR mode; and, with
        POST /referrers, every manifest with a subject (moby/buildkit#5747 had BuildKit's
        attestation manifests refused). True when refused (answered)."""
        from front_referrers import INDEX_TYPES, parse
        subject = doc.get("subject")
        if not isinstance(subject, dict):
            return False
        refuse = self.server.state.refuse_referrers.get(name)
        if not refuse and ecr:
            if subject.get("mediaType") in INDEX_TYPES:
                refuse = True
            elif isinstance(subject.get("digest"), str):
                stored = self.moto.image_by_digest(name, subject["digest"])
                refuse = stored is not None and (
                    stored.get("imageManifestMediaType") in INDEX_TYPES
                    or parse(stored.get("imageManifest")).get("mediaType") in INDEX_TYPES)
        if not refuse:
            return False
        self.server.state.stats.bump(name, "referrer_refusals")
        self._rule = "referrer-refused"
        self._json_error(405, "UNSUPPORTED", REFERRER_REFUSED)
        return True

    # --- manifests ---------------------------------------------------------------------

    def _manifest_hidden(self, name: str, reference: str) -> bool:
        digests, tags = self.server.state.visibility.hidden(name)
        return reference in digests or reference in tags

    def _manifest_refusal(self, body: bytes) -> tuple[int, str, str] | None:
        """What ECR refuses in a manifest PUT that the plain registry accepts."""
        content_type = self.headers.get("Content-Type") or ""
        if ";" in content_type:
            # aws/containers-roadmap#2306: media types with parameters are refused.
            return (405, "UNSUPPORTED", "Invalid parameter at 'ImageManifestMediaType' failed to "
                    f"satisfy constraint: 'Invalid media type: {content_type}'")
        try:
            doc = json.loads(body)
        except ValueError:
            return None  # the registry's own MANIFEST_INVALID
        if not isinstance(doc, dict):
            return None
        descriptors = [doc] + [doc[k] for k in ("config", "subject") if isinstance(doc.get(k), dict)]
        for key in ("layers", "manifests", "blobs"):
            if isinstance(doc.get(key), list):
                descriptors += [d for d in doc[key] if isinstance(d, dict)]
        for descriptor in descriptors:
            for field in ("mediaType", "artifactType"):
                value = descriptor.get(field)
                if isinstance(value, str) and ";" in value:
                    return (405, "UNSUPPORTED", "Invalid parameter at 'ImageManifest' failed to "
                            f"satisfy constraint: 'Invalid media type: {value}'")
        if isinstance(doc.get("layers"), list) and len(doc["layers"]) > LAYER_LIMIT:
            return 405, "UNSUPPORTED", TOO_MANY_LAYERS
        return None

    def _put_manifest(self, name: str, reference: str, repo: dict, ecr: bool, access_key: str):
        state, moto = self.server.state, self.moto
        state.stats.bump(name, "manifest_puts")
        body = self._read_body(MANIFEST_LIMIT if ecr else 8 * MANIFEST_LIMIT)
        if body is None:
            if ecr:
                return self._json_error(405, "UNSUPPORTED", MANIFEST_TOO_LARGE)
            return self._json_error(400, "MANIFEST_INVALID", "manifest too large for the stand-in (32 MiB)")
        if ecr:
            refusal = self._manifest_refusal(body)
            if refusal:
                self._rule = "manifest-refused"
                return self._json_error(*refusal)
        from front_referrers import parse, subject_of
        doc = parse(body)
        if self._referrer_refusal(name, doc, ecr):
            return
        tag = None if ":" in reference else reference
        with self.server.repo_lock(name), self.server.link_lock(name):
            previous = moto.image(name, tag) if tag is not None else None
            if previous and tag_is_immutable(repo, tag):
                mine = "sha256:" + hashlib.sha256(body).hexdigest()
                # ECR refuses even the same digest (aws/containers-roadmap#2380).
                if ecr or previous["imageId"]["imageDigest"] != mine:
                    return self._json_error(
                        400, "TAG_INVALID",
                        f"The image tag '{tag}' already exists in the '{self.target.public(name)}' repository "
                        "and cannot be overwritten because the repository is immutable.")
            conn, resp = self._upstream(self.server.registry_addr, body=body)
            try:
                answer = resp.read()
                extra = {}
                if resp.status == 201:
                    digest = resp.getheader("Docker-Content-Digest") or \
                        "sha256:" + hashlib.sha256(body).hexdigest()
                    media_type = (self.headers.get("Content-Type") or "").split(";")[0].strip() or None
                    moto.put_image(name, body.decode("utf-8"), media_type, tag, digest, previous)
                    state.visibility.record(name, digest, tag)
                    if (repo.get("imageScanningConfiguration") or {}).get("scanOnPush"):
                        moto.start_scan(name, digest)
                    subject = subject_of(doc)
                    if subject:
                        # Distribution spec v1.1: a registry with the referrers API says it
                        # processed the subject.
                        extra["OCI-Subject"] = subject
                    elif self.target.primary:
                        # Managed signing signs what is pushed (referrers left alone: unconfirmed).
                        state.signing.on_push(access_key, name, digest,
                                              media_type or doc.get("mediaType") or "", len(body))
                    # Private image replication (front_replication): referrers too.
                    state.replication.on_push(self.server, self.target, name, digest, tag)
                # ECR's manifest PUT answers without a Location (oras-project/rust-oci-client#40).
                self._relay(resp, answer, drop=("location",) if ecr else (), replace=extra)
            finally:
                conn.close()
