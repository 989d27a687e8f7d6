"""Fault injection and scripted scan answers for the front (the control API's /faults
and /scans): see tests/standin/README.md, "Fault injection" and "Scans"."""
from __future__ import annotations

import re
import threading

from front_common import SpecError

RESET_READ_LIMIT = 64 * 1024   # "reset" faults read at most this much of the body first
FAULT_ROUTES = ("registry", "api")
# The repository a registry request names: /v2/<name>/blobs/..., /manifests/..., /tags/...
REGISTRY_REPOSITORY = re.compile(r"^/v2/(.+?)/(?:blobs|manifests|tags)/")
FAULT_MODES = ("status", "reset", "delay", "refuse", "redirect")
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


class FaultSpecError(SpecError):
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

    def clear(self) -> None:
        with self._lock:
            self._scripts.clear()
            self._calls.clear()

    def calls(self, repository: str) -> dict:
        with self._lock:
            return dict(self._calls.get(repository, {o: 0 for o in self.OPERATIONS}))
