#!/usr/bin/env python3
"""TLS front of the ECR stand-in: one HTTPS listener that plays both ECR hosts.

  api.ecr.us-east-1.amazonaws.com               -> moto server (plain pass-through)
  123456789012.dkr.ecr.us-east-1.amazonaws.com  -> docker-registry, plus the ECR rules
                                                   that a plain registry lacks:
    * a repository moto does not know answers 404 NAME_UNKNOWN (ECR never creates
      a repository on push);
    * an IMMUTABLE repository refuses to move an existing tag (400 TAG_INVALID);
    * every accepted manifest PUT is recorded in moto (put_image) before the client
      sees the 201, so DescribeImages agrees with the registry the moment a push ends;
    * a manifest pushed to a repository with scanOnPush gets its scan started in moto
      (StartImageScan), as ECR starts it on push.

Scripted scan answers for tests: POST /scans on the control API gives one repository a
list of DescribeImageScanFindings (and StartImageScan) answers, consumed in order, the
last one repeating: IN_PROGRESS before COMPLETE, FAILED, ScanNotFoundException, enhanced
findings (see Scans).

Fault injection for tests: a plain-HTTP control API (default 127.0.0.1:5005, see
Faults and ControlHandler) queues rules that make the next matching requests answer an
error status, reset the connection mid-body, or wait first, or that close the listener
for a while so new connections are refused, or that answer a registry GET the way ECR
answers every blob GET: a 307 to a presigned S3 URL, served here under the API host at
/starport-layer-bucket/, which (as S3 does) refuses a request that also carries an
Authorization header. API requests signed with the access key ids
AKIADENIEDEXAMPLE / AKIAEXPIREDEXAMPLE are always refused like ECR refuses bad or expired
credentials. Both are marked "injected:..." in the request log.

Standard library only, apart from boto3 (shipped with moto) to talk to moto. Bodies
are streamed in both directions, never buffered whole, except manifests (small, and
needed for the digest and for put_image). One thread per client connection.
"""
from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import logging
import os
import re
import select
import socket
import socketserver
import ssl
import struct
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

ACCOUNT = "123456789012"
REGION = "us-east-1"
REGISTRY_HOST = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com"
API_HOST = f"api.ecr.{REGION}.amazonaws.com"
# The API's VPC endpoint name (scripts/standin VPCE_API_HOST), served as the API.
VPCE_API_HOST = f"vpce-0standin-api.api.ecr.{REGION}.vpce.amazonaws.com"

BUF = 256 * 1024                 # copy size: big enough that a 50 MB layer costs few syscalls
MANIFEST_LIMIT = 4 * 1024 * 1024  # ECR's own manifest size limit
UPSTREAM_TIMEOUT = 300
CLIENT_IDLE_TIMEOUT = 300

# Headers that describe one hop, not the message (RFC 9110 7.6.1); we re-frame bodies ourselves.
HOP_BY_HOP = {
    "connection", "keep-alive", "proxy-connection", "proxy-authenticate",
    "proxy-authorization", "te", "trailer", "transfer-encoding", "upgrade",
    "content-length", "expect",
}

# Greedy (.+) makes <name> run up to the LAST /manifests/, /blobs/ or /tags/ segment,
# so names with slashes ("team/app") work.
REPO_PATH = re.compile(r"^/v2/(?P<name>.+)/(?P<kind>manifests|blobs|tags)/(?P<rest>.*)$")

log = logging.getLogger("front")


class ClientGone(Exception):
    """The downstream client went away; nothing useful can be sent to it any more."""


class UpstreamGone(Exception):
    """The upstream closed the connection before answering."""


RESET_READ_LIMIT = 64 * 1024   # "reset" faults read at most this much of the body first
FAULT_ROUTES = ("registry", "api")
# The repository a registry request names: /v2/<name>/blobs/..., /manifests/..., /tags/...
REGISTRY_REPOSITORY = re.compile(r"^/v2/(.+?)/(?:blobs|manifests|tags)/")
FAULT_MODES = ("status", "reset", "delay", "refuse", "redirect")
S3_PREFIX = "/starport-layer-bucket"
FAULT_FIELDS = {"route", "mode", "count", "method", "path", "action", "status", "error",
                "message", "seconds", "repository"}
MAX_FAULT_SECONDS = 300

# Access key ids that the API route refuses whatever the signature, as ECR would.
CREDENTIAL_FAULTS = {
    "AKIADENIEDEXAMPLE": ("UnrecognizedClientException",
                          "The security token included in the request is invalid."),
    "AKIAEXPIREDEXAMPLE": ("ExpiredTokenException",
                           "The security token included in the request is expired"),
}
CREDENTIAL = re.compile(r"Credential=([A-Za-z0-9]+)/")

REGISTRY_FAULT_CODES = {
    503: ("UNAVAILABLE", "service unavailable"),
    429: ("TOOMANYREQUESTS", "Rate exceeded"),
    401: ("UNAUTHORIZED", "authentication required"),
    403: ("DENIED", "requested access to the resource is denied"),
}
API_FAULT_MESSAGES = {
    "ThrottlingException": "Rate exceeded",
    "ServiceUnavailableException": "Service Unavailable",
}


