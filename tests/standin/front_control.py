"""The front's control API for tests (plain HTTP, loopback; README.md documents it):

  POST   /faults      add one fault rule                   -> 201 {"added": rule}
  GET    /faults      {"pending": [...], "injected": N, "refusing": seconds}
  DELETE /faults      drop pending rules, end a "refuse"   (nothing else)
  POST   /scans       a repository's scripted scan answers -> 201
  GET    /scans?repository=R                               -> {"describe": N, "start": N}
  POST   /tokens      {"access_key", "lifetime"}           -> 201 {"access_key", "lifetime", "issued"}
  GET    /tokens?access_key=K                              -> {"access_key", "lifetime", "issued"}
  POST   /visibility  {"repository", "seconds"}            -> 201 {"repository", "seconds"}
  GET    /visibility?repository=R                          -> {"repository", "seconds", "hidden": {...}}
  POST   /mode        {"repository", "mode", "patches"?}   -> 201 {"repository", "mode", "patches"}
  GET    /mode?repository=R                                -> {"repository", "mode", "patches"}
  GET    /stats?repository=R                               -> counters (front_state.Stats)
  POST   /referrers   {"repository", "refuse"}             -> 201 {"repository", "refuse"}
  GET    /referrers?repository=R                           -> {"repository", "refuse"}
  POST   /signing     {"repository", "digest"?, "status", "seconds"?, "failure_code"?,
                       "failure_reason"?}                  -> 201 {"repository", "digest", "script"}
  GET    /signing?repository=R                             -> {"repository", "script", "images"}
  POST   /kms         {"key", "deny": [operations]}        -> 201 {"key", "key_id", "deny"}
  GET    /kms?key=K                                        -> {"key", "key_id", "deny"}
  DELETE /stats?repository=R                               -> {"cleared": R}
  GET    /sts         every AssumeRole through the front  -> {"calls": [...]}
  POST   /sts         {"deny": [role ARNs]}  -> 201: AssumeRole of those gets 403 AccessDenied
  POST   /deny        {"account", "repository", "allow"?}  -> 201 {"account", "repository"}
                      (`"allow": true` lifts the refusal)
  GET    /deny                                             -> {"denied": [...]}
  POST   /public      {"deny_bearer"?, "token_lifetime"?}  -> 201 GET /public's answer
  GET    /public      ECR Public's counters and switches   -> {"calls", "token_lifetime", ...}
  POST   /replication {"delay"?, "fail"?, "failure_code"?} -> 201 GET /replication's answer
  GET    /replication configurations, switches, statuses  -> {"delay", "fail", "failure_code",
                                                              "configurations", "images"}
  POST   /reset       everything the front remembers, emptied -> {"reset": true}

Every body is one JSON object; an unknown field or a bad value gets 400 {"error": ...}.
"""
from __future__ import annotations

import json
import re
import socketserver
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from front_common import SpecError, log
from front_faults import Scans, parse_fault
from front_state import Modes, Tokens, Visibility

ACCESS_KEY = re.compile(r"^[A-Za-z0-9]{1,128}$")
REPOSITORY = re.compile(r"^[a-z0-9]+(?:[._-][a-z0-9]+)*(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*$")


def body_object(raw: bytes, allowed: set[str], required: set[str]) -> dict:
    try:
        spec = json.loads(raw or b"null")
    except ValueError as exc:
        raise SpecError(f"the body is not JSON: {exc}") from None
    if not isinstance(spec, dict):
        raise SpecError("the body must be a JSON object")
    unknown = set(spec) - allowed
    if unknown:
        raise SpecError(f"unknown field(s): {', '.join(sorted(unknown))}")
    missing = required - set(spec)
    if missing:
        raise SpecError(f"missing field(s): {', '.join(sorted(missing))}")
    return spec


def repository_field(spec: dict) -> str:
    name = spec["repository"]
    if not isinstance(name, str) or not 2 <= len(name) <= 256 or not REPOSITORY.match(name):
        raise SpecError("repository must be an ECR repository name (lower case, 2-256 characters)")
    return name


