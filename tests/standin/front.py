#!/usr/bin/env python3
"""TLS front of the ECR stand-in: one HTTPS listener that plays both ECR hosts (and S3's).

  api.ecr.us-east-1.amazonaws.com               -> moto server, except the operations the
                                                   front answers itself (front_api.py):
                                                   GetAuthorizationToken, account settings,
                                                   repository creation templates,
                                                   ListImageReferrers, and the visibility
                                                   window of DescribeImages & co.
  123456789012.dkr.ecr.us-east-1.amazonaws.com  -> docker-registry, plus the ECR rules
                                                   a plain registry lacks (front_registry.py)
  prod-us-east-1-starport-layer-bucket.s3.us-east-1.amazonaws.com
                                                -> S3's side of ECR's blob redirects
  kms.us-east-1.amazonaws.com                   -> moto's KMS, with per-key deny rules
                                                   (front_kms.py)
  the other private registries and their APIs  -> the same, per (account, region), each
  (123456789012 in us-west-2 with its FIPS and     its own moto account+region and registry
  dual-stack names, 210987654321 in eu-west-1)     namespace (front_targets.py)
  sts.amazonaws.com, sts.<region>.amazonaws.com -> moto's STS, AssumeRole recorded (front_sts.py)
  api.ecr-public.us-east-1.amazonaws.com,       -> ECR Public, answered by the front
  public.ecr.aws                                   (front_public.py)

Every private registry's manifest PUTs are replicated by its replication configuration
(PutReplicationConfiguration, answered by the front at every private API host) into the
destination registries' namespaces and moto accounts (front_replication.py).

Plain-HTTP control API for tests (default 127.0.0.1:5005, front_control.py): fault
injection (/faults, front_faults.py), scripted scan answers (/scans), registry token
lifetimes (/tokens), eventual consistency (/visibility), per-repository modes (/mode),
counters (/stats), refused referrers (/referrers), managed signing (/signing), KMS
denials (/kms), AssumeRole records (/sts), the deny switch (/deny), ECR Public's switches
and counters (/public), replication's delay and fail switch (/replication), and /reset. What it remembers lives in front_state.py.

API requests signed with the access key ids AKIADENIEDEXAMPLE / AKIAEXPIREDEXAMPLE are
always refused like ECR refuses bad or expired credentials. Every injected or emulated
answer is marked "injected:..." in the request log.

Standard library only, apart from boto3 (shipped with moto) to talk to moto. Bodies
are streamed in both directions, never buffered whole, except manifests and API bodies
(small, and needed). One thread per client connection.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import select
import socket
import socketserver
import ssl
import struct
import sys
import threading
import time
import uuid
import http.client
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import quote, unquote, urlsplit

from front_api import ApiMixin
from front_common import (ACCOUNT, API_HOST, KMS_HOST, REGISTRY_HOST, S3_HOST, S3_PREFIX,
                          VPCE_API_HOST, ClientGone, UpstreamGone, access_key_of, log,
                          query_params)
from front_control import Control
from front_faults import (API_FAULT_MESSAGES, CREDENTIAL_FAULTS, REGISTRY_FAULT_CODES,
                          REGISTRY_REPOSITORY, RESET_READ_LIMIT, Faults, Scans)
from front_kms import KmsMixin
from front_moto import Moto
from front_public import PUBLIC_API_HOSTS, PUBLIC_HOST, PublicMixin
from front_registry import RegistryMixin, rewrite_location
from front_state import EcrState
from front_sts import StsMixin
from front_targets import (API_HOSTS, HIDDEN_PREFIXES, PRIMARY, REGISTRY_HOSTS, STS_HOSTS,
                           Target, target_moto_class)

BUF = 256 * 1024                 # copy size: big enough that a 50 MB layer costs few syscalls
API_BODY_LIMIT = 4 * 1024 * 1024
UPSTREAM_TIMEOUT = 300
CLIENT_IDLE_TIMEOUT = 300

# Headers that describe one hop, not the message (RFC 9110 7.6.1); we re-frame bodies ourselves.
HOP_BY_HOP = {
    "connection", "keep-alive", "proxy-connection", "proxy-authenticate",
    "proxy-authorization", "te", "trailer", "transfer-encoding", "upgrade",
    "content-length", "expect",
}


class Front(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def __init__(self, addr, ctx: ssl.SSLContext, moto: Moto, moto_addr, registry_addr,
                 faults: Faults, scans: Scans, state: EcrState):
        self.ctx = ctx
        self.scans = scans
        self.state = state
        self.moto = moto
        self.moto_addr = moto_addr
        self.registry_addr = registry_addr
        self.faults = faults
        # One moto client per non-primary registry (front_targets.TargetMoto).
        self._motos: dict[Target, Moto] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._link_locks: dict[str, threading.Lock] = {}
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

    def moto_for(self, target: Target) -> Moto:
        if target.primary:
            return self.moto
        with self._locks_guard:
            if target not in self._motos:
                self._motos[target] = target_moto_class()(self.moto.url, target)
            return self._motos[target]

    def repo_lock(self, name: str) -> threading.Lock:
        # Serialises check-then-put on one repository, so two parallel pushes of
        # different images to one immutable tag cannot both win.
        with self._locks_guard:
            return self._locks.setdefault(name, threading.Lock())

    def link_lock(self, name: str) -> threading.Lock:
        # The reference registry rewrites a blob's link in a repository in place
        # (truncate, then write: distribution's filesystem driver, PutContent). A manifest
        # PUT that reads the link in between finds it empty and is refused 400
        # DIGEST_INVALID, which ECR never answers to a manifest PUT; two pushes of one blob
        # to one repository (matrix legs) hit it. Everything that writes a link, and every
        # manifest PUT, holds this lock so the registry's race is not taken for ECR's.
        with self._locks_guard:
            return self._link_locks.setdefault(name, threading.Lock())

    def handle_error(self, request, client_address):
        exc = sys.exc_info()[1]
        log.info("%s connection error: %s: %s", client_address[0], type(exc).__name__, exc)


class Handler(ApiMixin, RegistryMixin, KmsMixin, StsMixin, PublicMixin, BaseHTTPRequestHandler):
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

    @property
    def moto(self) -> Moto:
        """moto's view of the registry this request is about (front_targets)."""
        return self.server.moto_for(self.target)

    # Every method goes through one path: the proxy does not care about verbs.
    def do_GET(self):
        self._serve()

    do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = do_GET

    def _serve(self):
        started = time.monotonic()
        self._status = 0
        self._sent_headers = False
        self._injected = None
        # An ECR rule this answer played (not a fault): marked `ecr:<rule>` in the log.
        self._rule = None
        self._body = None
        host = (self.headers.get("Host") or "").rsplit(":", 1)[0].lower()
        if host == VPCE_API_HOST:
            # As ECR behind an endpoint: the region (and so the registry host moto's
            # token names) comes from the API's own name.
            host = API_HOST
            del self.headers["Host"]
            self.headers["Host"] = API_HOST
        # The host the client named (a registry's FIPS or dual-stack name included), and
        # the registry the request is about: the host's, or for the API the caller's
        # account in the API host's region.
        self._host = host
        self.target = PRIMARY
        route = None
        if host in REGISTRY_HOSTS:
            route, self.target = "registry", REGISTRY_HOSTS[host]
        elif host in API_HOSTS:
            route = "api"
            self._api_region = API_HOSTS[host]
            if host != API_HOST:
                # moto takes the region from the host name before the signature; a FIPS or
                # dual-stack name it cannot parse would land in its default region.
                del self.headers["Host"]
                self.headers["Host"] = f"api.ecr.{self._api_region}.amazonaws.com"
            account, _ = self._principal(access_key_of(self.headers.get("Authorization")))
            self.target = Target(account, self._api_region)
        try:
            if route and self._inject(route):
                pass  # a fault answered (or dropped) the request
            elif (route == "api" or host in PUBLIC_API_HOSTS) and self._refuse_credentials():
                pass
            elif host == S3_HOST or (host == API_HOST
                                     and urlsplit(self.path).path.startswith(S3_PREFIX + "/")):
                self._presigned_get()
            elif route == "api" and self._api_guard(self._api_region):
                pass
            elif host == API_HOST and self.target.primary and self._scripted_scan():
                pass
            elif route == "api" and self._api_intercept():
                pass
            elif route == "api":
                self._forward(self.server.moto_addr)
            elif route == "registry":
                self._enter_namespace()
                if urlsplit(self.path).path == "/v2/_catalog":
                    self._catalog()
                else:
                    self._registry()
            elif host in STS_HOSTS:
                self._sts()
            elif host in PUBLIC_API_HOSTS:
                self._public_api(PUBLIC_API_HOSTS[host])
            elif host == PUBLIC_HOST:
                self._public_registry()
            elif host == KMS_HOST:
                self._kms()
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
                     (f" injected:{self._injected}" if self._injected else "")
                     + (f" ecr:{self._rule}" if self._rule else ""))

    # --- scripted scans ---------------------------------------------------------------

    SCAN_ACTIONS = {"DescribeImageScanFindings": "describe", "StartImageScan": "start"}

    def _scripted_scan(self) -> bool:
        """Answers a scan call from the repository's script; True if it answered. An
        unscripted call is forwarded to moto with the body already read."""
        action = (self.headers.get("X-Amz-Target") or "").rsplit(".", 1)[-1]
        op = self.SCAN_ACTIONS.get(action)
        if op is None:
            return False
        body = self._read_body(API_BODY_LIMIT) or b"{}"
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
                self._body = self._read_body(API_BODY_LIMIT)
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
            # As ECR answers every blob GET (and now the default for them, see
            # front_registry): a 307 to a presigned URL. The registry's credentials here are
            # what the client sent (this runs before the token swap), so the S3 side swaps.
            self._redirect_to_s3()
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
        """S3's side of a blob redirect: the signature in the URL is the credential, and a
        request that also carries an Authorization header is refused, as S3 refuses it."""
        self._drain_body()
        query = dict(p.split("=", 1) for p in urlsplit(self.path).query.split("&") if "=" in p)
        if self.headers.get("Authorization"):
            return self._s3_error(400, "InvalidArgument", "Only one auth mechanism allowed; only "
                                  "the X-Amz-Algorithm query parameter, Signature query string "
                                  "parameter or the Authorization header should be specified")
        found = self.server.state.presigned.get(query.get("X-Amz-Signature", ""))
        if found is None or self.command != "GET":
            return self._s3_error(403, "AccessDenied", "Access Denied")
        self.path, authorization = found
        del self.headers["Host"]
        self.headers["Host"] = REGISTRY_HOST
        if authorization:
            # A presigned URL is its own credential: swap a token the front issued (a
            # "redirect" fault kept the client's own header) even if it expired since.
            self.headers["Authorization"] = self._registry_authorization(authorization)
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

    def _answer_empty(self, status: int, headers: dict):
        """A bodiless answer (201 to a PATCH, 307 to a blob GET) with these headers."""
        self._status = status
        self.send_response_only(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Docker-Distribution-Api-Version", "registry/2.0")
        self.send_header("Content-Length", "0")
        self._end_headers()

    def _refuse_credentials(self) -> bool:
        refusal = CREDENTIAL_FAULTS.get(access_key_of(self.headers.get("Authorization")))
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

    def _relay(self, resp: http.client.HTTPResponse, body: bytes | None = None,
               status: int | None = None, replace: dict | None = None, drop=()):
        """Copy an upstream response to the client, streaming unless body is given;
        `status` and `replace` (header -> value) override, `drop` names headers to leave out."""
        status = status or resp.status
        if body is None and self._namespace_prefix() and (resp.getheader("Content-Type") or "") \
                .startswith("application/json") and self.command != "HEAD":
            # Errors, tag lists: small JSON that may name the internal repository.
            body = resp.read().replace(self._namespace_prefix().encode() + b"/", b"")
        replace = {k.lower(): (k, v) for k, v in (replace or {}).items()}
        self._status = status
        bodiless = self.command == "HEAD" or status in (204, 304) or status < 200
        self.send_response_only(status, None if status != resp.status else resp.reason)
        for key, value in resp.getheaders():
            lower = key.lower()
            if lower in HOP_BY_HOP or lower in drop:
                continue
            if lower in replace:
                key, value = replace.pop(lower)
            elif lower == "location":
                value = self._outward_location(value)
            elif lower == "www-authenticate" and self._host != REGISTRY_HOST:
                value = value.replace(REGISTRY_HOST, self._host)
            self.send_header(key, value)
        for key, value in replace.values():
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

    # --- registry namespaces (front_targets) ----------------------------------------------

    def _namespace_prefix(self) -> str:
        """The internal prefix of the registry host this request came to ("" for the
        primary and the API hosts)."""
        if self._host == PUBLIC_HOST:
            return self._public_prefix()
        return self.target.prefix if self._host in REGISTRY_HOSTS else ""

    def _outward_location(self, value: str) -> str:
        if self._host == PUBLIC_HOST:
            return rewrite_location(value, PUBLIC_HOST, self._public_prefix())
        if self._host in REGISTRY_HOSTS:
            return rewrite_location(value, self._host, self.target.prefix)
        return rewrite_location(value)

    def _enter_namespace(self) -> None:
        """/v2/<name>/... at a non-primary registry host becomes /v2/<prefix>/<name>/...,
        and a mount's `from=` names the source in the same registry."""
        prefix = self.target.prefix
        if not prefix:
            return
        parts = urlsplit(self.path)
        path = parts.path
        if path.startswith("/v2/") and path not in ("/v2/", "/v2/_catalog"):
            path = f"/v2/{prefix}/{path[4:]}"
        pairs = []
        for pair in parts.query.split("&"):
            key, _, value = pair.partition("=")
            if pair:
                pairs.append(f"from={prefix}/{value}" if key == "from" else pair)
        query = "&".join(pairs)
        self.path = path + (f"?{query}" if query else "")

    def _catalog(self) -> None:
        """The registry's catalog, reduced to this host's repositories (a non-primary
        host sees its own, without the prefix; the primary never sees the internal ones)."""
        credentials = self._registry_credentials(None)
        if credentials is None:
            return  # answered (an expired or another registry's token)
        if not credentials[0]:
            return self._forward(self.server.registry_addr)  # the registry's 401
        prefix = self._namespace_prefix()
        if prefix:
            # The registry pages its catalog in name order (100 a page): start the page at
            # this registry's namespace (or after the client's `last` in it), or a busy
            # registry's first page would hold none of its repositories.
            params = dict(query_params(urlsplit(self.path).query))
            last = f"{prefix}/{unquote(params['last'])}" if params.get("last") else prefix
            self.path = f"/v2/_catalog?n={params.get('n') or 100}&last={quote(last, safe='')}"
        conn, resp = self._upstream(self.server.registry_addr)
        try:
            answer = resp.read()
            if resp.status != 200:
                return self._relay(resp, answer)
            try:
                names = json.loads(answer).get("repositories") or []
            except (ValueError, AttributeError):
                return self._relay(resp, answer)
            prefix = self._namespace_prefix()
            if prefix:
                names = [n[len(prefix) + 1:] for n in names if n.startswith(prefix + "/")]
            else:
                names = [n for n in names if not n.startswith(HIDDEN_PREFIXES)]
            self._relay(resp, json.dumps({"repositories": names}).encode(),
                        drop=("link",) if prefix else ())
        finally:
            conn.close()

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
                    help="plain-HTTP control API for tests (keep it on loopback)")
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
    state = EcrState()
    state.signing.bind(moto, addr(args.registry))
    server = Front(addr(args.listen), ctx, moto, moto_addr, addr(args.registry), faults, scans, state)
    fronts = {"registry": server, "api": server}
    if args.api_listen:
        api = Front(addr(args.api_listen), ctx, moto, moto_addr, addr(args.registry), faults,
                    scans, state)
        fronts["api"] = api
        threading.Thread(target=api.serve, name="api-listener", daemon=True).start()
    control = Control(addr(args.control), fronts)
    threading.Thread(target=control.serve_forever, kwargs={"poll_interval": 0.5},
                     name="control", daemon=True).start()
    if args.pid_file:
        with open(args.pid_file, "w") as f:
            f.write(f"{os.getpid()}\n")
    log.info("listening on %s, control API on http://%s", args.listen, args.control)
    try:
        server.serve()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