class FaultSpecError(ValueError):
    """A POST /faults body that does not describe a valid rule."""


def parse_fault(spec) -> dict:
    """Validate one rule as POSTed, filling in the defaults."""
    if not isinstance(spec, dict):
        raise FaultSpecError("the body must be a JSON object")
    unknown = set(spec) - FAULT_FIELDS
    if unknown:
        raise FaultSpecError(f"unknown field(s): {', '.join(sorted(unknown))}")
    mode = spec.get("mode")
    if mode not in FAULT_MODES:
        raise FaultSpecError(f"mode must be one of {', '.join(FAULT_MODES)}")
    route = spec.get("route")
    if route is not None and route not in FAULT_ROUTES:
        raise FaultSpecError("route must be 'registry' or 'api' (or absent: both)")
    count = spec.get("count", 1)
    if not isinstance(count, int) or isinstance(count, bool) or count < 1:
        raise FaultSpecError("count must be an integer >= 1")
    rule = {"mode": mode, "route": route, "count": count}
    for key in ("method", "path", "action", "error", "message", "repository"):
        value = spec.get(key)
        if value is not None and not isinstance(value, str):
            raise FaultSpecError(f"{key} must be a string")
        rule[key] = value.upper() if key == "method" and value else value
    status = spec.get("status")
    if mode == "status":
        if status is None:
            status = 400 if route == "api" and rule["error"] else 503
        if not isinstance(status, int) or isinstance(status, bool) or not 400 <= status <= 599:
            raise FaultSpecError("status must be an integer from 400 to 599")
    elif status is not None:
        raise FaultSpecError("status only applies to mode 'status'")
    rule["status"] = status
    seconds = spec.get("seconds")
    if mode in ("delay", "refuse"):
        seconds = 1.0 if seconds is None else seconds
        if not isinstance(seconds, (int, float)) or isinstance(seconds, bool) \
                or not 0 <= seconds <= MAX_FAULT_SECONDS:
            raise FaultSpecError(f"seconds must be a number from 0 to {MAX_FAULT_SECONDS}")
        seconds = float(seconds)
    elif seconds is not None:
        raise FaultSpecError("seconds only applies to modes 'delay' and 'refuse'")
    rule["seconds"] = seconds
    if mode == "redirect" and route != "registry":
        raise FaultSpecError("mode 'redirect' needs route 'registry'")
    if mode == "refuse":
        # `route` picks the listener: the registry's, the API's, or (unset) both.
        for key in ("method", "path", "action", "error", "message", "repository"):
            if rule[key] is not None:
                raise FaultSpecError(f"{key} does not apply to mode 'refuse'")
        if count != 1:
            raise FaultSpecError("count does not apply to mode 'refuse'")
    return rule


class Faults:
    """Pending fault rules, oldest first; each request takes the first rule it matches."""

    def __init__(self):
        self._lock = threading.Lock()
        self._rules: list[dict] = []
        self._next_id = 1
        self.injected = 0
        # "redirect" faults, shared by both listeners: signature token -> (registry path,
        # the client's Authorization)
        self.presigned: dict[str, tuple[str, str]] = {}

    def add(self, rule: dict) -> dict:
        with self._lock:
            rule = dict(rule, id=self._next_id)
            self._next_id += 1
            if rule["mode"] == "refuse":
                self.injected += 1   # applied at once by the caller
            else:
                self._rules.append(rule)
            return dict(rule)

    def scoped(self, route: str) -> bool:
        """Whether a pending rule for this route is scoped to a repository, so the request's
        repository must be known (for the API, from its body) before rules are matched."""
        with self._lock:
            return any(r["repository"] and r["route"] in (None, route) for r in self._rules)

    def take(self, route: str, method: str, path: str, action: str | None,
             repository: str | None = None) -> dict | None:
        # `repository` scopes a rule to one test's repository, so tests running in
        # parallel (every run calls DescribeRepositories) never take each other's faults.
        with self._lock:
            for rule in self._rules:
                if (rule["route"] not in (None, route)
                        or (rule["method"] and rule["method"] != method)
                        or (rule["path"] and rule["path"] not in path)
                        or (rule["action"] and rule["action"] != action)
                        or (rule["repository"] and rule["repository"] != repository)):
                    continue
                rule["count"] -= 1
                if rule["count"] <= 0:
                    self._rules.remove(rule)
                self.injected += 1
                return dict(rule)
        return None

    def clear(self) -> int:
        with self._lock:
            dropped = len(self._rules)
            self._rules.clear()
            self.injected = 0
            return dropped

    def snapshot(self) -> dict:
        with self._lock:
            return {"pending": [dict(r) for r in self._rules], "injected": self.injected}


