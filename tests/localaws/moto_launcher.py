"""Local AWS for Conveyor: moto server, in-process, with a realistic ECS deployment lifecycle.

moto's ECS never creates a deployment on UpdateService and never advances one. Conveyor's whole job
is deployments, so this launcher patches moto's ECS backend to behave like ECS does:

* ``CreateService`` starts with one COMPLETED PRIMARY deployment whose tasks all run.
* ``UpdateService`` with a different task definition creates a new PRIMARY deployment
  (IN_PROGRESS, new ``ecs-svc/...`` id, full task-definition ARN); the previous ones turn ACTIVE.
* ``POST /_conveyor/ecs/settle`` completes or fails a deployment (optionally as an ECS
  circuit-breaker rollback) and answers with the "ECS Deployment State Change" events real ECS
  would emit, in order.
* ``UpdateService`` to a deregistered (INACTIVE) revision is refused (``ClientException``,
  "TaskDefinition is inactive"), and a bare family means its latest ACTIVE revision.
* Task-definition members moto does not model (newer than its botocore, e.g.
  ``trustedExecutionConfiguration``) are kept: Register/Describe/DeregisterTaskDefinition return them
  as registered, as real ECS returns members newer than a client's SDK.
* ``POST /_conveyor/dynamodb/install`` creates a table from the SAM template's definition.
* Native deployments (``BLUE_GREEN``, ``LINEAR``, ``CANARY``) step through ECS's stages and call their
  Lambda lifecycle hooks: ``ecs_native.py`` (configured by ``POST /_conveyor/ecs/native``, read by
  ``/_conveyor/ecs/native/state``, test traffic at ``GET /_conveyor/traffic/...``); what it assumes
  where AWS's documentation is silent: ``ASSUMPTIONS.md``.

Wire-level faults and limits, all scoped by ``match`` (a substring of the request body; every
test's resources carry its unique id; ``credential=KEY`` matches the calls signed with access key
id ``KEY``):

* ``POST /_conveyor/faults`` ``{operation, match, mode, after, count, persistent, rate, seed, ...}``
  with ``mode`` one of ``throttle`` (the protocol's own throttling error: awsJson
  ``ThrottlingException`` or awsQuery ``Throttling``), ``http500``, ``http503``, ``error``
  (``status``, ``code``, ``message``), ``reset`` (no response; the TCP connection is reset),
  ``latency`` (``latency_ms``, then served), ``apply_then_fail`` (served by moto, answer replaced
  by a 500: a lost response), ``kill`` (SIGKILL ``pid``, then reset). ``after`` skips the first N
  matching calls; ``count`` (default 1) limits how often it fires; ``count: 0``, ``persistent`` or
  ``rate`` (probability per call, ``seed``) without a count: until ``/_conveyor/faults/clear``.
* ``POST /_conveyor/ratelimit`` ``{operation, match, rate, burst}``: a token bucket like AWS's API
  limits; calls over it get the throttling error. ``/_conveyor/ratelimit/clear`` ``{match}``.
* ``POST /_conveyor/calls`` ``{match}``: calls by operation; ``/_conveyor/calls/log``
  ``{match, since}``: the calls in order, ``[{seq, operation, fault}]``. Faulted calls are logged
  too; the launcher's own calls (rules, tables, autopilot events) are not.
* ``POST /_conveyor/iam/watch`` ``{scope}``: from then on, every served call whose credentials
  are of that scope (``{principal}@{scope}``, or assumed with such) is kept with its caller, request
  and region (``iam_calls``); ``/_conveyor/iam/calls`` ``{scope}`` lists them;
  ``/_conveyor/iam/evaluate`` ``{scope, template, parameters, resources, ...}`` evaluates the
  templates' policies against them (``iam_policy``); ``/_conveyor/iam/decide`` ``{spec, question}``
  decides one call no scenario makes.

Usage: ``python moto_launcher.py [--port N] [--port-file PATH]``; prints ``READY <url>`` when up.
"""

from __future__ import annotations

import sys

sys.dont_write_bytecode = True  # importing template_patterns must not leave __pycache__ in the repository

import argparse
import datetime as dt
import io
import itertools
import json
import os
import random
import re
import signal
import socket
import struct
import threading
import time
import urllib.parse
import uuid
import weakref
from xml.sax.saxutils import escape

import cloudwatch_cbor
import ecs_native
from iam_calls import CallLog, caller_of
from moto import backends as moto_backends
from moto.core.responses import ActionResult
from moto.core.utils import utcnow
from moto.ecs import models as ecs_models
from moto.ecs.exceptions import EcsClientException, TaskDefinitionNotFoundException
from moto.moto_api._internal import mock_random
from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from moto.sts import responses as sts_responses
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

# moto lists its package's directories on every request to route it (werkzeug_app's
# `get_application`): the list never changes while the server runs, so it is read once.
_MOTO_MODULES = tuple(moto_backends.list_of_moto_modules())
moto_backends.list_of_moto_modules = lambda: _MOTO_MODULES

ACCOUNT_ID = "123456789012"
IAM_CALLS = CallLog(ACCOUNT_ID)
LOCK = threading.RLock()
DYNAMODB_LOCK = threading.Lock()


# --------------------------------------------------------------------------------------------
# STS: who a scoped key is
# --------------------------------------------------------------------------------------------

_original_get_caller_identity = sts_responses.TokenResponse.get_caller_identity


