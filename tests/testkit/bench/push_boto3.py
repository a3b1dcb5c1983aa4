"""stage-deploy's push as a team would write it in Python with boto3: the yardstick of `make bench`.

The same job as `stage-deploy` for an ECR push to one app, with the same AWS calls against the same
local AWS: read the app configs (GetParametersByPath), take the stage lease (UpdateItem), read the
service and its task definition (DescribeServices, DescribeTaskDefinition), record the baseline on
first contact (TransactWriteItems), register the revision with the image swapped to the pushed
digest (RegisterTaskDefinition), roll the service onto it (UpdateService), commit the rollout with
its history and image facts (TransactWriteItems), notify (SNS Publish) and release the lease
(UpdateItem). Plain and not feature-complete: no pause, coalescing, drift or adoption of a lost
rollout, no retries beyond boto3's own.

Clients are created at import, in the init phase, as the Lambda documentation recommends; the
bench spawns it through `bootstrap` (a minimal Lambda runtime loop).
"""

import json
import os
import time
import uuid
from datetime import datetime, timezone

import boto3
from boto3.dynamodb.types import TypeDeserializer, TypeSerializer

PREFIX = os.environ["CONVEYOR_SSM_PREFIX"]
TABLE = os.environ["CONVEYOR_TABLE"]
TOPIC_ARN = os.environ["CONVEYOR_TOPIC_ARN"]
# Fields of a described task definition that ECS computes: not accepted by RegisterTaskDefinition.
COMPUTED = (
    "taskDefinitionArn", "revision", "status", "requiresAttributes", "compatibilities",
    "registeredAt", "registeredBy", "deregisteredAt", "deleteRequestedAt",
)
LEASE_MARGIN_MS = 10_000
HISTORY_DAYS = 400

ssm = boto3.client("ssm")
dynamodb = boto3.client("dynamodb")
ecs = boto3.client("ecs")
sns = boto3.client("sns")
serialize = TypeSerializer().serialize
deserialize = TypeDeserializer().deserialize


def handler(event, context):
    detail = event.get("detail") or {}
    if event.get("detail-type") != "ECR Image Action" or detail.get("action-type") != "PUSH" \
            or detail.get("result") != "SUCCESS":
        return {"skipped": "not a successful ECR push", "apps": []}
    push = {
        "event_id": event.get("id"),
        "time": event["time"],
        "account": event["account"],
        "region": event["region"],
        "repository": detail["repository-name"],
        "tag": detail["image-tag"],
        "digest": detail["image-digest"],
    }
    apps = [app for app in load_apps() if app.get("repository") == push["repository"]]
    if not apps:
        return {"skipped": f"no app is fed by repository {push['repository']}", "apps": []}
    return {"apps": [deploy(app, push, context) for app in apps]}


def load_apps():
    apps, token = [], None
    while True:
        kwargs = {"Path": f"{PREFIX}/apps", "Recursive": False, "WithDecryption": False}
        if token:
            kwargs["NextToken"] = token
        page = ssm.get_parameters_by_path(**kwargs)
        for parameter in page.get("Parameters", []):
            app = json.loads(parameter["Value"])
            app["name"] = parameter["Name"].rsplit("/", 1)[-1]
            apps.append(app)
        token = page.get("NextToken")
        if not token:
            return apps


def now_iso():
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def values(**named):
    return {f":{name}": serialize(value) for name, value in named.items()}