class Scans:
    """Scripted scan answers, per repository, so parallel tests stay independent.

    A script is {"describe": [answer, ...], "start": [answer, ...]}; each call to that
    operation for that repository takes the next answer, and the last one repeats. An
    answer is {"forward": true} (moto answers: its default is one HIGH finding,
    CVE-9999-9999 in moto_fake, once a scan was started), {"error": type, "message": m}
    (ECR's JSON error, 400), or {"status": S, "description": d, "findings": [...],
    "enhancedFindings": [...]} (a DescribeImageScanFindings answer for the image asked
    about; StartImageScan answers with its status only). Calls are counted either way.
    """

    OPERATIONS = ("describe", "start")

    def __init__(self):
        self._lock = threading.Lock()
        self._scripts: dict[str, dict] = {}
        self._calls: dict[str, dict] = {}

    @staticmethod
    def parse(spec) -> tuple[str, dict]:
        if not isinstance(spec, dict) or not isinstance(spec.get("repository"), str):
            raise FaultSpecError("a scan script is an object with a `repository` name")
        unknown = set(spec) - {"repository", *Scans.OPERATIONS}
        if unknown:
            raise FaultSpecError(f"unknown field(s) {sorted(unknown)}")
        script = {}
        for op in Scans.OPERATIONS:
            answers = spec.get(op, [])
            if not isinstance(answers, list) or not all(isinstance(a, dict) for a in answers):
                raise FaultSpecError(f"`{op}` is a list of answer objects")
            for answer in answers:
                if not ({"forward", "error", "status"} & set(answer)):
                    raise FaultSpecError(f"an answer needs `forward`, `error` or `status`: {answer}")
            script[op] = [dict(a) for a in answers]
        return spec["repository"], script

    def set(self, repository: str, script: dict) -> None:
        with self._lock:
            self._scripts[repository] = script
            self._calls[repository] = {op: 0 for op in self.OPERATIONS}

    def take(self, repository: str, op: str) -> dict | None:
        """The answer for this call, or None when moto answers unscripted."""
        with self._lock:
            calls = self._calls.setdefault(repository, {o: 0 for o in self.OPERATIONS})
            calls[op] += 1
            answers = self._scripts.get(repository, {}).get(op) or []
            if not answers:
                return None
            return answers.pop(0) if len(answers) > 1 else answers[0]

    def calls(self, repository: str) -> dict:
        with self._lock:
            return dict(self._calls.get(repository, {o: 0 for o in self.OPERATIONS}))


class Moto:
    """The few ECR API calls the registry rules need, against moto's plain-HTTP endpoint."""

    def __init__(self, url: str):
        import boto3  # imported here so `front.py --help` stays instant
        from botocore.config import Config

        self.client = boto3.client(
            "ecr", endpoint_url=url, region_name=REGION,
            aws_access_key_id="standin", aws_secret_access_key="standin",
            config=Config(retries={"max_attempts": 2, "mode": "standard"},
                          max_pool_connections=64, connect_timeout=5, read_timeout=30),
        )
        self.errors = self.client.exceptions
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