def get_caller_identity(self):
    """A test principal's key (``{principal}@{scope}``: a person approving, rejecting) is the IAM
    user ``{principal}``, so two people of one test have two identities, as in AWS. The
    operator's key keeps moto's default identity (``user/moto``), which the CLI's snapshots show;
    keys moto issued (assumed roles, IAM users) are answered by moto. (moto reads only keys of
    AWS's shape from the request, so the key is read from its SigV4 credential here.)"""
    credential = re.search(r"Credential=([^/,\s]+)/", self.headers.get("Authorization", ""))
    principal, at, scope = (credential.group(1) if credential else "").partition("@")
    if at and scope and principal != "operator":
        account = self.get_current_account()
        return ActionResult(
            {"UserId": f"AIDA{principal.upper()}", "Account": account, "Arn": f"arn:aws:iam::{account}:user/{principal}"}
        )
    return _original_get_caller_identity(self)


sts_responses.TokenResponse.get_caller_identity = get_caller_identity


# --------------------------------------------------------------------------------------------
# ECS deployment lifecycle
# --------------------------------------------------------------------------------------------


def _new_deployment(service, task_definition_arn: str, state: str, running: int) -> dict:
    now = utcnow()
    deployment_id = f"ecs-svc/{mock_random.randint(10**17, 10**18)}"
    return {
        "createdAt": now,
        "updatedAt": now,
        "desiredCount": service.desired_count,
        "failedTasks": 0,
        "id": deployment_id,
        "launchType": service.launch_type,
        "pendingCount": service.desired_count - running,
        "rolloutState": state,
        "rolloutStateReason": f"ECS deployment {deployment_id} "
        + ("completed." if state == "COMPLETED" else "in progress."),
        "runningCount": running,
        "platformFamily": "EC2" if service.launch_type == "EC2" else "FARGATE",
        "status": "PRIMARY",
        "taskDefinition": task_definition_arn,
    }


_original_create_service = ecs_models.EC2ContainerServiceBackend.create_service
_original_update_service = ecs_models.EC2ContainerServiceBackend.update_service


def create_service(self, *args, **kwargs):
    with LOCK:
        service = _original_create_service(self, *args, **kwargs)
        service.running_count = service.desired_count
        service.pending_count = 0
        if service.task_definition:
            service.deployments = [
                _new_deployment(service, service.task_definition, "COMPLETED", service.desired_count)
            ]
        return service


def _resolve_task_definition(backend, reference: str):
    """What ECS resolves a task-definition reference to: `family:revision` (or its ARN) exactly,
    a bare family to its latest ACTIVE revision."""
    name = reference.split("/")[-1]
    if ":" in name:
        return backend.describe_task_definition(reference)
    active = [d for d in backend.task_definitions.get(name, {}).values() if d.status == "ACTIVE"]
    if not active:
        raise TaskDefinitionNotFoundException()
    return max(active, key=lambda d: d.revision)


def update_service(self, service_properties):
    with LOCK:
        cluster = service_properties.get("cluster", "default")
        name = service_properties["service"].split("/")[-1]
        requested = service_properties.get("task_definition")
        service = self._get_service(cluster, name)
        previous = service.task_definition
        if requested:
            # Real ECS refuses a deregistered revision and leaves the service as it was.
            definition = _resolve_task_definition(self, requested)
            if definition.status != "ACTIVE":
                raise EcsClientException("TaskDefinition is inactive")
            service_properties["task_definition"] = definition.arn
        service = _original_update_service(self, service_properties)
        if requested:
            # Real ECS stores and returns the full ARN, whatever form the caller used.
            arn = definition.arn
            service.task_definition = arn
            if arn != previous:
                for deployment in service.deployments:
                    deployment["status"] = "ACTIVE"
                created = _new_deployment(service, arn, "IN_PROGRESS", 0)
                service.deployments.insert(0, created)
                if previous and ecs_native.strategy(service):
                    ecs_native.on_update(self, service, previous, arn, created["id"])
        return service


ecs_models.EC2ContainerServiceBackend.create_service = create_service
ecs_models.EC2ContainerServiceBackend.update_service = update_service


def _ecs_backend(region: str, account: str = ACCOUNT_ID):
    """ECS of one account (requests made with a role assumed in account B land in B's backend)."""
    return ecs_models.ecs_backends[account][region]


def _event(service, region: str, event_type: str, name: str, deployment_id: str, reason: str) -> dict:
    now = utcnow().replace(tzinfo=dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "ECS Deployment State Change",
        "source": "aws.ecs",
        "account": service.arn.split(":")[4],
        "time": now,
        "region": region,
        "resources": [service.arn],
        "detail": {
            "eventType": event_type,
            "eventName": name,
            "deploymentId": deployment_id,
            "updatedAt": now,
            "reason": reason,
        },
    }


def _stopped_tasks(backend, service, deployment: dict, body: dict) -> None:
    """The tasks a failed deployment left behind, as ECS keeps them for about an hour."""
    cluster = backend._get_cluster(service.cluster_name)
    definition = backend.describe_task_definition(deployment["taskDefinition"])
    for _ in range(int(body.get("stoppedTasks", 2))):
        task = ecs_models.Task(cluster, definition, None, {}, backend, group=f"service:{service.name}",
                               started_by=deployment["id"])
        task.desired_status = "STOPPED"
        task.last_status = "STOPPED"
        task.stopped_reason = body.get("stoppedReason", "Essential container in task exited")
        for container in task.containers:
            container.last_status = "STOPPED"
            container.exitCode = int(body.get("exitCode", 1))
            container.reason = body.get("containerReason", "CannotStartContainerError: exec /app/server: no such file")
        backend.tasks.setdefault(cluster.name, {})[task.task_arn] = task


