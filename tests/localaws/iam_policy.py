"""The templates' IAM, evaluated against the calls a scenario made (``iam_calls``).

Who has which policy, read from the templates resolved for a test's parameters and resources:

* a function binary ``{name}`` is the ``AWS::Serverless::Function`` whose ``FunctionName`` is
  ``{stack}-{name}`` in ``infra/template.yaml``: its role's statements (SAM's ``Policies``
  written as statements, or an explicit ``Role`` of the template with its inline policies and the
  template's managed policies it attaches);
* a role assumed in another account is the ``AWS::IAM::Role`` of ``infra/target-account.yaml``
  (resolved for that account) with that ``RoleName``; ``sts:AssumeRole`` needs the caller's own
  policy and that role's trust policy;
* a GitHub Actions job (``github-push``, ``github-promote``) is the ``AWS::IAM::Role`` of
  ``infra/github-oidc.yaml`` named ``conveyor-{stack}-{name}``;
* the operator (the CLI) has no machine-readable policy: its calls are listed (reads and writes),
  and only what the templates decide for anyone (trust policies, resource policies' denies) is
  evaluated for it.

The evaluation is IAM's for one account plus AssumeRole: an explicit Deny wins, then an Allow of
the identity policy or of the resource's policy (topic; table, which covers its indexes) grants.
Resources the test does not name get placeholder ARNs that no call matches. Action and Resource
wildcards, NotAction/NotResource, and the condition operators below; an operator or a policy form it
does not know is an error (say what it means before relying on it), never a silent allow.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from iam_actions import Authorization, Unmapped, authorizations, is_write
from iam_calls import as_call
from template_patterns import Template

OPERATOR = "operator"
# People the tests run the CLI as (tests/testkit/src/principals.rs): operators, with no
# machine-readable policy (docs/cli.md states their permissions as prose).
PEOPLE = {OPERATOR, "approver", "release-manager"}
# GitHub Actions jobs (examples/github-actions): the roles of ``infra/github-oidc.yaml`` they
# assume with their OIDC token, ``conveyor-{stack}-{name}``.
GITHUB_ROLES = {"github-push", "github-promote"}
_FUNCTION_TYPE = "AWS::Serverless::Function"


@dataclass
class Statement:
    id: str  # "{template}:{role}:{Sid or #index}", stable across runs
    principal: str
    body: dict
    used_actions: set[str] = field(default_factory=set)

    @property
    def actions(self) -> list[str]:
        return _list(self.body.get("Action", self.body.get("NotAction", [])))


@dataclass
class Principal:
    name: str
    arn: str
    account: str
    statements: list[Statement] | None  # None: no machine-readable policy (the operator)
    trust: list[dict] = field(default_factory=list)  # a role's trust policy


def _list(value) -> list:
    return value if isinstance(value, list) else [value]


def _glob(pattern: str, text: str, ignore_case: bool = False) -> bool:
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, text, re.DOTALL | (re.IGNORECASE if ignore_case else 0)) is not None


# --- Conditions -----------------------------------------------------------------------------------

_NEGATED = {"StringNotEquals", "StringNotEqualsIgnoreCase", "StringNotLike", "ArnNotEquals", "ArnNotLike"}
_COMPARE = {
    "StringEquals": lambda actual, wanted: actual == wanted,
    "StringEqualsIgnoreCase": lambda actual, wanted: actual.lower() == wanted.lower(),
    "StringLike": lambda actual, wanted: _glob(wanted, actual),
    # ArnEquals and ArnLike both take wildcards (IAM compares ARNs segment by segment; a glob over
    # the whole ARN is the same for the ARNs Conveyor's policies write).
    "ArnEquals": lambda actual, wanted: _glob(wanted, actual),
    "ArnLike": lambda actual, wanted: _glob(wanted, actual),
    "Bool": lambda actual, wanted: actual.lower() == str(wanted).lower(),
}
_COMPARE.update({"StringNotEquals": _COMPARE["StringEquals"], "StringNotEqualsIgnoreCase":
                 _COMPARE["StringEqualsIgnoreCase"], "StringNotLike": _COMPARE["StringLike"],
                 "ArnNotEquals": _COMPARE["ArnEquals"], "ArnNotLike": _COMPARE["ArnLike"]})


def _test(operator: str, key: str, wanted: list, context: dict) -> bool:
    qualifier, _, base = operator.rpartition(":")
    if_exists = base.endswith("IfExists")
    base = base.removesuffix("IfExists")
    present = key.lower() in context
    if base == "Null":
        return any(str(w).lower() == ("false" if present else "true") for w in wanted)
    if base not in _COMPARE or qualifier not in ("", "ForAnyValue", "ForAllValues"):
        raise ValueError(f"condition operator {operator} is not modelled by tests/localaws/iam_policy.py")
    if not present:
        return if_exists or base in _NEGATED or qualifier == "ForAllValues"
    actual = [str(v) for v in _list(context[key.lower()])]
    matches = [any(_COMPARE[base](a, str(w)) for w in wanted) for a in actual]
    if base in _NEGATED:
        matches = [not m for m in matches]
    return all(matches) if qualifier == "ForAllValues" or base in _NEGATED else any(matches)


def _conditions_hold(condition: dict, context: dict) -> bool:
    return all(_test(operator, key, _list(wanted), context)
               for operator, block in condition.items() for key, wanted in block.items())


# --- Statements -----------------------------------------------------------------------------------


def _action_matches(statement: dict, action: str) -> bool:
    if "NotAction" in statement:
        return not any(_glob(p, action, ignore_case=True) for p in _list(statement["NotAction"]))
    return any(_glob(p, action, ignore_case=True) for p in _list(statement.get("Action", [])))


def _resource_matches(statement: dict, resource: str) -> bool:
    if "NotResource" in statement:
        return not any(_glob(p, resource) for p in _list(statement["NotResource"]))
    return any(_glob(p, resource) for p in _list(statement.get("Resource", [])))


def _principal_matches(statement: dict, principal: Principal) -> bool:
    if "NotPrincipal" in statement:
        raise ValueError("NotPrincipal is not modelled by tests/localaws/iam_policy.py")
    named = statement.get("Principal")
    if named == "*":
        return True
    if not isinstance(named, dict):
        return False
    for arn in _list(named.get("AWS", [])):
        if arn in ("*", principal.arn, principal.account, f"arn:aws:iam::{principal.account}:root"):
            return True
    return False


def _applies(statement: dict, action: str, resource: str, context: dict) -> bool:
    return (_action_matches(statement, action) and _resource_matches(statement, resource)
            and _conditions_hold(statement.get("Condition", {}), context))


# --- The templates' principals and resource policies ---------------------------------------------


def _sam_statements(template: Template, function: str, policies: list) -> list[dict]:
    statements = []
    for policy in policies:
        if isinstance(policy, dict) and "Statement" in policy:
            statements += _list(policy["Statement"])
        else:
            # A managed policy name or a SAM policy template (DynamoDBCrudPolicy, ...): expand it
            # here into the statements it stands for before relying on it.
            raise ValueError(f"{function}: policy {policy!r} is not modelled by tests/localaws/iam_policy.py")
    return statements


# AWS managed policies a role may carry whose actions no recorded call needs (logs, network
# interfaces): they grant nothing the evaluation looks at.
_AWS_MANAGED = {"AWSLambdaBasicExecutionRole", "AWSLambdaVPCAccessExecutionRole"}


def _local_arn(account: str, kind: str, name: str) -> str:
    """The ARN a role or customer managed policy of the template gets (`{kind}/{name}`)."""
    return f"arn:aws:iam::{account}:{kind}/{name}"


def _role_statements(role: dict, template: Template) -> list[dict]:
    """A role's inline policies and the managed policies it attaches (the template's own, by the
    ARN `_local_arn` gave them; AWS's, only the harmless ones)."""
    statements = []
    for policy in template.resolve(role["Properties"].get("Policies", [])):
        statements += _list(policy["PolicyDocument"]["Statement"])
    managed = {template.attribute(name, "Ref"): res for name, res in template.doc["Resources"].items()
               if res["Type"] == "AWS::IAM::ManagedPolicy"}
    for arn in template.resolve(role["Properties"].get("ManagedPolicyArns", [])):
        if arn in managed:
            statements += _list(template.resolve(managed[arn]["Properties"]["PolicyDocument"])["Statement"])
        elif arn.rsplit("/", 1)[-1] not in _AWS_MANAGED:
            raise ValueError(f"managed policy {arn} is not modelled by tests/localaws/iam_policy.py")
    return statements


