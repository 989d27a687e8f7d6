"""AWS KMS at its real host name (kms.us-east-1.amazonaws.com, TLS with the test CA),
forwarded to moto's KMS (which moto_server.py makes sign for real: the Message is the
base64-decoded bytes, and MessageType DIGEST signs the digest as given).

Per key, the control API (POST /kms) can make KMS refuse some operations the way IAM does
when no policy allows them: 400 AccessDeniedException, `{"__type", "Message"}` (KMS's
JSON errors capitalise Message: aws/aws-nitro-enclaves-sdk-c#127; the wording:
ecadlabs/signatory#366).
"""
from __future__ import annotations

import json
import threading
import uuid

from front_common import ACCOUNT, REGION, SpecError

KMS_TARGET_PREFIX = "TrentService."
# What a deny rule may name: what cosign (sigstore's awskms) and the action call.
GUARDED = ("Sign", "GetPublicKey", "DescribeKey", "Verify")
API_BODY_LIMIT = 1024 * 1024


class KmsRules:
    """key id -> operations refused for it."""

    def __init__(self):
        self._lock = threading.Lock()
        self._deny: dict[str, set[str]] = {}

    def set(self, key_id: str, operations) -> None:
        with self._lock:
            if operations:
                self._deny[key_id] = set(operations)
            else:
                self._deny.pop(key_id, None)

    def denied(self, key_id: str) -> list[str]:
        with self._lock:
            return sorted(self._deny.get(key_id, ()))

    def active(self) -> bool:
        with self._lock:
            return bool(self._deny)

    def clear(self) -> None:
        with self._lock:
            self._deny.clear()


def parse_rule(spec: dict) -> tuple[str, list[str]]:
    key, deny = spec["key"], spec["deny"]
    if not isinstance(key, str) or not key:
        raise SpecError("key must be a key id, a key ARN, alias/NAME or an alias ARN")
    if not isinstance(deny, list) or any(op not in GUARDED for op in deny):
        raise SpecError(f"deny must be a list of {', '.join(GUARDED)} (empty: allow everything again)")
    return key, sorted(set(deny))


class KmsMixin:
    """Mixed into front.Handler: the KMS host."""

    def _kms(self):
        target = self.headers.get("X-Amz-Target") or ""
        action = target[len(KMS_TARGET_PREFIX):] if target.startswith(KMS_TARGET_PREFIX) else ""
        body = self._read_body(API_BODY_LIMIT)
        if body is None:
            return self._kms_error(413, "ValidationException", "request too large")
        rules = self.server.state.kms
        if action in GUARDED and rules.active():
            try:
                requested = json.loads(body or b"{}").get("KeyId")
            except (ValueError, AttributeError):
                requested = None
            key_id = self.server.moto.kms_key_id(requested) if isinstance(requested, str) else None
            if key_id and action in rules.denied(key_id):
                self._injected = f"kms-denied:{action}"
                who = self._access_key() or "standin"
                return self._kms_error(
                    400, "AccessDeniedException",
                    f"User: arn:aws:iam::{ACCOUNT}:user/{who} is not authorized to perform: kms:{action} "
                    f"on resource: arn:aws:kms:{REGION}:{ACCOUNT}:key/{key_id} because no identity-based "
                    f"policy allows the kms:{action} action")
        conn, resp = self._upstream(self.server.moto_addr, body=body)
        try:
            self._relay(resp, resp.read())
        finally:
            conn.close()

    def _kms_error(self, status: int, error_type: str, message: str):
        payload = json.dumps({"__type": error_type, "Message": message}).encode()
        self._answer(status, "application/x-amz-json-1.1", payload,
                     [("x-amzn-RequestId", str(uuid.uuid4()))])