class Front(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def __init__(self, addr, ctx: ssl.SSLContext, moto: Moto, moto_addr, registry_addr,
                 faults: "Faults", scans: "Scans | None" = None):
        self.ctx = ctx
        self.scans = scans or Scans()
        self.moto = moto
        self.moto_addr = moto_addr
        self.registry_addr = registry_addr
        self.faults = faults
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()
        # "refuse" faults: the accept loop owns the listening socket; other threads ask it
        # to close the socket until a deadline, through a wake-up pipe.
        self._refuse_guard = threading.Lock()
        self._refuse_until = 0.0
        self._refuse_waiters: list[threading.Event] = []
        self._wake_r, self._wake_w = os.pipe()
        super().__init__(addr, Handler)

    def server_bind(self):
        # HTTPServer.server_bind does a reverse DNS lookup we do not need.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]

    # --- accept loop with "refuse" support ---------------------------------------------

    def serve(self):
        """serve_forever, except that the listening socket can be closed for a while."""
        # poll, not select: the listener re-opened after a "refuse" may get an fd > 1023.
        while True:
            listener = self.socket.fileno()
            poller = select.poll()
            poller.register(listener, select.POLLIN)
            poller.register(self._wake_r, select.POLLIN)
            ready = {fd for fd, _ in poller.poll(500)}
            if self._wake_r in ready:
                os.read(self._wake_r, 512)
            if self._refuse_until > time.monotonic():
                self._refuse_now()
            elif listener in ready:
                self._handle_request_noblock()

    def refuse(self, seconds: float) -> None:
        """Close the listener for `seconds`; returns once new connections are refused."""
        done = threading.Event()
        with self._refuse_guard:
            self._refuse_until = max(self._refuse_until, time.monotonic() + seconds)
            self._refuse_waiters.append(done)
        os.write(self._wake_w, b"r")
        done.wait(5)

    def stop_refusing(self) -> None:
        with self._refuse_guard:
            self._refuse_until = 0.0
        os.write(self._wake_w, b"s")

    @property
    def refusing(self) -> float:
        return max(0.0, self._refuse_until - time.monotonic())

    def _refuse_now(self):
        self.socket.close()  # pending, not yet accepted connections get a RST too
        log.info("- - - - refusing connections on %s:%d for %.1fs injected:refuse",
                 *self.server_address[:2], self.refusing)
        while True:
            with self._refuse_guard:
                waiters, self._refuse_waiters = self._refuse_waiters, []
                left = self._refuse_until - time.monotonic()
            for done in waiters:
                done.set()
            if left <= 0:
                break
            waker = select.poll()
            waker.register(self._wake_r, select.POLLIN)
            if waker.poll(left * 1000):
                os.read(self._wake_r, 512)
        self.socket = self._listen_again()
        log.info("- - - - accepting connections on %s:%d again", *self.server_address[:2])

    def _listen_again(self) -> socket.socket:
        deadline = time.monotonic() + 10
        while True:
            sock = socket.socket(self.address_family, self.socket_type)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(self.server_address)
                sock.listen(self.request_queue_size)
                return sock
            except OSError as exc:
                sock.close()
                if time.monotonic() > deadline:
                    log.error("cannot listen on %s:%d again: %s; exiting",
                              *self.server_address[:2], exc)
                    os._exit(3)
                time.sleep(0.05)

    def get_request(self):
        sock, addr = self.socket.accept()
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # Handshake lazily in the connection's own thread, so a slow client never
        # blocks the accept loop.
        return self.ctx.wrap_socket(sock, server_side=True, do_handshake_on_connect=False), addr

    def repo_lock(self, name: str) -> threading.Lock:
        # Serialises check-then-put on one repository, so two parallel pushes of
        # different images to one immutable tag cannot both win.
        with self._locks_guard:
            return self._locks.setdefault(name, threading.Lock())

    def handle_error(self, request, client_address):
        exc = sys.exc_info()[1]
        log.info("%s connection error: %s: %s", client_address[0], type(exc).__name__, exc)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"   # keep-alive: docker reuses connections heavily
    server_version = "ecr-standin"
    rbufsize = 64 * 1024
    timeout = CLIENT_IDLE_TIMEOUT
    server: Front

    def setup(self):
        self.request.settimeout(30)
        self.request.do_handshake()
        super().setup()

    def log_message(self, fmt, *args):  # BaseHTTPRequestHandler's own stderr chatter
        pass

    # Every method goes through one path: the proxy does not care about verbs.
    def do_GET(self):
        self._serve()

    do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = do_GET

    def _serve(self):
        started = time.monotonic()
        self._status = 0
        self._sent_headers = False
        self._injected = None
        self._body = None
        host = (self.headers.get("Host") or "").rsplit(":", 1)[0].lower()
        if host == VPCE_API_HOST:
            # As ECR behind an endpoint: the region (and so the registry host moto's
            # token names) comes from the API's own name.
            host = API_HOST
            del self.headers["Host"]
            self.headers["Host"] = API_HOST
        route = {API_HOST: "api", REGISTRY_HOST: "registry"}.get(host)
        try:
            if route and self._inject(route):
                pass  # a fault answered (or dropped) the request
            elif route == "api" and self._refuse_credentials():
                pass
            elif host == API_HOST and urlsplit(self.path).path.startswith(S3_PREFIX + "/"):
                self._presigned_get()
            elif host == API_HOST and self._scripted_scan():
                pass
            elif host == API_HOST:
                self._forward(self.server.moto_addr)
            elif host == REGISTRY_HOST:
                self._registry()
            else:
                self._drain_body()
                self._json_error(421, "MISDIRECTED", f"unknown host {host!r}")
        except ClientGone:
            self.close_connection = True
        except UpstreamGone:
            self.close_connection = True
            log.info("upstream hung up on %s %s", self.command, urlsplit(self.path).path)
            self._try_json_error(502, "STANDIN_UPSTREAM_GONE", "upstream closed the connection early")
        except Exception as exc:  # noqa: BLE001 - a proxy must answer something
            self.close_connection = True
            log.exception("error serving %s %s", self.command, urlsplit(self.path).path)
            self._try_json_error(502, "STANDIN_ERROR", f"{type(exc).__name__}: {exc}")
        finally:
            ms = (time.monotonic() - started) * 1000
            # Path only: query strings carry upload state tokens; never headers or bodies.
            log.info("%s %s %s %s %d %.1fms%s", self.client_address[0], host.split(".")[0],
                     self.command, urlsplit(self.path).path, self._status, ms,
                     f" injected:{self._injected}" if self._injected else "")

    # --- scripted scans ---------------------------------------------------------------

    SCAN_ACTIONS = {"DescribeImageScanFindings": "describe", "StartImageScan": "start"}

    def _scripted_scan(self) -> bool:
        """Answers a scan call from the repository's script; True if it answered. An
        unscripted call is forwarded to moto with the body already read."""
        action = (self.headers.get("X-Amz-Target") or "").rsplit(".", 1)[-1]
        op = self.SCAN_ACTIONS.get(action)
        if op is None:
            return False
        body = self._read_body(MANIFEST_LIMIT) or b"{}"
        request = json.loads(body or b"{}")
        name = request.get("repositoryName", "")
        answer = self.server.scans.take(name, op)
        self._injected = f"scan:{op}" if answer and not answer.get("forward") else None
        if answer is None or answer.get("forward"):
            conn, resp = self._upstream(self.server.moto_addr, body=body)
            try:
                self._relay(resp, resp.read())
            finally:
                conn.close()
            return True
        if "error" in answer:
            self._api_error(400, answer["error"], answer.get("message") or answer["error"])
            return True
        image_id = request.get("imageId") or {}
        status = {"status": answer["status"]}
        if answer.get("description"):
            status["description"] = answer["description"]
        payload = {"registryId": request.get("registryId") or ACCOUNT,
                   "repositoryName": name, "imageId": image_id, "imageScanStatus": status}
        if op == "describe" and answer["status"] in ("COMPLETE", "ACTIVE"):
            findings = {"findingSeverityCounts": {}}
            for key in ("findings", "enhancedFindings"):
                if key in answer:
                    findings[key] = answer[key]
                    for finding in answer[key]:
                        severity = finding.get("severity", "UNDEFINED")
                        counts = findings["findingSeverityCounts"]
                        counts[severity] = counts.get(severity, 0) + 1
            payload["imageScanFindings"] = findings
        self._answer(200, "application/x-amz-json-1.1", json.dumps(payload).encode(),
                     [("x-amzn-RequestId", str(uuid.uuid4()))])
        return True

    # --- fault injection --------------------------------------------------------------

    def _inject(self, route: str) -> bool:
        """Apply the first pending fault rule this request matches; True if it answered."""
        action = repository = None
        path = urlsplit(self.path).path
        if route == "api":
            action = (self.headers.get("X-Amz-Target") or "").rsplit(".", 1)[-1] or None
            if self.server.faults.scoped(route):
                # API bodies are small JSON: read it once, and replay it to whoever reads on.
                self._body = self._read_body(MANIFEST_LIMIT)
                try:
                    request = json.loads(self._body or b"{}")
                except ValueError:
                    request = {}
                # Most operations name one repository; DescribeRepositories lists them.
                names = request.get("repositoryNames") or [request.get("repositoryName")]
                repository = names[0] if len(names) == 1 else None
        elif m := REGISTRY_REPOSITORY.match(path):
            repository = m[1]
        fault = self.server.faults.take(route, self.command, path, action, repository)
        if fault is None:
            return False
        mode = self._injected = fault["mode"]
        if mode == "delay":
            time.sleep(fault["seconds"])
            return False
        if mode == "reset":
            self._reset_connection()
            return True
        if mode == "redirect":
            token = uuid.uuid4().hex
            self.server.faults.presigned[token] = (self.path, self.headers.get("Authorization") or "")
            self._drain_body()
            self._status = 307
            self.send_response_only(307)
            self.send_header("Location", f"https://{API_HOST}{S3_PREFIX}{urlsplit(self.path).path}"
                                         f"?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Signature={token}")
            self.send_header("Content-Length", "0")
            self._end_headers()
            return True
        self._drain_body()
        if route == "api":
            error = fault["error"] or ("ServiceUnavailableException" if fault["status"] >= 500
                                       else "ThrottlingException")
            self._api_error(fault["status"], error,
                            fault["message"] or API_FAULT_MESSAGES.get(error, error))
        else:
            code, message = REGISTRY_FAULT_CODES.get(fault["status"], ("UNKNOWN", "injected fault"))
            self._json_error(fault["status"], fault["error"] or code, fault["message"] or message)
        return True

    def _presigned_get(self):
        """S3's side of a "redirect" fault: the signature in the URL is the credential."""
        self._drain_body()
        token = dict(p.split("=", 1) for p in urlsplit(self.path).query.split("&") if "=" in p)
        if self.headers.get("Authorization"):
            return self._s3_error(400, "InvalidArgument", "Only one auth mechanism allowed; only "
                                  "the X-Amz-Algorithm query parameter, Signature query string "
                                  "parameter or the Authorization header should be specified")
        found = self.server.faults.presigned.pop(token.get("X-Amz-Signature", ""), None)
        if found is None or self.command != "GET":
            return self._s3_error(403, "AccessDenied", "Access Denied")
        self.path, authorization = found
        del self.headers["Host"]
        self.headers["Host"] = REGISTRY_HOST
        self.headers["Authorization"] = authorization
        self._forward(self.server.registry_addr)

    def _s3_error(self, status: int, code: str, message: str):
        payload = (f"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code>"
                   f"<Message>{message}</Message></Error>").encode()
        self._answer(status, "application/xml", payload)

    def _answer(self, status: int, content_type: str, payload: bytes, headers=()):
        """A complete small answer; HEAD gets the headers only."""
        self._status = status
        self.send_response_only(status)
        self.send_header("Content-Type", content_type)
        for key, value in headers:
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(payload)))
        self._end_headers()
        if self.command != "HEAD":
            try:
                self.wfile.write(payload)
            except (OSError, ssl.SSLError) as exc:
                raise ClientGone() from exc

    def _refuse_credentials(self) -> bool:
        m = CREDENTIAL.search(self.headers.get("Authorization") or "")
        refusal = CREDENTIAL_FAULTS.get(m[1]) if m else None
        if refusal is None:
            return False
        self._injected = refusal[0]
        self._drain_body()
        self._api_error(400, *refusal)
        return True

    def _api_error(self, status: int, error_type: str, message: str):
        """An error as ECR's JSON protocol sends it (botocore reads __type and the header)."""
        payload = json.dumps({"__type": error_type, "message": message}).encode()
        self._answer(status, "application/x-amz-json-1.1", payload,
                     [("x-amzn-RequestId", str(uuid.uuid4())), ("x-amzn-ErrorType", error_type)])

    def _reset_connection(self):
        """Read some of the body, then drop the connection with a TCP RST (SO_LINGER 0)."""
        self.close_connection = True
        want = RESET_READ_LIMIT
        if not self._is_chunked():
            want = min(want, int(self.headers.get("Content-Length") or 0))
        try:
            self.request.settimeout(5)
            while want > 0:
                piece = self.rfile.read1(want)
                if not piece:
                    break
                want -= len(piece)
        except (OSError, ssl.SSLError, ValueError):
            pass
        try:
            self.request.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        # rfile holds a reference that keeps the socket open; wfile does not.
        self.rfile.close()
        self.request.close()

    # --- registry rules ---------------------------------------------------------------

    def _registry(self):
        m = REPO_PATH.match(urlsplit(self.path).path)
        # Unauthenticated requests go straight to the registry so they get its 401
        # challenge first, as ECR does; the repository check applies to real clients.
        if m and self.headers.get("Authorization"):
            name = m["name"]
            repo = self.server.moto.repository(name)
            if repo is None:
                self._drain_body()
                return self._json_error(
                    404, "NAME_UNKNOWN",
                    f"The repository with name '{name}' does not exist in the registry "
                    f"with id '{ACCOUNT}'")
            if m["kind"] == "manifests" and self.command == "PUT":
                return self._put_manifest(name, m["rest"], repo)
        self._forward(self.server.registry_addr)

    def _put_manifest(self, name: str, reference: str, repo: dict):
        body = self._read_body(MANIFEST_LIMIT)
        if body is None:
            return self._json_error(400, "MANIFEST_INVALID", "manifest too large")
        tag = None if reference.startswith("sha256:") else reference
        moto = self.server.moto
        with self.server.repo_lock(name):
            previous = moto.image(name, tag) if tag is not None else None
            if previous and repo.get("imageTagMutability") == "IMMUTABLE":
                mine = "sha256:" + hashlib.sha256(body).hexdigest()
                if previous["imageId"]["imageDigest"] != mine:
                    return self._json_error(
                        400, "TAG_INVALID",
                        f"The image tag '{tag}' already exists in the '{name}' repository "
                        "and cannot be overwritten because the repository is immutable.")
            conn, resp = self._upstream(self.server.registry_addr, body=body)
            try:
                answer = resp.read()
                if resp.status == 201:
                    digest = resp.getheader("Docker-Content-Digest")
                    moto.put_image(name, body.decode("utf-8"),
                                   self.headers.get("Content-Type"), tag, digest, previous)
                    if (repo.get("imageScanningConfiguration") or {}).get("scanOnPush"):
                        moto.start_scan(name, digest)
                self._relay(resp, answer)
            finally:
                conn.close()

    # --- plumbing ---------------------------------------------------------------------

    def _forward(self, addr):
        conn, resp = self._upstream(addr, stream=True)
        try:
            self._relay(resp)
        finally:
            conn.close()

    def _upstream(self, addr, body: bytes | None = None, stream: bool = False):
        """Send this request upstream; body is either given or streamed from the client."""
        # A fresh loopback connection per request: costs ~0.1 ms and avoids retry logic
        # around stale pooled connections.
        conn = http.client.HTTPConnection(*addr, timeout=UPSTREAM_TIMEOUT)
        conn.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
        for key, value in self.headers.items():
            if key.lower() not in HOP_BY_HOP:
                conn.putheader(key, value)
        conn.putheader("X-Forwarded-Proto", "https")
        conn.putheader("X-Forwarded-For", self.client_address[0])
        chunked = self._is_chunked()
        if body is not None:
            conn.putheader("Content-Length", str(len(body)))
            conn.endheaders(body)
            return conn, conn.getresponse()
        if stream and chunked:
            conn.putheader("Transfer-Encoding", "chunked")
            frame = lambda piece: b"%x\r\n%b\r\n" % (len(piece), piece)  # noqa: E731
            trailer = b"0\r\n\r\n"
        elif stream and self.headers.get("Content-Length") is not None:
            conn.putheader("Content-Length", self.headers["Content-Length"])
            frame, trailer = (lambda piece: piece), b""
        else:
            conn.endheaders()
            return conn, conn.getresponse()
        conn.endheaders()
        pieces = self._iter_body()
        try:
            for piece in pieces:
                conn.send(frame(piece))
            if trailer:
                conn.send(trailer)
        except (BrokenPipeError, ConnectionResetError):
            # The upstream answered early (e.g. the registry's 401 to a PATCH without
            # credentials) and hung up mid-body. Swallow the rest of the client's body so
            # the client can read an answer instead of hitting a broken pipe, then relay
            # the early answer if the socket still holds it.
            for _ in pieces:
                pass
            self.close_connection = True
            try:
                return conn, conn.getresponse()
            except (OSError, http.client.HTTPException):
                conn.close()
                raise UpstreamGone() from None
        return conn, conn.getresponse()

    def _relay(self, resp: http.client.HTTPResponse, body: bytes | None = None):
        """Copy an upstream response to the client, streaming unless body is given."""
        self._status = resp.status
        bodiless = self.command == "HEAD" or resp.status in (204, 304) or resp.status < 200
        self.send_response_only(resp.status, resp.reason)
        for key, value in resp.getheaders():
            lower = key.lower()
            if lower in HOP_BY_HOP:
                continue
            if lower == "location":
                value = rewrite_location(value)
            self.send_header(key, value)
        length = resp.getheader("Content-Length")
        if body is not None and not bodiless:
            length = str(len(body))
        if length is not None:
            # HEAD keeps the upstream length: docker reads a blob's size from it.
            self.send_header("Content-Length", length)
        chunked = not bodiless and length is None
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
        self._end_headers()
        if bodiless:
            return
        try:
            if body is not None:
                self.wfile.write(body)
                return
            while True:
                piece = resp.read1(BUF)
                if not piece:
                    break
                self.wfile.write(b"%x\r\n%b\r\n" % (len(piece), piece) if chunked else piece)
            if chunked:
                self.wfile.write(b"0\r\n\r\n")
        except (OSError, ssl.SSLError) as exc:
            raise ClientGone() from exc

    def _end_headers(self):
        if self.close_connection:
            self.send_header("Connection", "close")
        try:
            self.end_headers()
        except (OSError, ssl.SSLError) as exc:
            raise ClientGone() from exc
        self._sent_headers = True

    def _is_chunked(self) -> bool:
        return "chunked" in (self.headers.get("Transfer-Encoding") or "").lower()

    def _iter_body(self):
        """Yield the client's request body in pieces, undoing chunked framing."""
        if self._body is not None:  # already read (see _inject): replay it once
            body, self._body = self._body, b""
            if body:
                yield body
            return
        rfile = self.rfile
        try:
            if self._is_chunked():
                while True:
                    line = rfile.readline(1024)
                    if not line:
                        raise ClientGone()
                    size = int(line.split(b";", 1)[0].strip() or b"0", 16)
                    if size == 0:
                        while rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                            pass  # trailers: dropped
                        return
                    while size:
                        piece = rfile.read(min(size, BUF))
                        if not piece:
                            raise ClientGone()
                        size -= len(piece)
                        yield piece
                    rfile.readline(16)  # CRLF after each chunk
            else:
                remaining = int(self.headers.get("Content-Length") or 0)
                while remaining:
                    piece = rfile.read(min(remaining, BUF))
                    if not piece:
                        raise ClientGone()
                    remaining -= len(piece)
                    yield piece
        except (OSError, ssl.SSLError) as exc:
            raise ClientGone() from exc

    def _read_body(self, limit: int) -> bytes | None:
        parts, total = [], 0
        pieces = self._iter_body()
        for piece in pieces:
            total += len(piece)
            if total > limit:
                for _ in pieces:  # keep the kept-alive connection in sync
                    pass
                return None
            parts.append(piece)
        return b"".join(parts)

    def _drain_body(self):
        """Consume an unused request body so the kept-alive connection stays in sync."""
        for _ in self._iter_body():
            pass

    def _json_error(self, status: int, code: str, message: str):
        payload = json.dumps({"errors": [{"code": code, "message": message}]}).encode()
        self._answer(status, "application/json", payload)


    def _try_json_error(self, status: int, code: str, message: str):
        # Last-ditch answer: only if nothing went out yet, and the client may be gone.
        if not self._sent_headers:
            try:
                self._json_error(status, code, message)
            except Exception:  # noqa: BLE001
                pass