def _statements(principal: str, source: str, role: str, bodies: list[dict]) -> list[Statement]:
    return [Statement(f"{source}:{role}:{body.get('Sid') or f'#{i}'}", principal, body)
            for i, body in enumerate(bodies)]


def function_role_arn(account: str, stack: str, function: str) -> str:
    """The role SAM creates for a function: `{stack}-{Function}Role-{suffix}` (suffix local)."""
    return _local_arn(account, "role", f"{stack}-{function}Role-LOCAL")


def _name_resources(template: Template, account: str, stack: str) -> None:
    """Gives the template's roles (its own, and those SAM makes for functions without one) and
    customer managed policies the ARNs and names a deployment would, for `!Ref` and `!GetAtt`."""
    for logical, res in template.doc["Resources"].items():
        props = res.get("Properties", {})
        if res["Type"] == "AWS::IAM::Role":
            if "Condition" in res and not template.condition(res["Condition"]):
                continue
            name = template.resolve(props["RoleName"]) if "RoleName" in props else f"{stack}-{logical}-LOCAL"
            template.resources.setdefault(logical, {"Ref": name, "Arn": _local_arn(account, "role", name)})
        elif res["Type"] == "AWS::IAM::ManagedPolicy":
            name = template.resolve(props["ManagedPolicyName"]) if "ManagedPolicyName" in props else logical
            template.resources.setdefault(logical, {"Ref": _local_arn(account, "policy", name)})
        elif res["Type"] == _FUNCTION_TYPE and "Role" not in props:
            arn = function_role_arn(account, stack, logical)
            template.resources.setdefault(f"{logical}Role", {"Ref": arn.rsplit("/", 1)[1], "Arn": arn})
    # Every other resource the test did not name (rules, queues, alarms): a placeholder that no
    # call's resource matches, so that a policy naming one resolves and a call on one is denied.
    for logical in template.doc["Resources"]:
        template.resources.setdefault(logical, {"Ref": logical, "Arn": f"arn:aws:placeholder:::{logical}"})


