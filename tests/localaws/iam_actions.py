"""What IAM authorises for one AWS call: the action, the resource ARN and the request context each
authorisation is evaluated with, from the request as the local AWS received it.

The table is small and explicit on purpose: only the operations Conveyor's functions and CLI make.
An operation missing from it is an error (``Unmapped``), never a guess, so a new call fails the IAM
test until someone says what it needs. One call may need several authorisations: a
``TransactWriteItems`` is authorised per item (PutItem, UpdateItem, ...), ``RegisterTaskDefinition``
also passes its roles (``iam:PassRole``) and tags the new revision (``ecs:TagResource``).

Sources: the Service Authorization Reference (actions, resource types, condition keys) of ECS,
DynamoDB, SSM, SNS, STS, ECR, CloudWatch and EventBridge.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Call:
    """One AWS call as the local AWS saw it: who (already attributed), where, and what."""

    service: str  # the SigV4 signing name: ecs, dynamodb, ssm, sns, sts, ecr, monitoring
    operation: str
    region: str
    account: str  # the account the call acts in (an assumed role's, else the caller's)
    request: dict  # the JSON body, or the query parameters
    answer: dict = field(default_factory=dict)  # the parts of the answer an authorisation needs


@dataclass(frozen=True)
class Authorization:
    action: str
    resource: str
    # Service-specific condition keys; the evaluator adds the global ones (aws:RequestedRegion, ...).
    context: dict = field(default_factory=dict)


class Unmapped(Exception):
    """An operation this table does not know: say what it needs before it ships."""


# Operations that need no permission at all (AWS allows them even under an explicit Deny).
FREE = {("sts", "GetCallerIdentity")}


def authorizations(call: Call) -> list[Authorization]:
    handler = _HANDLERS.get((call.service, call.operation))
    if handler is None:
        if (call.service, call.operation) in FREE:
            return []
        raise Unmapped(f"{call.service}:{call.operation} is not in tests/localaws/iam_actions.py: say which "
                       f"action, resource and condition keys it needs")
    return handler(call)


# --- ECS ------------------------------------------------------------------------------------------


def _ecs_arn(call: Call, kind: str, path: str) -> str:
    return f"arn:aws:ecs:{call.region}:{call.account}:{kind}/{path}"


def _name(reference: str) -> str:
    """A name from a name or an ARN (`arn:...:cluster/x` => `x`, `arn:...:service/c/s` => `s`)."""
    return reference.rsplit("/", 1)[-1]


def _cluster(call: Call) -> tuple[str, str]:
    name = _name(call.request.get("cluster", "default"))
    return name, _ecs_arn(call, "cluster", name)


def _service_arn(call: Call, service: str) -> str:
    cluster, _ = _cluster(call)
    return _ecs_arn(call, "service", f"{cluster}/{_name(service)}")


def _describe_services(call: Call) -> list[Authorization]:
    _, cluster = _cluster(call)
    return [Authorization("ecs:DescribeServices", _service_arn(call, s), {"ecs:cluster": cluster})
            for s in call.request.get("services", [])]


def _update_service(call: Call) -> list[Authorization]:
    _, cluster = _cluster(call)
    context = {"ecs:cluster": cluster}
    if call.request.get("taskDefinition"):
        context["ecs:task-definition"] = call.request["taskDefinition"]
    return [Authorization("ecs:UpdateService", _service_arn(call, call.request["service"]), context)]


def _register_task_definition(call: Call) -> list[Authorization]:
    needed = [Authorization("ecs:RegisterTaskDefinition", "*")]
    for member in ("taskRoleArn", "executionRoleArn"):
        if call.request.get(member):
            needed.append(Authorization("iam:PassRole", call.request[member],
                                        {"iam:PassedToService": "ecs-tasks.amazonaws.com"}))
    if call.request.get("tags"):
        # Tags given at creation are authorised as ecs:TagResource on the new revision.
        revision = call.answer.get("taskDefinitionArn") or _ecs_arn(call, "task-definition",
                                                                    f"{call.request['family']}:*")
        needed.append(Authorization("ecs:TagResource", revision, {"ecs:CreateAction": "RegisterTaskDefinition"}))
    return needed


def _tasks(call: Call) -> list[Authorization]:
    cluster_name, cluster = _cluster(call)
    return [Authorization("ecs:DescribeTasks", _ecs_arn(call, "task", f"{cluster_name}/{_name(t)}"),
                          {"ecs:cluster": cluster}) for t in call.request.get("tasks", [])]


def _list_tasks(call: Call) -> list[Authorization]:
    # Authorised on the cluster's container instances; `ecs:cluster` names the cluster.
    cluster_name, cluster = _cluster(call)
    return [Authorization("ecs:ListTasks", _ecs_arn(call, "container-instance", f"{cluster_name}/*"),
                          {"ecs:cluster": cluster})]


def _service_revisions(call: Call) -> list[Authorization]:
    # arn:aws:ecs:{region}:{account}:service-revision/{cluster}/{service}/{id}, each authorised
    # on itself; `ecs:cluster` names its cluster.
    needed = []
    for arn in call.request.get("serviceRevisionArns", []):
        parts = arn.split(":")
        cluster_name = parts[5].split("/")[1] if len(parts) > 5 and parts[5].count("/") >= 2 else ""
        cluster = f"arn:aws:ecs:{parts[3]}:{parts[4]}:cluster/{cluster_name}" if len(parts) > 5 else ""
        needed.append(Authorization("ecs:DescribeServiceRevisions", arn, {"ecs:cluster": cluster}))
    return needed


def _service_deployments(action: str):
    # arn:aws:ecs:{region}:{account}:service-deployment/{cluster}/{service}/{id}, each authorised on
    # itself (DescribeServiceDeployments names several, StopServiceDeployment one).
    def needed(call: Call) -> list[Authorization]:
        arns = call.request.get("serviceDeploymentArns") or [call.request.get("serviceDeploymentArn", "")]
        return [Authorization(action, arn) for arn in arns]
    return needed


def _list_service_deployments(call: Call) -> list[Authorization]:
    # Authorised on the service.
    return [Authorization("ecs:ListServiceDeployments", _service_arn(call, call.request["service"]))]


def _star(action: str):
    return lambda call: [Authorization(action, "*")]


# --- DynamoDB -------------------------------------------------------------------------------------


def _table(call: Call, name: str, index: str | None = None) -> str:
    arn = f"arn:aws:dynamodb:{call.region}:{call.account}:table/{_name(name)}"
    return f"{arn}/index/{index}" if index else arn


def _item(action: str):
    return lambda call: [Authorization(action, _table(call, call.request["TableName"], call.request.get("IndexName")))]


_TRANSACT_ITEM = {"Put": "dynamodb:PutItem", "Update": "dynamodb:UpdateItem", "Delete": "dynamodb:DeleteItem",
                  "ConditionCheck": "dynamodb:ConditionCheckItem", "Get": "dynamodb:GetItem"}


def _transact(call: Call) -> list[Authorization]:
    needed = []
    for item in call.request.get("TransactItems", []):
        ((kind, spec),) = item.items()
        needed.append(Authorization(_TRANSACT_ITEM[kind], _table(call, spec["TableName"])))
    return needed


def _batch(action: str):
    return lambda call: [Authorization(action, _table(call, t)) for t in call.request.get("RequestItems", {})]


# --- SSM, SNS, STS, ECR ---------------------------------------------------------------------------


def _parameter(call: Call, name: str) -> str:
    return f"arn:aws:ssm:{call.region}:{call.account}:parameter/{name.lstrip('/')}"


def _ssm(action: str, member: str):
    return lambda call: [Authorization(action, _parameter(call, call.request[member]))]


def _ecr_repository(call: Call) -> list[Authorization]:
    registry = call.request.get("registryId") or call.account
    arn = f"arn:aws:ecr:{call.region}:{registry}:repository/{call.request['repositoryName']}"
    return [Authorization("ecr:GetRepositoryPolicy", arn)]


# --- CloudWatch (signing name `monitoring`) ------------------------------------------------------
# Both reads name alarms, but CloudWatch answers with composite alarms (and their history) only to
# a permission scoped to `*`: Conveyor asks for both kinds, so `*` is what it needs.


def _rule(action: str, member: str):
    """A rule of the default event bus, named by the request's `member`."""
    return lambda call: [Authorization(action, f"arn:aws:events:{call.region}:{call.account}:rule/{call.request[member]}")]