class ControlHandler(BaseHTTPRequestHandler):
    """The fault control API (plain HTTP, loopback):

      POST   /faults   add one rule (JSON object; see parse_fault) -> 201 {"added": rule}
      GET    /faults   {"pending": [rules], "injected": N, "refusing": seconds left}
      DELETE /faults   drop every pending rule, end a "refuse", zero the counter
    """
    protocol_version = "HTTP/1.1"
    server_version = "ecr-standin-faults"

    def log_message(self, fmt, *args):
        pass

    def _answer(self, status: int, payload: dict):
        body = json.dumps(payload).encode()
        self.send_response_only(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _front(self) -> Front:
        return self.server.front  # type: ignore[attr-defined]

    def _route_ok(self) -> bool:
        path = urlsplit(self.path).path.rstrip("/")
        if path == "/faults":
            return True
        if path == "/scans":
            self._scans()
            return False
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        self._answer(404, {"error": "only /faults and /scans exist"})
        return False

    def _scans(self):
        """POST /scans {"repository": R, "describe": [...], "start": [...]} sets R's
        script (201); GET /scans?repository=R -> {"describe": calls, "start": calls}."""
        scans = self._front().scans
        if self.command == "GET":
            query = dict(p.split("=", 1) for p in urlsplit(self.path).query.split("&") if "=" in p)
            return self._answer(200, scans.calls(query.get("repository", "")))
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if self.command != "POST":
            return self._answer(405, {"error": "GET or POST /scans"})
        try:
            repository, script = Scans.parse(json.loads(raw or b"null"))
        except (ValueError, FaultSpecError) as exc:
            return self._answer(400, {"error": str(exc)})
        scans.set(repository, script)
        log.info("- - - - scan script for %s: %s", repository, json.dumps(script, sort_keys=True))
        self._answer(201, {"repository": repository, **script})

    def do_GET(self):
        if self._route_ok():
            refusing = max(front.refusing for front in self.server.fronts.values())  # type: ignore[attr-defined]
            self._answer(200, dict(self._front().faults.snapshot(), refusing=round(refusing, 3)))

    def do_DELETE(self):
        if self._route_ok():
            dropped = self._front().faults.clear()
            for front in set(self.server.fronts.values()):  # type: ignore[attr-defined]
                if front.refusing:
                    front.stop_refusing()
            self._answer(200, {"cleared": dropped})

    def do_POST(self):
        if not self._route_ok():
            return
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            rule = parse_fault(json.loads(raw or b"null"))
        except (ValueError, FaultSpecError) as exc:  # JSONDecodeError is a ValueError
            return self._answer(400, {"error": str(exc)})
        front = self._front()
        rule = front.faults.add(rule)
        log.info("- - - - fault added: %s", json.dumps(rule, sort_keys=True))
        if rule["mode"] == "refuse":
            fronts = self.server.fronts  # type: ignore[attr-defined]
            targets = {fronts[rule["route"]]} if rule["route"] else set(fronts.values())
            for target in targets:
                target.refuse(rule["seconds"])
        self._answer(201, {"added": rule})


class Control(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, addr, fronts: dict[str, Front]):
        # route -> the listener serving it (one Front may serve both)
        self.fronts = fronts
        self.front = fronts["registry"]
        super().__init__(addr, ControlHandler)

    def server_bind(self):
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]