def deploy(app, push, context):
    name, container = app["name"], app["container"]
    target = app["environments"]["stage"]
    key = {"pk": {"S": f"APP#{name}"}, "sk": {"S": "ENV#stage"}}
    token = uuid.uuid4().hex
    now_ms = int(time.time() * 1000)
    lease = {"token": token, "owner": f"stage-deploy {push['event_id']}",
             "expires_at": now_ms + context.get_remaining_time_in_millis() + LEASE_MARGIN_MS}
    taken = dynamodb.update_item(
        TableName=TABLE, Key=key,
        UpdateExpression="SET #lease = :lease",
        ConditionExpression="(attribute_not_exists(#lease) OR #lease.expires_at < :now OR #lease.#token = :token)"
                            " AND attribute_not_exists(intent)",
        ExpressionAttributeNames={"#lease": "lease", "#token": "token"},
        ExpressionAttributeValues=values(lease=lease, now=now_ms, token=token),
        ReturnValues="ALL_OLD",
    )
    item = {k: deserialize(v) for k, v in taken.get("Attributes", {}).items()}
    version = int(item.get("version", 0))
    state = item.get("state")
    try:
        service = ecs.describe_services(cluster=target["cluster"], services=[target["service"]])["services"][0]
        described = ecs.describe_task_definition(taskDefinition=service["taskDefinition"], include=["TAGS"])
        definition, tags = described["taskDefinition"], described.get("tags", [])
        app_container = next(c for c in definition["containerDefinitions"] if c["name"] == container)
        running_image = app_container["image"]
        running_digest = running_image.split("@", 1)[1] if "@" in running_image else None
        if state is None:
            # First contact: the baseline (what ran before Conveyor) is recorded before anything changes.
            state = {"app": name, "environment": "stage", "cluster": target["cluster"],
                     "service": target["service"],
                     "baseline": {"arn": service["taskDefinition"], "digest": running_digest}}
            commit(key, token, version, state)
            version += 1
        if running_digest == push["digest"]:
            return {"app": name, "status": "skipped", "detail": f"stage already runs {push['digest']}"}

        image = f"{push['account']}.dkr.ecr.{push['region']}.amazonaws.com/{push['repository']}@{push['digest']}"
        request = {k: v for k, v in definition.items() if k not in COMPUTED}
        for c in request["containerDefinitions"]:
            if c["name"] == container:
                c["image"] = image
        ours = {"conveyor:app": name, "conveyor:image-tag": push["tag"], "conveyor:image-digest": push["digest"]}
        request["tags"] = [t for t in tags if t["key"] not in ours] + [{"key": k, "value": v} for k, v in ours.items()]
        registered = ecs.register_task_definition(**request)["taskDefinition"]["taskDefinitionArn"]
        updated = ecs.update_service(cluster=target["cluster"], service=target["service"],
                                     taskDefinition=registered)["service"]
        deployment = next((d["id"] for d in updated.get("deployments", []) if d.get("status") == "PRIMARY"), None)

        started_at = now_iso()
        rollout_id = f"{datetime.now(timezone.utc).strftime('%Y%m%dT%H%M%S%f')[:-3]}-{token[:8]}"
        state["newest_push"] = {"time": push["time"], "pushes": [{"digest": push["digest"], "tag": push["tag"]}]}
        state["rollout"] = {"id": rollout_id, "tag": push["tag"], "digest": push["digest"], "image": image,
                            "task_definition_arn": registered, "deployment_id": deployment,
                            "previous": {"arn": service["taskDefinition"], "digest": running_digest},
                            "started_at": started_at, "origin": "push", "state": {"kind": "in_progress"}}
        notification = {
            "id": uuid.uuid4().hex, "app": name, "environment": "stage", "outcome": "deploying",
            "severity": "info", "tag": push["tag"], "digest": push["digest"], "cluster": target["cluster"],
            "service": target["service"], "task_definition_arn": registered, "deployment_id": deployment,
        }
        history = {"pk": f"APP#{name}", "sk": f"HIST#{started_at}#stage#{version + 1:06}.0", "app": name,
                   "environment": "stage", "event": "deploying", "at": started_at, "tag": push["tag"],
                   "digest": push["digest"], "rollout_id": rollout_id, "task_definition_arn": registered,
                   "deployment_id": deployment,
                   "expires_at": int(time.time()) + HISTORY_DAYS * 86400}
        commit(key, token, version, state, outbox=[notification], history=history, image=(image, push))
        version += 1

        sns.publish(
            TopicArn=TOPIC_ARN,
            Subject=f"[conveyor] {name} stage: deploying {push['tag']}"[:100],
            Message=json.dumps({
                "version": "1.0", "source": "custom", "id": notification["id"],
                "content": {"textType": "client-markdown", "title": f":large_blue_circle: {name} stage: deploying {push['tag']}",
                            "description": f"*Image:* `{push['digest']}`\n*Task definition:* `{registered.rsplit('/', 1)[-1]}`"},
                "metadata": {"threadId": f"{name}/{push['digest']}", "eventType": "deploying",
                             "additionalContext": {k: str(v) for k, v in notification.items() if v is not None}},
            }),
            MessageAttributes={k: {"DataType": "String", "StringValue": notification[k]}
                               for k in ("app", "environment", "outcome", "severity")},
        )
        return {"app": name, "status": "deploying", "detail": f"{service['taskDefinition']} => {registered}",
                "task_definition_arn": registered, "deployment_id": deployment}
    finally:
        release(key, token, version, in_flight=state is not None and "rollout" in state)