def settle(body: dict) -> list[dict]:
    """Completes or fails a deployment; returns the events ECS would emit, oldest first."""
    region = body.get("region", "us-east-1")
    outcome = body.get("outcome", "COMPLETED")
    with LOCK:
        backend = _ecs_backend(region, body.get("account", ACCOUNT_ID))
        service = backend._get_service(body["cluster"], body["service"])
        wanted = body.get("deploymentId")
        deployment = next(
            (d for d in service.deployments if (d["id"] == wanted if wanted else d["status"] == "PRIMARY")),
            None,
        )
        if deployment is None:
            raise KeyError(f"no deployment {wanted or 'PRIMARY'} on {service.name}")
        now = utcnow()
        deployment["updatedAt"] = now
        if outcome == "COMPLETED":
            deployment.update(
                rolloutState="COMPLETED",
                rolloutStateReason=f"ECS deployment {deployment['id']} completed.",
                runningCount=service.desired_count,
                pendingCount=0,
            )
            if deployment["status"] == "PRIMARY":
                service.deployments = [deployment]
                service.running_count = service.desired_count
            return [_event(service, region, "INFO", "SERVICE_DEPLOYMENT_COMPLETED", deployment["id"],
                           f"ECS deployment {deployment['id']} completed.")]

        reason = body.get("reason", "ECS deployment circuit breaker: task failed to start.")
        deployment.update(
            rolloutState="FAILED",
            rolloutStateReason=reason,
            runningCount=0,
            pendingCount=0,
            failedTasks=deployment.get("failedTasks", 0) + max(service.desired_count, 1),
        )
        _stopped_tasks(backend, service, deployment, body)
        events = [_event(service, region, "ERROR", "SERVICE_DEPLOYMENT_FAILED", deployment["id"], reason)]
        if body.get("circuitBreakerRollback"):
            stable = next((d for d in service.deployments if d["rolloutState"] == "COMPLETED"), None)
            if stable is not None:
                deployment["status"] = "ACTIVE"
                rollback = _new_deployment(service, stable["taskDefinition"], "IN_PROGRESS", 0)
                service.deployments = [rollback] + [d for d in service.deployments if d is not rollback]
                service.task_definition = stable["taskDefinition"]
                events.append(_event(service, region, "INFO", "SERVICE_DEPLOYMENT_IN_PROGRESS", rollback["id"],
                                     f"ECS deployment circuit breaker: rolling back to deploymentId {stable['id']}."))
        return events


ecs_native.install(LOCK, settle, _ecs_backend)


# --------------------------------------------------------------------------------------------
# EventBridge routing from the SAM template, and an autopilot that advances deployments
# --------------------------------------------------------------------------------------------

ENDPOINT = {"url": ""}


# Requests the launcher makes to itself (rules, tables, autopilot events) carry this header: they
# are the harness's, not the code under test's, so they are neither logged nor faulted.
INTERNAL_HEADER = "X-Conveyor-Internal"
_CLIENTS: dict[tuple[str, str], object] = {}


def _mark_internal(request, **_) -> None:
    request.headers[INTERNAL_HEADER] = "1"


def _client(service: str, region: str):
    import boto3

    with LOCK:
        client = _CLIENTS.get((service, region))
        if client is None:
            client = boto3.client(service, endpoint_url=ENDPOINT["url"], region_name=region,
                                  aws_access_key_id="test", aws_secret_access_key="test")
            client.meta.events.register("before-sign", _mark_internal)
            _CLIENTS[(service, region)] = client
        return client


def install_rules(body: dict) -> dict:
    """Creates the template's rules on an event bus, each with an SQS queue as target."""
    from template_patterns import Template

    region = body.get("region", "us-east-1")
    bus = body["bus"]
    template = Template(body["template"], body.get("parameters", {}), region, body.get("account", ACCOUNT_ID))
    events, sqs = _client("events", region), _client("sqs", region)
    try:
        events.create_event_bus(Name=bus)
    except events.exceptions.ResourceAlreadyExistsException:
        pass
    installed = {}
    for rule in body["rules"]:
        pattern = template.event_pattern(rule)
        queue_name = f"{bus}-{rule}"
        queue_url = sqs.create_queue(QueueName=queue_name)["QueueUrl"]
        queue_arn = f"arn:aws:sqs:{region}:{ACCOUNT_ID}:{queue_name}"
        events.put_rule(Name=f"{bus}-{rule}", EventBusName=bus, EventPattern=json.dumps(pattern), State="ENABLED")
        events.put_targets(Rule=f"{bus}-{rule}", EventBusName=bus, Targets=[{"Id": "queue", "Arn": queue_arn}])
        installed[rule] = {"queue_url": queue_url, "pattern": pattern}
    return installed