class Policies:
    """Every principal's statements and every resource policy, for one test's resources."""

    def __init__(self, spec: dict):
        self.region = spec["region"]
        self.account = spec["account"]
        self.stack = spec.get("stack", "conveyor")
        resources = dict(spec.get("resources", {}))
        self.main = Template(spec["template"], spec.get("parameters", {}), self.region, self.account, resources)
        self.functions = {name: res for name, res in self.main.doc["Resources"].items()
                          if res["Type"] == _FUNCTION_TYPE}
        _name_resources(self.main, self.account, self.stack)
        self.github_template = spec.get("github_template")
        self.github_parameters = spec.get("github_parameters", {})
        self.target_template = spec.get("target_template")
        self.target_parameters = spec.get("target_parameters", {})
        self.principals: dict[str, Principal] = {}
        self.resource_policies = self._resource_policies()
        # A topic's KMS key: publishing needs the key too (kms:ViaService sns).
        self.topic_keys = {self.main.resolve({"Ref": name}): self._key_arn(self.main.resolve(res["Properties"]["KmsMasterKeyId"]))
                           for name, res in self.main.doc["Resources"].items()
                           if res["Type"] == "AWS::SNS::Topic" and "KmsMasterKeyId" in res.get("Properties", {})}

    def _key_arn(self, key: str) -> str:
        return key if key.startswith("arn:") else f"arn:aws:kms:{self.region}:{self.account}:key/{key}"

    def _resource_policies(self) -> dict[str, list[dict]]:
        """Resource ARN => the statements of the policies attached to it (topics, tables)."""
        attached: dict[str, list[dict]] = {}
        for name, res in self.main.doc["Resources"].items():
            props = res.get("Properties", {})
            if res["Type"] == "AWS::SNS::TopicPolicy":
                document = self.main.resolve(props["PolicyDocument"])
                for topic in self.main.resolve(props["Topics"]):
                    attached.setdefault(topic, []).extend(_list(document["Statement"]))
            elif res["Type"] == "AWS::DynamoDB::Table" and "ResourcePolicy" in props:
                document = self.main.resolve(props["ResourcePolicy"]["PolicyDocument"])
                attached.setdefault(self.main.resolve({"Fn::GetAtt": [name, "Arn"]}), []).extend(
                    _list(document["Statement"]))
        return attached

    def principal(self, record: dict) -> Principal:
        key = (record["principal"], record["role_arn"])
        if key not in self.principals:
            self.principals[key] = self._principal(*key)
        return self.principals[key]

    def _principal(self, name: str, role_arn: str | None) -> Principal:
        if role_arn:
            return self._target_role(role_arn)
        if name in PEOPLE:
            return Principal(name, f"arn:aws:iam::{self.account}:role/{name}", self.account, None)
        if name in GITHUB_ROLES:
            return self._github_role(name)
        for logical, res in self.functions.items():
            if self.main.resolve(res["Properties"].get("FunctionName")) == f"{self.stack}-{name}":
                return self._function(name, logical, res)
        raise ValueError(f"no function of {self.stack} is named {self.stack}-{name} in the template")

    def _function(self, name: str, logical: str, res: dict) -> Principal:
        props = res["Properties"]
        if "Role" in props:
            role = props["Role"]
            if not (isinstance(role, dict) and "Fn::GetAtt" in role):
                raise ValueError(f"{logical}: Role {role!r} is not a role of the template")
            source = role["Fn::GetAtt"][0]
            arn = self.main.attribute(source, "Arn")
            bodies = _role_statements(self.main.doc["Resources"][source], self.main)
        else:
            arn = function_role_arn(self.account, self.stack, logical)
            bodies = _sam_statements(self.main, logical, self.main.resolve(props.get("Policies", [])))
            source = f"{logical}Role"
        return Principal(name, arn, self.account, _statements(name, "template", source, bodies))

    def _github_role(self, name: str) -> Principal:
        template = Template(self.github_template, self.github_parameters, self.region, self.account, {})
        _name_resources(template, self.account, self.stack)
        wanted = f"conveyor-{self.stack}-{name}"
        for logical, res in template.doc["Resources"].items():
            if res["Type"] == "AWS::IAM::Role" and template.resolve(res["Properties"].get("RoleName")) == wanted:
                arn = _local_arn(self.account, "role", wanted)
                return Principal(name, arn, self.account, _statements(name, "github-oidc", logical, _role_statements(res, template)))
        raise ValueError(f"no role of github-oidc.yaml is named {wanted}")

    def _target_role(self, role_arn: str) -> Principal:
        account, role_name = role_arn.split(":")[4], role_arn.rsplit("/", 1)[1]
        template = Template(self.target_template, self.target_parameters, self.region, account, {})
        _name_resources(template, account, self.stack)
        for logical, res in template.doc["Resources"].items():
            if res["Type"] != "AWS::IAM::Role" or "RoleName" not in res.get("Properties", {}):
                continue
            if "Condition" in res and not template.condition(res["Condition"]):
                continue
            if template.resolve(res["Properties"]["RoleName"]) == role_name:
                trust = _list(template.resolve(res["Properties"]["AssumeRolePolicyDocument"])["Statement"])
                statements = _statements(role_arn, "target-account", logical, _role_statements(res, template))
                return Principal(role_arn, role_arn, account, statements, trust)
        raise ValueError(f"no role of target-account.yaml is named {role_name} (assumed: {role_arn})")

    # --- Decisions --------------------------------------------------------------------------------

    def needed(self, record: dict) -> list[Authorization]:
        """What IAM authorises for the call, with what the templates' resources imply."""
        needed = authorizations(as_call(record))
        for auth in list(needed):
            key = self.topic_keys.get(auth.resource) if auth.action == "sns:Publish" else None
            if key:
                via = {"kms:ViaService": f"sns.{record['region']}.amazonaws.com"}
                needed += [Authorization("kms:GenerateDataKey", key, via), Authorization("kms:Decrypt", key, via)]
        return needed

    def decide(self, principal: Principal, auth: Authorization, record: dict) -> tuple[str, str]:
        """`allowed`, `denied` or `unknown` (no policy to evaluate), and why."""
        context = {k.lower(): v for k, v in auth.context.items()}
        context.update({"aws:requestedregion": record["region"], "aws:principalarn": principal.arn,
                        "aws:principalaccount": principal.account, "aws:securetransport": "true"})
        # A table's policy covers its indexes too (`table/x/index/y`).
        attached = [s for arn, statements in self.resource_policies.items()
                    if auth.resource == arn or auth.resource.startswith(arn + "/")
                    for s in statements if _principal_matches(s, principal)]
        identity = principal.statements or []
        for body in [s.body for s in identity] + attached:
            if body["Effect"] == "Deny" and _applies(body, auth.action, auth.resource, context):
                return "denied", f"explicit Deny ({body.get('Sid', 'no Sid')})"
        allowing = [s for s in identity if s.body["Effect"] == "Allow"
                    and _applies(s.body, auth.action, auth.resource, context)]
        for statement in allowing:
            statement.used_actions.update(a for a in statement.actions if _glob(a, auth.action, ignore_case=True))
        by_resource = any(s["Effect"] == "Allow" and _applies(s, auth.action, auth.resource, context) for s in attached)
        if auth.action == "sts:AssumeRole":
            trusted = self._trusts(auth.resource, principal, context)
            if trusted is False:
                return "denied", "the role's trust policy does not admit this principal"
        if principal.statements is None:
            return ("allowed", "resource policy") if by_resource else ("unknown", "no machine-readable policy")
        if allowing or by_resource:
            return "allowed", ", ".join(s.id for s in allowing) or "resource policy"
        return "denied", "no statement allows it"

    def _trusts(self, role_arn: str, principal: Principal, context: dict) -> bool | None:
        try:
            role = self._target_role(role_arn)
        except ValueError:
            return None
        return any(s["Effect"] == "Allow" and _principal_matches(s, principal) and _action_matches(s, "sts:AssumeRole")
                   and _conditions_hold(s.get("Condition", {}), context) for s in role.trust)


