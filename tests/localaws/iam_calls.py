"""Who made each AWS call: the attribution the IAM test evaluates policies against.

Every function binary and the CLI run with their own access key id, ``{principal}@{scope}``
(``stage-deploy@t123x4z``: the testkit's ``principals`` module), and moto accepts any key, so the
SigV4 ``Credential`` of a request names its caller. Calls made with credentials that ``AssumeRole``
returned are the assumed role's: the answer's access key id is remembered with the role ARN and
the key that asked for it (whose scope they inherit).

Only the calls of watched scopes are kept (``watch``: a test's id, before its binaries start), in
full and without a bound: a scenario's few hundred calls, never evicted by other tests' traffic.
"""

from __future__ import annotations

import json
import re
import threading
import urllib.parse
from dataclasses import dataclass

from iam_actions import Call

_CREDENTIAL = re.compile(r"Credential=([^/,\s]+)/\d{8}/([^/]+)/([^/]+)/aws4_request")


@dataclass(frozen=True)
class Caller:
    key: str
    region: str
    service: str


@dataclass(frozen=True)
class Assumed:
    role_arn: str
    source_key: str


def caller_of(headers) -> Caller | None:
    """The access key id, region and service of a SigV4-signed request."""
    match = _CREDENTIAL.search(headers.get("Authorization", ""))
    return Caller(*match.groups()) if match else None


def _request(mimetype: str, body: bytes) -> dict:
    if mimetype == "application/x-www-form-urlencoded":
        return dict(urllib.parse.parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
    if mimetype == "application/cbor":  # Smithy RPC v2 CBOR (CloudWatch)
        import cbor2

        try:
            parsed = cbor2.loads(body) if body else {}
        except Exception:
            return {}
        return parsed if isinstance(parsed, dict) else {}
    try:
        parsed = json.loads(body or b"{}")
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def _between(text: str, tag: str) -> str | None:
    match = re.search(f"<{tag}>([^<]*)</{tag}>", text)
    return match.group(1) if match else None


class CallLog:
    def __init__(self, home_account: str):
        self.home_account = home_account
        self.lock = threading.Lock()
        self.scopes: set[str] = set()
        self.assumed: dict[str, Assumed] = {}
        self.calls: list[dict] = []

    def watch(self, scope: str) -> None:
        with self.lock:
            self.scopes.add(scope)

    def _root_key(self, key: str) -> str:
        """The key a call's credentials come from: an assumed role's is the key that assumed it."""
        while key in self.assumed:
            key = self.assumed[key].source_key
        return key

    def _scope(self, key: str) -> str | None:
        root = self._root_key(key)
        scope = root.split("@", 1)[1] if "@" in root else None
        return scope if scope in self.scopes else None

    def watched(self, caller: Caller | None) -> bool:
        if caller is None:
            return False
        with self.lock:
            return self._scope(caller.key) is not None

    def record(self, caller: Caller, operation: str, mimetype: str, body: bytes, status: int, answer: bytes) -> None:
        """Keeps one served call of a watched caller; remembers the keys an AssumeRole handed out."""
        request = _request(mimetype, body)
        kept_answer: dict = {}
        text = answer.decode("utf-8", "replace")
        if operation == "AssumeRole" and status == 200:
            key = _between(text, "AccessKeyId")
            if key:
                with self.lock:
                    self.assumed[key] = Assumed(request.get("RoleArn", ""), caller.key)
        if operation == "RegisterTaskDefinition" and status == 200:
            try:
                kept_answer["taskDefinitionArn"] = json.loads(text)["taskDefinition"]["taskDefinitionArn"]
            except (ValueError, KeyError, TypeError):
                pass
        with self.lock:
            assumed = self.assumed.get(caller.key)
            root = self._root_key(caller.key)
            self.calls.append({
                "seq": len(self.calls) + 1,
                "scope": self._scope(caller.key),
                "principal": root.split("@", 1)[0],
                "role_arn": assumed.role_arn if assumed else None,
                "account": assumed.role_arn.split(":")[4] if assumed else self.home_account,
                "region": caller.region,
                "service": caller.service,
                "operation": operation,
                "status": status,
                "request": request,
                "answer": kept_answer,
            })

    def of(self, scope: str) -> list[dict]:
        with self.lock:
            return [c for c in self.calls if c["scope"] == scope]


def as_call(record: dict) -> Call:
    return Call(record["service"], record["operation"], record["region"], record["account"], record["request"],
                record["answer"])