def put_events(body: dict) -> dict:
    """PutEvents onto a bus, from events in the shape EventBridge delivers them."""
    region = body.get("region", "us-east-1")
    entries = []
    for event in body["events"]:
        entry = {
            "Source": event["source"],
            "DetailType": event["detail-type"],
            "Detail": json.dumps(event.get("detail", {})),
            "Resources": event.get("resources", []),
            "EventBusName": body["bus"],
        }
        if event.get("time"):
            entry["Time"] = dt.datetime.fromisoformat(event["time"].replace("Z", "+00:00"))
        entries.append(entry)
    answer = _client("events", region).put_events(Entries=entries)
    return {"failed": answer.get("FailedEntryCount", 0)}


AUTOPILOTS: list[dict] = []


def _image_digests(backend, task_definition_arn: str) -> set[str]:
    definition = backend.describe_task_definition(task_definition_arn)
    return {c.get("image", "").rsplit("@", 1)[-1] for c in definition.container_definitions}


def _autopilot_tick() -> list[dict]:
    """Settles what is due; returns the events to put (outside the lock: putting is an HTTP call)."""
    now = utcnow()
    to_put = []
    for pilot in list(AUTOPILOTS):
        for account in pilot.get("accounts", [ACCOUNT_ID]):
            to_put.extend(_autopilot_account(pilot, account, now))
    return to_put


def _autopilot_account(pilot: dict, account: str, now) -> list[dict]:
    """One autopilot's due deployments in one account (events from every account land on the
    pilot's bus, as the target accounts' forwarding rules put them on Conveyor's)."""
    to_put = []
    region = pilot.get("region", "us-east-1")
    backend = _ecs_backend(region, account)
    for service in list(backend.services.values()):
        if service.cluster_name not in pilot["clusters"] or ecs_native.in_flight(service.arn):
            continue
        primary = next((d for d in service.deployments if d["status"] == "PRIMARY"), None)
        if not primary or primary["rolloutState"] != "IN_PROGRESS":
            continue
        if (now - primary["createdAt"]).total_seconds() < pilot.get("delay_seconds", 2):
            continue
        failing = bool(_image_digests(backend, primary["taskDefinition"]) & set(pilot.get("fail_digests", [])))
        body = {"cluster": service.cluster_name, "service": service.name, "region": region,
                "account": account, "deploymentId": primary["id"],
                "outcome": "FAILED" if failing else "COMPLETED",
                "circuitBreakerRollback": pilot.get("circuit_breaker", False)}
        try:
            emitted = settle(body)
        except Exception as error:  # a service changed under us: next tick
            print(f"autopilot: {error}", file=sys.stderr)
            continue
        if pilot.get("bus"):
            # Another region's events reach Conveyor's bus (`bus_region`) through a forwarding rule.
            to_put.append({"bus": pilot["bus"], "region": pilot.get("bus_region", region), "events": emitted})
    return to_put


def _autopilot_loop() -> None:
    import time

    while True:
        time.sleep(0.25)
        try:
            with LOCK:
                due = _autopilot_tick()
                native, hooks = ecs_native.step(time.monotonic())
            ecs_native.start_calls(hooks)
            for batch in due + native:
                put_events(batch)
        except Exception as error:
            print(f"autopilot: {error}", file=sys.stderr)


# --------------------------------------------------------------------------------------------
# DynamoDB tables from the SAM template
# --------------------------------------------------------------------------------------------


def install_table(body: dict) -> dict:
    """Creates a table from an ``AWS::DynamoDB::Table`` resource of the SAM template (so the tests
    run against the very table production gets), then applies its TTL and point-in-time recovery.
    Idempotent: an existing table is kept and its settings applied again."""
    from botocore.exceptions import ClientError
    from template_patterns import Template

    region = body.get("region", "us-east-1")
    name = body["table"]
    template = Template(body["template"], body.get("parameters", {}), region, body.get("account", ACCOUNT_ID))
    props = template.properties(body["resource"], "AWS::DynamoDB::Table")
    ddb = _client("dynamodb", region)

    # CloudFormation's property shapes are the API's, except for these few.
    request = {"TableName": name}
    for key in ["AttributeDefinitions", "KeySchema", "BillingMode", "GlobalSecondaryIndexes",
                "LocalSecondaryIndexes", "ProvisionedThroughput", "TableClass", "DeletionProtectionEnabled",
                "Tags", "OnDemandThroughput", "WarmThroughput"]:
        if props.get(key) not in (None, [], {}):
            request[key] = props[key]
    if "SSESpecification" in props:
        sse = props["SSESpecification"]
        spec = {"Enabled": bool(sse.get("SSEEnabled", False))}
        if sse.get("SSEType"):
            spec["SSEType"] = sse["SSEType"]
        if sse.get("KMSMasterKeyId"):
            spec["KMSMasterKeyId"] = sse["KMSMasterKeyId"]
        request["SSESpecification"] = spec
    if props.get("StreamSpecification", {}).get("StreamViewType"):
        request["StreamSpecification"] = {"StreamEnabled": True,
                                          "StreamViewType": props["StreamSpecification"]["StreamViewType"]}
    applied, skipped = [], {}
    try:
        ddb.create_table(**request)
        created = True
    except ddb.exceptions.ResourceInUseException:
        created = False
    applied += [k for k in request if k != "TableName"]

    ttl = props.get("TimeToLiveSpecification")
    if ttl:
        try:
            current = ddb.describe_time_to_live(TableName=name)["TimeToLiveDescription"]
            wanted = "ENABLED" if ttl.get("Enabled") else "DISABLED"
            if current.get("TimeToLiveStatus") != wanted or current.get("AttributeName", ttl["AttributeName"]) != ttl["AttributeName"]:
                ddb.update_time_to_live(TableName=name, TimeToLiveSpecification={
                    "AttributeName": ttl["AttributeName"], "Enabled": bool(ttl.get("Enabled"))})
            applied.append("TimeToLiveSpecification")
        except ClientError as error:
            skipped["TimeToLiveSpecification"] = str(error)
    pitr = props.get("PointInTimeRecoverySpecification")
    if pitr:
        spec = {"PointInTimeRecoveryEnabled": bool(pitr.get("PointInTimeRecoveryEnabled"))}
        if pitr.get("RecoveryPeriodInDays"):
            spec["RecoveryPeriodInDays"] = int(pitr["RecoveryPeriodInDays"])
        try:
            ddb.update_continuous_backups(TableName=name, PointInTimeRecoverySpecification=spec)
            applied.append("PointInTimeRecoverySpecification")
        except ClientError as error:
            skipped["PointInTimeRecoverySpecification"] = str(error)
    return {"table": name, "created": created, "applied": applied, "skipped": skipped}