def evaluate(spec: dict, records: list[dict]) -> dict:
    """The verdict on every call of a scenario, and which statements its calls needed."""
    policies = Policies(spec)
    denied, unknown, unmapped, evaluated = [], [], [], 0
    for record in records:
        try:
            principal = policies.principal(record)
            needed = policies.needed(record)
        except Unmapped as error:
            unmapped.append({"principal": record["principal"], "operation": record["operation"], "error": str(error)})
            continue
        for auth in needed:
            evaluated += 1
            verdict, why = policies.decide(principal, auth, record)
            entry = {"principal": principal.name, "action": auth.action, "resource": auth.resource,
                     "account": record["account"], "region": record["region"], "operation": record["operation"],
                     "write": is_write(auth.action), "why": why}
            if verdict == "denied":
                denied.append(entry)
            elif verdict == "unknown":
                unknown.append(entry)
    # Every function's statements, used or not (a scenario that never calls a function still
    # says which of its statements it needed: none).
    for name, res in policies.functions.items():
        function = policies.main.resolve(res["Properties"].get("FunctionName", ""))
        policies.principal({"principal": function.removeprefix(f"{policies.stack}-"), "role_arn": None})
    statements = [{"id": s.id, "principal": s.principal, "actions": s.actions, "used_actions": sorted(s.used_actions)}
                  for p in policies.principals.values() for s in (p.statements or [])
                  if s.body.get("Effect") == "Allow"]
    return {"calls": len(records), "authorizations": evaluated, "denied": denied, "unknown": unknown,
            "unmapped": unmapped, "statements": statements}


def decide(spec: dict, question: dict) -> dict:
    """What the templates decide for one call no scenario makes (a function reaching past its
    side): ``question`` is ``{principal, role_arn?, action, resource, region?, context?}``."""
    policies = Policies(spec)
    role_arn = question.get("role_arn")
    record = {"principal": question["principal"], "role_arn": role_arn,
              "region": question.get("region", policies.region),
              "account": role_arn.split(":")[4] if role_arn else policies.account}
    auth = Authorization(question["action"], question["resource"], question.get("context", {}))
    verdict, why = policies.decide(policies.principal(record), auth, record)
    return {"verdict": verdict, "why": why}