def number(value, low: float, high: float, what: str, integer: bool = False):
    kinds = (int,) if integer else (int, float)
    if not isinstance(value, kinds) or isinstance(value, bool) or not low <= value <= high:
        raise SpecError(f"{what} must be {'an integer' if integer else 'a number'} from {low:g} to {high:g}")
    return value


class ControlHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "ecr-standin-control"

    def log_message(self, fmt, *args):
        pass

    def _answer(self, status: int, payload: dict):
        body = json.dumps(payload).encode()
        self.send_response_only(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    @property
    def _front(self):
        return self.server.front  # type: ignore[attr-defined]

    @property
    def _state(self):
        return self._front.state

    def _query(self) -> dict[str, str]:
        return {k: v[0] for k, v in parse_qs(urlsplit(self.path).query).items()}

    def _dispatch(self):
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        resource = urlsplit(self.path).path.rstrip("/").lstrip("/")
        handler = getattr(self, f"_{self.command.lower()}_{resource}", None)
        if handler is None:
            if hasattr(self, f"_get_{resource}") or hasattr(self, f"_post_{resource}"):
                return self._answer(405, {"error": f"{self.command} /{resource} is not supported"})
            return self._answer(404, {"error": "no such resource; see tests/standin/README.md"})
        try:
            status, payload = handler(raw)
        except SpecError as exc:
            return self._answer(400, {"error": str(exc)})
        self._answer(status, payload)

    do_GET = do_POST = do_DELETE = do_PUT = do_PATCH = _dispatch

    # --- faults ------------------------------------------------------------------------

    def _get_faults(self, _raw):
        refusing = max(front.refusing for front in self.server.fronts.values())  # type: ignore[attr-defined]
        return 200, dict(self._front.faults.snapshot(), refusing=round(refusing, 3))

    def _delete_faults(self, _raw):
        dropped = self._front.faults.clear()
        for front in set(self.server.fronts.values()):  # type: ignore[attr-defined]
            if front.refusing:
                front.stop_refusing()
        return 200, {"cleared": dropped}

    def _post_faults(self, raw):
        try:
            spec = json.loads(raw or b"null")
        except ValueError as exc:
            raise SpecError(f"the body is not JSON: {exc}") from None
        rule = self._front.faults.add(parse_fault(spec))
        log.info("- - - - fault added: %s", json.dumps(rule, sort_keys=True))
        if rule["mode"] == "refuse":
            fronts = self.server.fronts  # type: ignore[attr-defined]
            targets = {fronts[rule["route"]]} if rule["route"] else set(fronts.values())
            for target in targets:
                target.refuse(rule["seconds"])
        return 201, {"added": rule}

    # --- scans -------------------------------------------------------------------------

    def _get_scans(self, _raw):
        return 200, self._front.scans.calls(self._query().get("repository", ""))

    def _post_scans(self, raw):
        try:
            spec = json.loads(raw or b"null")
        except ValueError as exc:
            raise SpecError(f"the body is not JSON: {exc}") from None
        repository, script = Scans.parse(spec)
        self._front.scans.set(repository, script)
        log.info("- - - - scan script for %s: %s", repository, json.dumps(script, sort_keys=True))
        return 201, {"repository": repository, **script}

    # --- tokens ------------------------------------------------------------------------

    def _post_tokens(self, raw):
        spec = body_object(raw, {"access_key", "lifetime"}, {"access_key", "lifetime"})
        key = spec["access_key"]
        if not isinstance(key, str) or not ACCESS_KEY.match(key):
            raise SpecError("access_key must be an access key id (1-128 letters and digits)")
        lifetime = number(spec["lifetime"], 1, Tokens.MAX_LIFETIME, "lifetime (seconds)", integer=True)
        self._state.tokens.set_lifetime(key, lifetime)
        log.info("- - - - token lifetime for %s: %d s", key, lifetime)
        return 201, self._state.tokens.info(key)

    def _get_tokens(self, _raw):
        key = self._query().get("access_key")
        if not key:
            raise SpecError("GET /tokens?access_key=K")
        return 200, self._state.tokens.info(key)

    # --- visibility --------------------------------------------------------------------

    def _post_visibility(self, raw):
        spec = body_object(raw, {"repository", "seconds"}, {"repository", "seconds"})
        repository = repository_field(spec)
        seconds = number(spec["seconds"], 0, Visibility.MAX_SECONDS, "seconds")
        self._state.visibility.set(repository, float(seconds))
        log.info("- - - - visibility delay for %s: %s s", repository, seconds)
        return 201, {"repository": repository, "seconds": seconds}

    def _get_visibility(self, _raw):
        repository = self._query().get("repository")
        if not repository:
            raise SpecError("GET /visibility?repository=R")
        visibility = self._state.visibility
        digests, tags = visibility.hidden(repository)
        return 200, {"repository": repository, "seconds": visibility.seconds(repository),
                     "hidden": {"digests": sorted(digests), "tags": sorted(tags)}}

    # --- modes -------------------------------------------------------------------------

    def _post_mode(self, raw):
        spec = body_object(raw, {"repository", "mode", "patches"}, {"repository", "mode"})
        repository = repository_field(spec)
        mode = spec["mode"]
        if mode not in Modes.MODES:
            raise SpecError(f"mode must be one of {', '.join(Modes.MODES)}")
        patches = spec.get("patches", "drop")
        if patches not in Modes.PATCHES:
            raise SpecError(f"patches must be one of {', '.join(Modes.PATCHES)}")
        if mode == "reference" and "patches" in spec:
            raise SpecError("patches only applies to mode 'ecr'")
        self._state.modes.set(repository, mode, patches)
        log.info("- - - - mode of %s: %s (later PATCHes: %s)", repository, mode, patches)
        return 201, {"repository": repository, "mode": mode, "patches": patches}

    def _get_mode(self, _raw):
        repository = self._query().get("repository")
        if not repository:
            raise SpecError("GET /mode?repository=R")
        mode, patches = self._state.modes.get(repository)
        return 200, {"repository": repository, "mode": mode, "patches": patches}

    # --- stats -------------------------------------------------------------------------

    def _get_stats(self, _raw):
        repository = self._query().get("repository")
        if not repository:
            raise SpecError("GET /stats?repository=R")
        return 200, dict(self._state.stats.get(repository), repository=repository)

    def _delete_stats(self, _raw):
        repository = self._query().get("repository")
        if not repository:
            raise SpecError("DELETE /stats?repository=R")
        self._state.stats.clear(repository)
        return 200, {"cleared": repository}

    # --- referrers ---------------------------------------------------------------------

    def _post_referrers(self, raw):
        spec = body_object(raw, {"repository", "refuse"}, {"repository", "refuse"})
        repository = repository_field(spec)
        if not isinstance(spec["refuse"], bool):
            raise SpecError("refuse must be true or false")
        self._state.refuse_referrers.set(repository, spec["refuse"])
        log.info("- - - - referrer pushes to %s: %s", repository, "refused" if spec["refuse"] else "accepted")
        return 201, {"repository": repository, "refuse": spec["refuse"]}

    def _get_referrers(self, _raw):
        repository = self._query().get("repository")
        if not repository:
            raise SpecError("GET /referrers?repository=R")
        return 200, {"repository": repository, "refuse": self._state.refuse_referrers.get(repository)}

    # --- managed signing ---------------------------------------------------------------

    def _post_signing(self, raw):
        from front_signing import parse_script
        repository, digest, script = parse_script(raw)
        self._state.signing.set_script(repository, digest, script)
        log.info("- - - - signing script for %s%s: %s", repository, f"@{digest}" if digest else "",
                 json.dumps(script, sort_keys=True))
        return 201, {"repository": repository, "digest": digest, "script": script}

    def _get_signing(self, _raw):
        query = self._query()
        repository = query.get("repository")
        if not repository:
            raise SpecError("GET /signing?repository=R[&digest=D]")
        signing = self._state.signing
        return 200, {"repository": repository, "script": signing.script(repository, query.get("digest")),
                     "images": signing.snapshot(repository)}

    # --- KMS -----------------------------------------------------------------------------

    def _post_kms(self, raw):
        from front_kms import parse_rule
        key, deny = parse_rule(body_object(raw, {"key", "deny"}, {"key", "deny"}))
        key_id = self._front.moto.kms_key_id(key)
        if key_id is None:
            raise SpecError(f"no KMS key {key!r} in moto (create it first)")
        self._state.kms.set(key_id, deny)
        log.info("- - - - KMS key %s (%s): denied %s", key_id, key, ", ".join(deny) or "nothing")
        return 201, {"key": key, "key_id": key_id, "deny": deny}

    def _get_kms(self, _raw):
        key = self._query().get("key")
        if not key:
            raise SpecError("GET /kms?key=K")
        key_id = self._front.moto.kms_key_id(key)
        if key_id is None:
            raise SpecError(f"no KMS key {key!r} in moto")
        return 200, {"key": key, "key_id": key_id, "deny": self._state.kms.denied(key_id)}

    # --- STS, the deny switch, ECR Public ------------------------------------------------

    def _get_sts(self, _raw):
        return 200, {"calls": self._state.assumed.calls()}

    def _post_sts(self, raw):
        spec = body_object(raw, {"deny"}, {"deny"})
        roles = spec["deny"]
        if not isinstance(roles, list) or not all(
                isinstance(r, str) and re.fullmatch(r"arn:aws:iam::\d{12}:role/.+", r) for r in roles):
            raise SpecError("deny must be a list of role ARNs")
        self._state.assumed.deny(roles)
        return 201, {"deny": roles}

    def _post_deny(self, raw):
        spec = body_object(raw, {"account", "repository", "allow"}, {"account", "repository"})
        account = spec["account"]
        if not isinstance(account, str) or not (account == "public" or re.fullmatch(r"\d{12}", account)):
            raise SpecError('account must be a 12-digit account id or "public"')
        repository = repository_field(spec)
        if spec.get("allow") is True:
            self._state.denies.remove(account, repository)
            log.info("- - - - allow %s in %s again", repository, account)
        else:
            self._state.denies.add(account, repository)
            log.info("- - - - deny %s in %s", repository, account)
        return 201, {"account": account, "repository": repository}

    def _get_deny(self, _raw):
        return 200, {"denied": self._state.denies.snapshot()}

    def _post_public(self, raw):
        spec = body_object(raw, {"deny_bearer", "token_lifetime"}, set())
        public = self._state.public
        if "deny_bearer" in spec:
            if not isinstance(spec["deny_bearer"], bool):
                raise SpecError("deny_bearer must be true or false")
            public.deny_bearer = spec["deny_bearer"]
        if "token_lifetime" in spec:
            public.lifetime = number(spec["token_lifetime"], 1, Tokens.MAX_LIFETIME,
                                     "token_lifetime (seconds)", integer=True)
        log.info("- - - - public: %s", json.dumps(spec, sort_keys=True))
        return 201, public.snapshot()

    def _get_public(self, _raw):
        return 200, self._state.public.snapshot()

    # --- replication (front_replication.py) ----------------------------------------------

    def _post_replication(self, raw):
        spec = body_object(raw, {"delay", "fail", "failure_code"}, set())
        self._state.replication.set_switches(spec)
        log.info("- - - - replication: %s", json.dumps(spec, sort_keys=True))
        return 201, self._state.replication.snapshot()

    def _get_replication(self, _raw):
        return 200, self._state.replication.snapshot()

    # --- reset -------------------------------------------------------------------------

    def _post_reset(self, raw):
        body_object(raw or b"{}", set(), set())
        self._delete_faults(b"")
        self._front.scans.clear()
        self._state.clear()
        log.info("- - - - reset: faults, scans, tokens, settings, templates, visibility, modes, stats, "
                 "referrer refusals, signing configuration and scripts, KMS denials, replication")
        return 200, {"reset": True}


class Control(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, addr, fronts: dict):
        # route -> the listener serving it (one Front may serve both)
        self.fronts = fronts
        self.front = fronts["registry"]
        super().__init__(addr, ControlHandler)

    def server_bind(self):
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]