def commit(key, token, version, state, outbox=None, history=None, image=None):
    """One transaction: the new state (fenced by the lease and the version read), history, image."""
    sets = "SET #state = :state, version = :version, last_commit = :commit"
    named = {"state": state, "version": version + 1, "commit": uuid.uuid4().hex, "token": token}
    if outbox:
        sets += ", outbox = :outbox, pending = :pending"
        named.update(outbox=outbox, pending="PENDING")
    fence = "#lease.#token = :token AND " + ("version = :read" if version else "attribute_not_exists(version)")
    if version:
        named["read"] = version
    items = [{"Update": {
        "TableName": TABLE, "Key": key,
        "UpdateExpression": sets + " REMOVE intent",
        "ConditionExpression": fence,
        "ExpressionAttributeNames": {"#state": "state", "#lease": "lease", "#token": "token"},
        "ExpressionAttributeValues": values(**named),
    }}]
    if history:
        items.append({"Put": {"TableName": TABLE, "Item": {k: serialize(v) for k, v in history.items() if v is not None}}})
    if image:
        uri, push = image
        items.append({"Update": {
            "TableName": TABLE,
            "Key": {"pk": key["pk"], "sk": {"S": f"IMAGE#{push['digest']}"}},
            "UpdateExpression": "SET digest = :digest, image = if_not_exists(image, :image),"
                                " #repository = if_not_exists(#repository, :repository),"
                                " first_pushed_at = if_not_exists(first_pushed_at, :pushed), last_tag = :tag,"
                                " expires_at = :expires ADD tags :tags, version :one",
            "ExpressionAttributeNames": {"#repository": "repository"},
            "ExpressionAttributeValues": values(
                digest=push["digest"], image=uri, repository=push["repository"], pushed=push["time"],
                tag=push["tag"], expires=int(time.time()) + HISTORY_DAYS * 86400, tags={push["tag"]}, one=1),
        }})
    dynamodb.transact_write_items(TransactItems=items, ClientRequestToken=named["commit"])


def release(key, token, version, in_flight):
    """Frees the lease (the outbox was delivered), fenced by the lease and the version."""
    update = "REMOVE #lease, outbox"
    named = {"token": token}
    if in_flight:
        update += " SET pending = :pending"
        named["pending"] = "PENDING"
    if version:
        update += (", " if in_flight else " SET ") + "version = :next"
        named.update(next=version + 1, read=version)
    dynamodb.update_item(
        TableName=TABLE, Key=key, UpdateExpression=update,
        ConditionExpression="#lease.#token = :token AND "
                            + ("version = :read" if version else "attribute_not_exists(version)"),
        ExpressionAttributeNames={"#lease": "lease", "#token": "token"},
        ExpressionAttributeValues=values(**named),
    )