def rewrite_location(value: str) -> str:
    # The registry is told its external URL, but a Location naming the loopback port
    # would send clients around the front (and around the ECR rules).
    for internal in ("http://127.0.0.1:5002", "http://localhost:5002"):
        if value.startswith(internal):
            return f"https://{REGISTRY_HOST}" + value[len(internal):]
    return value


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--listen", default="127.0.0.2:443")
    ap.add_argument("--api-listen",
                    help="a second listener for the ECR API host, so faults like 'refuse' can "
                         "hit the registry alone, as two ECR hosts would fail separately")
    ap.add_argument("--cert", required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--moto", default="127.0.0.1:5001")
    ap.add_argument("--registry", default="127.0.0.1:5002")
    ap.add_argument("--control", default="127.0.0.1:5005",
                    help="plain-HTTP fault control API (keep it on loopback)")
    ap.add_argument("--log", required=True, help="one line per request goes here")
    ap.add_argument("--pid-file")
    args = ap.parse_args()

    handler = logging.FileHandler(args.log)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)

    def addr(text):
        host, port = text.rsplit(":", 1)
        return host, int(port)

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(args.cert, args.key)
    ctx.set_alpn_protocols(["http/1.1"])  # no h2: keep Go clients on HTTP/1.1

    moto_addr = addr(args.moto)
    moto = Moto(f"http://{moto_addr[0]}:{moto_addr[1]}")
    faults = Faults()
    scans = Scans()
    server = Front(addr(args.listen), ctx, moto, moto_addr, addr(args.registry), faults, scans)
    fronts = {"registry": server, "api": server}
    if args.api_listen:
        api = Front(addr(args.api_listen), ctx, moto, moto_addr, addr(args.registry), faults,
                    scans)
        fronts["api"] = api
        threading.Thread(target=api.serve, name="api-listener", daemon=True).start()
    control = Control(addr(args.control), fronts)
    threading.Thread(target=control.serve_forever, kwargs={"poll_interval": 0.5},
                     name="control", daemon=True).start()
    if args.pid_file:
        with open(args.pid_file, "w") as f:
            f.write(f"{os.getpid()}\n")
    log.info("listening on %s, fault control API on http://%s", args.listen, args.control)
    try:
        server.serve()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