# --------------------------------------------------------------------------------------------
# ECS task definitions: members moto does not model
# --------------------------------------------------------------------------------------------

ECS_TARGET_PREFIX = "AmazonEC2ContainerServiceV20141113."
# Task-definition ARN => the members of its RegisterTaskDefinition request that moto dropped:
# {"top": {member: value}, "containers": {container name: {member: value}}}. Real ECS returns
# members newer than a client's SDK; moto (and its botocore model) drops them. Keeping them lets
# tests check that the library notices members it cannot carry over.
TASKDEF_EXTRAS: dict[str, dict] = {}
# Request members that are not part of the TaskDefinition that ECS returns.
_REQUEST_ONLY = {"tags"}


def _dropped_members(requested: dict, returned: dict) -> dict:
    top = {k: v for k, v in requested.items() if k not in returned and k not in _REQUEST_ONLY and v is not None}
    containers = {}
    by_name = {c.get("name"): c for c in returned.get("containerDefinitions", [])}
    for container in requested.get("containerDefinitions") or []:
        kept = by_name.get(container.get("name"), {})
        missing = {k: v for k, v in container.items() if k not in kept and v is not None}
        if missing:
            containers[container.get("name")] = missing
    return {"top": top, "containers": containers} if top or containers else {}


def _restore_members(definition: dict) -> bool:
    with LOCK:
        extras = TASKDEF_EXTRAS.get(definition.get("taskDefinitionArn", ""))
    if not extras:
        return False
    for key, value in extras["top"].items():
        definition.setdefault(key, value)
    for container in definition.get("containerDefinitions", []):
        for key, value in extras["containers"].get(container.get("name"), {}).items():
            container.setdefault(key, value)
    return True


def _task_definition_call(inner, operation: str, body: bytes, environ) -> Response:
    """Runs a RegisterTaskDefinition/DescribeTaskDefinition/DeregisterTaskDefinition call through moto
    and puts back the members moto dropped on register."""
    response = Response.from_app(inner, environ, buffered=True)
    if response.status_code != 200:
        return response
    try:
        answer = json.loads(response.get_data())
    except ValueError:
        return response
    definitions = [answer["taskDefinition"]] if isinstance(answer.get("taskDefinition"), dict) else []
    definitions += [d for d in answer.get("taskDefinitions") or [] if isinstance(d, dict)]
    if operation == "RegisterTaskDefinition" and definitions:
        try:
            requested = json.loads(body or b"{}")
        except ValueError:
            requested = {}
        extras = _dropped_members(requested, definitions[0])
        with LOCK:
            TASKDEF_EXTRAS[definitions[0].get("taskDefinitionArn", "")] = extras
    changed = [_restore_members(d) for d in definitions]
    if any(changed):
        response.set_data(json.dumps(answer))
    return response


# --------------------------------------------------------------------------------------------
# Fault injection, rate limits, the call log
# --------------------------------------------------------------------------------------------

MODES = {"throttle", "http500", "http503", "error", "reset", "latency", "apply_then_fail", "kill"}
# Pending faults, oldest first. Each: operation, match, mode, after, remaining (None = until
# cleared), rate, random, seen (matching calls so far), fired, and the mode's own fields.
FAULTS: list[dict] = []
FAULT_IDS = itertools.count(1)
# Token buckets: operation, match, rate (per second), burst, tokens, stamp.
RATE_LIMITS: list[dict] = []
# Recent AWS calls, oldest first: seq, operation, haystack (what `match` is searched in), fault.
CALLS: list[dict] = []
MAX_CALLS = 20000
CALL_SEQ = itertools.count(1)


def _operation(request: Request) -> str | None:
    target = request.headers.get("X-Amz-Target")
    if target:
        return target.split(".")[-1]
    if request.method == "POST" and request.mimetype == "application/x-www-form-urlencoded":
        return request.form.get("Action")
    return cloudwatch_cbor.operation_of(request.path)


def _haystack(request: Request, body: bytes) -> bytes:
    """The request body, plus its decoded form for query-protocol requests (so a `match` with
    '/' or ':' finds an SNS topic ARN or an SSM path in `Name=%2Fconveyor...`), plus the access key
    id that signed it (`credential=KEY`), so a test can tell whose credentials made a call."""
    if request.mimetype == "application/x-www-form-urlencoded":
        body = body + b"\n" + urllib.parse.unquote_plus(body.decode("utf-8", "replace")).encode()
    signed = re.search(r"Credential=([^/,\s]+)/", request.headers.get("Authorization", ""))
    if signed:
        body = body + b"\ncredential=" + signed.group(1).encode()
    return body


