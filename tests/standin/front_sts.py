"""STS, and who a caller is: AssumeRole recorded, cross-account calls and the deny switch refused.

  sts.amazonaws.com, sts.<region>.amazonaws.com  -> moto's STS (AssumeRole,
      GetCallerIdentity, ...). moto issues credentials for any role ARN, and acts in the
      role's account for requests signed with them (moto 5.2: the key is stored in the
      account's IAM backend, get_account_id_from). The front records each AssumeRole
      (GET /sts on the control API; AssumeRoleWithWebIdentity too) and the account and
      ARN of the keys it returned. Credentials obtained from moto directly (not through
      the front) are taken for the primary account's by the front, though moto knows better.

A caller's account is its assumed role's, or the primary account for any other key (what
moto does too). As IAM does:
  - an ECR API call naming another account's registry (`registryId`) is refused with
    AccessDeniedException, and a registry token used by a principal of another account
    gets 403 DENIED: cross-account access needs a repository policy, which the stand-in
    never grants (so a test proves that the role was assumed);
  - POST /deny {"account", "repository"} refuses every call naming that repository
    there (API: AccessDeniedException; registry: 403 DENIED), with IAM's message.
"""
from __future__ import annotations

import html
import json
import re
import uuid
from urllib.parse import parse_qs

from front_common import ACCOUNT, access_key_of, log
from front_targets import BASE_USER, Target

API_BODY_LIMIT = 4 * 1024 * 1024 + 65536   # an API body the guard reads: a 4 MiB manifest + JSON
ARN_ACCOUNT = re.compile(r"^arn:aws:sts::(\d{12}):")
XML_FIELD = "<{0}>([^<]*)</{0}>"


def registry_action(method: str, kind: str, rest: str) -> str:
    """The IAM action of a registry request (ECR User Guide, repository policies)."""
    if kind == "manifests":
        return "PutImage" if method == "PUT" else "BatchGetImage"
    if kind == "blobs":
        if rest.rstrip("/") == "uploads" and method == "POST":
            return "InitiateLayerUpload"
        if rest.startswith("uploads"):
            return "UploadLayerPart" if method == "PATCH" else "CompleteLayerUpload"
        return "BatchCheckLayerAvailability" if method == "HEAD" else "GetDownloadUrlForLayer"
    return "ListImages" if kind == "tags" else "BatchGetImage"


def not_authorized(arn: str, action: str, resource: str, policy: str = "identity-based") -> str:
    """IAM's refusal, as AWS services quote it."""
    return (f"User: {arn} is not authorized to perform: {action} on resource: {resource} "
            f"because no {policy} policy allows the {action} action")