_HANDLERS = {
    ("ecs", "DescribeServices"): _describe_services,
    ("ecs", "DescribeServiceRevisions"): _service_revisions,
    ("ecs", "ListServiceDeployments"): _list_service_deployments,
    ("ecs", "DescribeServiceDeployments"): _service_deployments("ecs:DescribeServiceDeployments"),
    ("ecs", "StopServiceDeployment"): _service_deployments("ecs:StopServiceDeployment"),
    ("ecs", "ContinueServiceDeployment"): _service_deployments("ecs:ContinueServiceDeployment"),
    ("ecs", "UpdateService"): _update_service,
    ("ecs", "RegisterTaskDefinition"): _register_task_definition,
    ("ecs", "DescribeTaskDefinition"): _star("ecs:DescribeTaskDefinition"),
    ("ecs", "DeregisterTaskDefinition"): _star("ecs:DeregisterTaskDefinition"),
    ("ecs", "ListTaskDefinitions"): _star("ecs:ListTaskDefinitions"),
    ("ecs", "DescribeTasks"): _tasks,
    ("ecs", "ListTasks"): _list_tasks,
    ("dynamodb", "GetItem"): _item("dynamodb:GetItem"),
    ("dynamodb", "PutItem"): _item("dynamodb:PutItem"),
    ("dynamodb", "UpdateItem"): _item("dynamodb:UpdateItem"),
    ("dynamodb", "DeleteItem"): _item("dynamodb:DeleteItem"),
    ("dynamodb", "Query"): _item("dynamodb:Query"),
    ("dynamodb", "Scan"): _item("dynamodb:Scan"),
    ("dynamodb", "BatchGetItem"): _batch("dynamodb:BatchGetItem"),
    ("dynamodb", "BatchWriteItem"): _batch("dynamodb:BatchWriteItem"),
    ("dynamodb", "TransactWriteItems"): _transact,
    ("dynamodb", "TransactGetItems"): _transact,
    ("ssm", "GetParametersByPath"): _ssm("ssm:GetParametersByPath", "Path"),
    ("ssm", "GetParameter"): _ssm("ssm:GetParameter", "Name"),
    ("ssm", "PutParameter"): _ssm("ssm:PutParameter", "Name"),
    ("sns", "Publish"): lambda call: [Authorization("sns:Publish", call.request["TopicArn"])],
    ("sts", "AssumeRole"): lambda call: [Authorization("sts:AssumeRole", call.request["RoleArn"])],
    ("ecr", "GetRepositoryPolicy"): _ecr_repository,
    ("ecr", "DescribeRegistry"): _star("ecr:DescribeRegistry"),
    ("monitoring", "DescribeAlarms"): _star("cloudwatch:DescribeAlarms"),
    ("events", "DescribeRule"): _rule("events:DescribeRule", "Name"),
    ("events", "ListTargetsByRule"): _rule("events:ListTargetsByRule", "Rule"),
    ("monitoring", "DescribeAlarmHistory"): _star("cloudwatch:DescribeAlarmHistory"),
}

# Actions that change nothing (what the report calls a read); everything else is a write.
READ_PREFIXES = ("Get", "Describe", "List", "Query", "Scan", "BatchGet", "ConditionCheck", "AssumeRole")


def is_write(action: str) -> bool:
    return not action.split(":", 1)[1].startswith(READ_PREFIXES)