def _matches(rule: dict, operation: str | None, haystack: bytes) -> bool:
    return rule["operation"] in (operation, "*") and rule["match"].encode() in haystack


def _add_fault(body: dict) -> dict:
    mode = body.get("mode", "error")
    if mode not in MODES:
        raise ValueError(f"unknown fault mode {mode!r} (one of {sorted(MODES)})")
    count = body.get("count")
    rate = body.get("rate")
    if rate is not None and not 0.0 <= float(rate) <= 1.0:
        raise ValueError(f"rate {rate} is not a probability")
    if mode == "kill" and not isinstance(body.get("pid"), int):
        raise ValueError("a kill fault needs the pid to kill")
    if mode == "latency" and body.get("latency_ms") is None:
        raise ValueError("a latency fault needs latency_ms")
    # count 0, or no count with `persistent` or `rate`: until cleared.
    unlimited = count == 0 or (count is None and (body.get("persistent") or rate is not None))
    fault = dict(body, operation=body["operation"], match=body.get("match", ""), mode=mode,
                 after=int(body.get("after", 0)), remaining=None if unlimited else int(count or 1),
                 rate=None if rate is None else float(rate),
                 random=random.Random(body.get("seed", 0)), seen=0, fired=0, id=next(FAULT_IDS))
    with LOCK:
        FAULTS.append(fault)
    return fault


def _take_fault(operation: str | None, haystack: bytes) -> dict | None:
    """The first pending fault for this call that is due. Every matching fault counts the call
    (for `after`), whether or not another one fires on it."""
    if not operation:
        return None
    chosen = None
    with LOCK:
        for fault in FAULTS:
            if not _matches(fault, operation, haystack):
                continue
            fault["seen"] += 1
            if chosen is not None or fault["seen"] <= fault["after"]:
                continue
            if fault["rate"] is not None and fault["random"].random() >= fault["rate"]:
                continue
            chosen = fault
        if chosen is not None:
            chosen["fired"] += 1
            if chosen["remaining"] is not None:
                chosen["remaining"] -= 1
                if chosen["remaining"] <= 0:
                    FAULTS.remove(chosen)
    return chosen


def _rate_limited(operation: str | None, haystack: bytes) -> bool:
    """Token buckets like AWS's API rate limits: `burst` calls at once, then `rate` per second."""
    if not operation:
        return False
    now = time.monotonic()
    limited = False
    with LOCK:
        for rule in RATE_LIMITS:
            if not _matches(rule, operation, haystack):
                continue
            rule["tokens"] = min(rule["burst"], rule["tokens"] + (now - rule["stamp"]) * rule["rate"])
            rule["stamp"] = now
            if rule["tokens"] >= 1.0:
                rule["tokens"] -= 1.0
            else:
                limited = True
    return limited


def _log_call(operation: str, haystack: bytes) -> dict:
    with LOCK:
        record = {"seq": next(CALL_SEQ), "operation": operation, "haystack": haystack, "fault": None}
        CALLS.append(record)
        del CALLS[:-MAX_CALLS]
        return record


def _json(status: int, payload) -> Response:
    return Response(json.dumps(payload, default=str), status=status, mimetype="application/json")


def _is_query_protocol(request: Request) -> bool:
    return not request.headers.get("X-Amz-Target") and request.mimetype == "application/x-www-form-urlencoded"


def _aws_error(request: Request, status: int, code: str, message: str) -> Response:
    """An error in the wire format of the request's protocol, as the SDKs parse it: awsJson
    (``__type`` + ``x-amzn-ErrorType``) or awsQuery (``<ErrorResponse>`` XML)."""
    request_id = str(uuid.uuid4())
    if cloudwatch_cbor.operation_of(request.path):
        return cloudwatch_cbor.error(status, code, message)
    if _is_query_protocol(request):
        kind = "Sender" if status < 500 else "Receiver"
        xml = (f"<ErrorResponse><Error><Type>{kind}</Type><Code>{escape(code)}</Code>"
               f"<Message>{escape(message)}</Message></Error><RequestId>{request_id}</RequestId></ErrorResponse>")
        return Response(xml, status=status, content_type="text/xml", headers={"x-amzn-RequestId": request_id})
    content_type = request.mimetype if request.mimetype.startswith("application/x-amz-json") else "application/json"
    return Response(json.dumps({"__type": code, "message": message}), status=status, content_type=content_type,
                    headers={"x-amzn-ErrorType": code, "x-amzn-RequestId": request_id})


def _fault_error(request: Request, fault: dict) -> Response:
    mode = fault["mode"]
    query = _is_query_protocol(request)
    if mode == "throttle":
        status, code, message = 400, "Throttling" if query else "ThrottlingException", "Rate exceeded"
    elif mode == "http503":
        status, code, message = 503, "ServiceUnavailable", "Service is unavailable. Try again later."
    elif mode == "error":
        status, code, message = 500, "InternalFailure", "injected fault"
    else:  # http500, apply_then_fail
        status, code, message = 500, "InternalFailure", "We encountered an internal error. Please try again."
    return _aws_error(request, int(fault.get("status", status)), fault.get("code", code), fault.get("message", message))