class StsMixin:
    """Mixed into front.Handler."""

    # --- who is asking -----------------------------------------------------------------

    def _principal(self, access_key: str) -> tuple[str, str]:
        """(account, ARN) of the credentials behind an access key id."""
        found = self.server.state.assumed.principal(access_key)
        if found:
            return found
        return ACCOUNT, f"arn:aws:iam::{ACCOUNT}:{BASE_USER}"

    # --- STS ---------------------------------------------------------------------------

    def _sts(self):
        body = self._read_body(64 * 1024) or b""
        form = {k: v[0] for k, v in parse_qs(body.decode("utf-8", "replace")).items()}
        if form.get("Action") == "AssumeRole" and self.server.state.assumed.denied(form.get("RoleArn")):
            return self._sts_access_denied(form)
        conn, resp = self._upstream(self.server.moto_addr, body=body)
        try:
            answer = resp.read()
            # AssumeRoleWithWebIdentity: GitHub's OIDC role (configure-aws-credentials).
            if form.get("Action") in ("AssumeRole", "AssumeRoleWithWebIdentity"):
                self._record_assume_role(form, resp.status, answer)
            self._relay(resp, answer)
        finally:
            conn.close()

    def _sts_access_denied(self, form: dict) -> None:
        """STS's refusal of a role whose trust policy does not trust the caller (or that does
        not exist): 403, the query protocol's XML error, code `AccessDenied`."""
        _, caller = self._principal(access_key_of(self.headers.get("Authorization")) or "")
        message = (f"User: {caller} is not authorized to perform: sts:AssumeRole on resource: "
                   f"{form.get('RoleArn')}")
        answer = ("<ErrorResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">"
                  "<Error><Type>Sender</Type><Code>AccessDenied</Code>"
                  f"<Message>{html.escape(message)}</Message></Error>"
                  f"<RequestId>{uuid.uuid4()}</RequestId></ErrorResponse>").encode()
        self._record_assume_role(form, 403, answer)
        self._answer(403, "text/xml", answer)

    def _record_assume_role(self, form: dict, status: int, answer: bytes) -> None:
        def members(prefix: str) -> list[str]:
            keys = sorted((k for k in form if re.fullmatch(re.escape(prefix) + r"\d+", k)),
                          key=lambda k: int(k[len(prefix):]))
            return [form[k] for k in keys]

        tags = []
        for n in range(1, 51):
            key = form.get(f"Tags.member.{n}.Key")
            if key is None:
                break
            tags.append({"Key": key, "Value": form.get(f"Tags.member.{n}.Value", "")})
        text = answer.decode("utf-8", "replace")
        access_key = re.search(XML_FIELD.format("AccessKeyId"), text)
        arn = re.search(XML_FIELD.format("Arn"), text)
        account = ARN_ACCOUNT.match(arn[1]) if arn else None
        call = {
            "Action": form.get("Action"), "RoleArn": form.get("RoleArn"), "RoleSessionName": form.get("RoleSessionName"),
            "Tags": tags, "TransitiveTagKeys": members("TransitiveTagKeys.member."),
            "DurationSeconds": int(form["DurationSeconds"]) if form.get("DurationSeconds", "").isdigit() else None,
            "ExternalId": form.get("ExternalId"),
            "SourceAccessKeyId": access_key_of(self.headers.get("Authorization")),
            "Host": self.headers.get("Host"), "status": status,
            "AccessKeyId": access_key[1] if access_key and status == 200 else None,
            "AssumedRoleArn": arn[1] if arn and status == 200 else None,
        }
        self.server.state.assumed.record(call, call["AccessKeyId"], account[1] if account else None,
                                         call["AssumedRoleArn"])
        log.info("- - - - AssumeRole %s as %s by %s", call["RoleArn"], call["RoleSessionName"],
                 call["SourceAccessKeyId"])

    # --- the API side ------------------------------------------------------------------

    def _api_guard(self, region: str) -> bool:
        """Refuse (True) an ECR API call the caller may not make: another account's
        registryId, or a repository POST /deny names. Reads (and keeps) the body."""
        target = self.headers.get("X-Amz-Target") or ""
        if not target.startswith("AmazonEC2ContainerRegistry_V20150921."):
            return False
        action = target.rsplit(".", 1)[-1]
        if self._body is None:
            if self._is_chunked() or int(self.headers.get("Content-Length") or 0) > API_BODY_LIMIT:
                return False  # not read here: streamed on, as before (rare; PutImage at most)
            self._body = self._read_body(API_BODY_LIMIT) or b""
        try:
            request = json.loads(self._body or b"{}")
        except ValueError:
            return False
        if not isinstance(request, dict):
            return False
        account, arn = self._principal(access_key_of(self.headers.get("Authorization")))
        registry = request.get("registryId")
        if isinstance(registry, str) and registry != account and action != "GetAuthorizationToken":
            name = request.get("repositoryName") or "*"
            self._rule = "cross-account"
            self._api_error(400, "AccessDeniedException", not_authorized(
                arn, f"ecr:{action}", f"arn:aws:ecr:{region}:{registry}:repository/{name}",
                "resource-based"))
            return True
        names = request.get("repositoryNames") if isinstance(request.get("repositoryNames"), list) \
            else [request.get("repositoryName")]
        owner = registry if isinstance(registry, str) else account
        for name in names:
            if isinstance(name, str) and self.server.state.denies.denied(owner, name):
                self._injected = "denied"
                self._api_error(400, "AccessDeniedException", not_authorized(
                    arn, f"ecr:{action}", f"arn:aws:ecr:{region}:{owner}:repository/{name}"))
                return True
        return False

    # --- the registry side -------------------------------------------------------------

    def _registry_guard(self, target: Target, name: str, access_key: str, kind: str, rest: str) -> bool:
        """403 DENIED (True) for a principal of another account, or a denied repository."""
        account, arn = self._principal(access_key)
        plain = target.public(name)
        action = f"ecr:{registry_action(self.command, kind, rest)}"
        resource = f"arn:aws:ecr:{target.region}:{target.account}:repository/{plain}"
        if account != target.account:
            self._rule = "cross-account"
            message = not_authorized(arn, action, resource, "resource-based")
        elif self.server.state.denies.denied(target.account, plain):
            self._injected = "denied"
            message = not_authorized(arn, action, resource)
        else:
            return False
        self._drain_body()
        self._json_error(403, "DENIED", message)
        return True