# A connection the client should see reset: no HTTP response, then a TCP RST (not a FIN).
RESET_KEY = "conveyor.reset"
_RESET_SOCKETS: "weakref.WeakSet[socket.socket]" = weakref.WeakSet()


class _ConnectionReset(ConnectionResetError):
    """Raised by the app to abandon a request: werkzeug treats it as a dropped connection and
    writes nothing."""


class Handler(MotoRequestHandler):
    def log_request(self, code="-", size="-") -> None:
        """No access log: nobody reads it (stderr goes nowhere), and formatting a line per request
        cost the single-process local AWS about 7 % of its time under the test suite's load."""

    def run_wsgi(self) -> None:
        super().run_wsgi()
        if getattr(self, "environ", {}).get(RESET_KEY):
            # No keep-alive read of a next request, and a close that sends RST (SO_LINGER 0).
            self.close_connection = True
            try:
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                with LOCK:
                    _RESET_SOCKETS.add(self.connection)
            except OSError:
                pass


def _install_reset(server) -> None:
    """socketserver half-closes (FIN) every connection before closing it; a reset one must be
    closed outright so that the client gets the RST of SO_LINGER 0."""
    original = server.shutdown_request

    def shutdown_request(request) -> None:
        with LOCK:
            reset = request in _RESET_SOCKETS
            _RESET_SOCKETS.discard(request)
        if reset:
            server.close_request(request)
        else:
            original(request)

    server.shutdown_request = shutdown_request


class Control:
    """WSGI middleware: the /_conveyor control API in front of moto, plus fault injection."""

    def __init__(self, inner):
        self.inner = inner

    def __call__(self, environ, start_response):
        request = Request(environ)
        if request.path.startswith("/_conveyor/"):
            return self.control(request)(environ, start_response)
        if request.path == "/moto-api/reset":
            with LOCK:
                TASKDEF_EXTRAS.clear()
        body = request.get_data(cache=True)
        environ["wsgi.input"] = io.BytesIO(body)
        environ["CONTENT_LENGTH"] = str(len(body))
        operation = _operation(request)
        if request.headers.get(INTERNAL_HEADER):
            return self.serve(request, operation, body, environ, start_response)
        haystack = _haystack(request, body)
        record = _log_call(operation or request.path, haystack)
        fault = _take_fault(operation, haystack) if FAULTS else None
        if fault is None and RATE_LIMITS and _rate_limited(operation, haystack):
            fault = {"mode": "throttle", "log": "ratelimit"}
        if fault is None:
            return self.attributed(request, operation, body, environ, start_response)
        record["fault"] = fault.get("log", fault["mode"])
        mode = fault["mode"]
        if mode == "latency":
            time.sleep(float(fault["latency_ms"]) / 1000.0)
            return self.attributed(request, operation, body, environ, start_response)
        if mode == "kill":
            try:
                os.kill(int(fault["pid"]), signal.SIGKILL)
            except ProcessLookupError:
                pass
            mode = "reset"
        if mode == "reset":
            environ[RESET_KEY] = True
            raise _ConnectionReset(f"injected connection reset on {operation}")
        if mode == "apply_then_fail":
            # moto applies the request; its answer is lost on the way back.
            Response.from_app(lambda e, s: self.serve(request, operation, body, e, s), environ, buffered=True)
        return _fault_error(request, fault)(environ, start_response)

    def attributed(self, request: Request, operation: str | None, body: bytes, environ, start_response):
        """Serves the call; keeps it with its caller when the caller's scope is watched (IAM test)."""
        caller = caller_of(request.headers)
        if not operation or not IAM_CALLS.watched(caller):
            return self.serve(request, operation, body, environ, start_response)
        answer = Response.from_app(lambda e, s: self.serve(request, operation, body, e, s), environ, buffered=True)
        IAM_CALLS.record(caller, operation, request.mimetype, body, answer.status_code, answer.get_data())
        return answer(environ, start_response)

    def serve(self, request: Request, operation: str | None, body: bytes, environ, start_response):
        if cloudwatch_cbor.operation_of(request.path):
            return cloudwatch_cbor.serve(operation, request.headers, body)(environ, start_response)
        target = request.headers.get("X-Amz-Target", "")
        if target.startswith("DynamoDB_"):
            # DynamoDB applies a conditional write atomically; moto checks the condition and then
            # writes without a lock, so two concurrent writers could both pass. One at a time here.
            with DYNAMODB_LOCK:
                answer = Response.from_app(self.inner, environ, buffered=True)
            return answer(environ, start_response)
        if target.startswith(ECS_TARGET_PREFIX) and operation in (
            "RegisterTaskDefinition", "DescribeTaskDefinition", "DeregisterTaskDefinition", "DeleteTaskDefinitions"
        ):
            return _task_definition_call(self.inner, operation, body, environ)(environ, start_response)
        return self.inner(environ, start_response)

    def control(self, request: Request) -> Response:
        try:
            body = request.get_json(force=True, silent=True) or {}
            if request.path == "/_conveyor/ecs/settle":
                return _json(200, {"events": settle(body)})
            if request.path == "/_conveyor/eventbridge/install":
                return _json(200, install_rules(body))
            if request.path == "/_conveyor/eventbridge/pattern":
                from template_patterns import Template

                template = Template(body["template"], body.get("parameters", {}), body.get("region", "us-east-1"),
                                    body.get("account", ACCOUNT_ID))
                return _json(200, template.event_pattern(body["rule"]))
            if request.path == "/_conveyor/eventbridge/put":
                return _json(200, put_events(body))
            if request.path == "/_conveyor/cloudwatch/alarm":
                return _json(200, cloudwatch_cbor.set_alarm(body))
            if request.path == "/_conveyor/dynamodb/install":
                return _json(200, install_table(body))
            if request.path == "/_conveyor/ecs/autopilot":
                with LOCK:
                    AUTOPILOTS[:] = [p for p in AUTOPILOTS if p["clusters"] != body["clusters"]] + [body]
                return _json(200, {"ok": True})
            if request.path == "/_conveyor/ecs/native":
                return _json(200, ecs_native.configure(body))
            if request.path == "/_conveyor/ecs/native/state":
                return _json(200, ecs_native.state(body))
            if request.path.startswith("/_conveyor/traffic/"):
                kind, cluster, service = request.path.removeprefix("/_conveyor/traffic/").split("/")
                status, answer = ecs_native.traffic(kind, cluster, service)
                return _json(status, answer)
            if request.path == "/_conveyor/faults/clear":
                # Every fault with exactly this `match` (optionally of one operation), persistent or not.
                with LOCK:
                    FAULTS[:] = [f for f in FAULTS if f["match"] != body.get("match", "")
                                 or body.get("operation", f["operation"]) != f["operation"]]
                return _json(200, {"ok": True})
            if request.path == "/_conveyor/faults":
                fault = _add_fault(body)
                return _json(200, {"ok": True, "id": fault["id"]})
            if request.path == "/_conveyor/faults/list":
                with LOCK:
                    listed = [{k: f[k] for k in ("id", "operation", "match", "mode", "after", "remaining", "seen",
                                                 "fired")} for f in FAULTS if f["match"] == body.get("match", "")]
                return _json(200, {"faults": listed})
            if request.path == "/_conveyor/ratelimit":
                rate, burst = float(body["rate"]), float(body.get("burst", 1))
                if rate < 0 or burst < 1:
                    raise ValueError("a rate limit needs rate >= 0 and burst >= 1")
                rule = {"operation": body["operation"], "match": body.get("match", ""), "rate": rate,
                        "burst": burst, "tokens": burst, "stamp": time.monotonic()}
                with LOCK:
                    RATE_LIMITS[:] = [r for r in RATE_LIMITS
                                      if (r["operation"], r["match"]) != (rule["operation"], rule["match"])] + [rule]
                return _json(200, {"ok": True})
            if request.path == "/_conveyor/ratelimit/clear":
                with LOCK:
                    RATE_LIMITS[:] = [r for r in RATE_LIMITS if r["match"] != body.get("match", "")]
                return _json(200, {"ok": True})
            if request.path == "/_conveyor/calls":
                marker = body["match"].encode()
                counts: dict[str, int] = {}
                with LOCK:
                    for call in CALLS:
                        if marker in call["haystack"]:
                            counts[call["operation"]] = counts.get(call["operation"], 0) + 1
                return _json(200, counts)
            if request.path == "/_conveyor/calls/log":
                marker = body["match"].encode()
                since = int(body.get("since", 0))
                with LOCK:
                    log = [{"seq": c["seq"], "operation": c["operation"], "fault": c["fault"]}
                           for c in CALLS if c["seq"] > since and marker in c["haystack"]]
                return _json(200, {"calls": log})
            if request.path == "/_conveyor/iam/watch":
                IAM_CALLS.watch(body["scope"])
                return _json(200, {"ok": True})
            if request.path == "/_conveyor/iam/calls":
                return _json(200, {"calls": IAM_CALLS.of(body["scope"])})
            if request.path == "/_conveyor/iam/evaluate":
                from iam_policy import evaluate

                return _json(200, evaluate(body, IAM_CALLS.of(body["scope"])))
            if request.path == "/_conveyor/iam/decide":
                from iam_policy import decide

                return _json(200, decide(body["spec"], body["question"]))
            if request.path == "/_conveyor/health":
                return _json(200, {"ok": True})
            return _json(404, {"error": f"unknown control path {request.path}"})
        except Exception as error:  # the control API answers every mistake with a readable 400
            return _json(400, {"error": f"{type(error).__name__}: {error}"})


def _exit_with_parent(pid: int) -> None:
    """Test harnesses cannot always stop us (a static lives until exit): follow the parent."""
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            os._exit(0)
        time.sleep(0.5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--port-file", help="write the chosen port here once listening")
    parser.add_argument("--parent-pid", type=int, help="exit when this process is gone")
    args = parser.parse_args()
    if args.parent_pid:
        threading.Thread(target=_exit_with_parent, args=(args.parent_pid,), daemon=True).start()

    app = Control(DomainDispatcherApplication(create_backend_app))
    server = make_server(args.host, args.port, app, threaded=True, request_handler=Handler)
    _install_reset(server)
    port = server.server_address[1]
    if args.port_file:
        with open(args.port_file + ".tmp", "w") as handle:
            handle.write(str(port))
        os.replace(args.port_file + ".tmp", args.port_file)
    ENDPOINT["url"] = f"http://{args.host}:{port}"
    threading.Thread(target=_autopilot_loop, daemon=True).start()
    print(f"READY http://{args.host}:{port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
