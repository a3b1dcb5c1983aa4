"""Local AWS for Conveyor: moto server, in-process, with a realistic ECS deployment lifecycle.

moto's ECS never creates a deployment on UpdateService and never advances one. Conveyor's whole job
is deployments, so this launcher patches moto's ECS backend to behave like ECS does:

* ``CreateService`` starts with one COMPLETED PRIMARY deployment whose tasks all run.
* ``UpdateService`` with a different task definition creates a new PRIMARY deployment
  (IN_PROGRESS, new ``ecs-svc/...`` id, full task-definition ARN); the previous ones turn ACTIVE.
* ``POST /_conveyor/ecs/settle`` completes or fails a deployment (optionally as an ECS
  circuit-breaker rollback) and answers with the "ECS Deployment State Change" events real ECS
  would emit, in order.
* ``POST /_conveyor/faults`` makes the next N calls of an AWS operation fail with a given error
  (fault injection through the real HTTP API).

Usage: ``python moto_launcher.py [--port N] [--port-file PATH]``; prints ``READY <url>`` when up.
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import os
import sys
import threading
import uuid

from moto.core.utils import utcnow
from moto.ecs import models as ecs_models
from moto.moto_api._internal import mock_random
from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

ACCOUNT_ID = "123456789012"
LOCK = threading.RLock()


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


def update_service(self, service_properties):
    with LOCK:
        cluster = service_properties.get("cluster", "default")
        name = service_properties["service"].split("/")[-1]
        requested = service_properties.get("task_definition")
        service = self._get_service(cluster, name)
        previous = service.task_definition
        service = _original_update_service(self, service_properties)
        if requested:
            # Real ECS stores and returns the full ARN, whatever form the caller used.
            arn = self.describe_task_definition(requested).arn
            service.task_definition = arn
            if arn != previous:
                for deployment in service.deployments:
                    deployment["status"] = "ACTIVE"
                service.deployments.insert(0, _new_deployment(service, arn, "IN_PROGRESS", 0))
        return service


ecs_models.EC2ContainerServiceBackend.create_service = create_service
ecs_models.EC2ContainerServiceBackend.update_service = update_service


def _ecs_backend(region: str):
    return ecs_models.ecs_backends[ACCOUNT_ID][region]


def _event(service, region: str, event_type: str, name: str, deployment_id: str, reason: str) -> dict:
    now = utcnow().replace(tzinfo=dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "ECS Deployment State Change",
        "source": "aws.ecs",
        "account": ACCOUNT_ID,
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
        backend = _ecs_backend(region)
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


# --------------------------------------------------------------------------------------------
# EventBridge routing from the SAM template, and an autopilot that advances deployments
# --------------------------------------------------------------------------------------------

ENDPOINT = {"url": ""}


def _client(service: str, region: str):
    import boto3

    return boto3.client(service, endpoint_url=ENDPOINT["url"], region_name=region,
                        aws_access_key_id="test", aws_secret_access_key="test")


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
        region = pilot.get("region", "us-east-1")
        backend = _ecs_backend(region)
        for service in list(backend.services.values()):
            if service.cluster_name not in pilot["clusters"]:
                continue
            primary = next((d for d in service.deployments if d["status"] == "PRIMARY"), None)
            if not primary or primary["rolloutState"] != "IN_PROGRESS":
                continue
            if (now - primary["createdAt"]).total_seconds() < pilot.get("delay_seconds", 2):
                continue
            failing = bool(_image_digests(backend, primary["taskDefinition"]) & set(pilot.get("fail_digests", [])))
            body = {"cluster": service.cluster_name, "service": service.name, "region": region,
                    "deploymentId": primary["id"],
                    "outcome": "FAILED" if failing else "COMPLETED",
                    "circuitBreakerRollback": pilot.get("circuit_breaker", False)}
            try:
                emitted = settle(body)
            except Exception as error:  # a service changed under us: next tick
                print(f"autopilot: {error}", file=sys.stderr)
                continue
            if pilot.get("bus"):
                to_put.append({"bus": pilot["bus"], "region": region, "events": emitted})
    return to_put


def _autopilot_loop() -> None:
    import time

    while True:
        time.sleep(0.25)
        try:
            with LOCK:
                due = _autopilot_tick()
            for batch in due:
                put_events(batch)
        except Exception as error:
            print(f"autopilot: {error}", file=sys.stderr)


# --------------------------------------------------------------------------------------------
# Fault injection and the control API
# --------------------------------------------------------------------------------------------

FAULTS: dict[str, list[dict]] = {}
# (operation, request body) of recent AWS calls, for counting a test's calls by operation.
CALLS: list[tuple[str, bytes]] = []
MAX_CALLS = 20000


def _operation(request: Request) -> str | None:
    target = request.headers.get("X-Amz-Target")
    if target:
        return target.split(".")[-1]
    if request.method == "POST" and request.mimetype == "application/x-www-form-urlencoded":
        return request.form.get("Action")
    return None


def _take_fault(operation: str | None, body: bytes) -> dict | None:
    """The first pending fault for this operation whose `match` text occurs in the request."""
    if not operation:
        return None
    with LOCK:
        queue = FAULTS.get(operation, [])
        for fault in queue:
            if fault.get("match", "").encode() in body:
                fault["count"] -= 1
                if fault["count"] <= 0:
                    queue.remove(fault)
                return fault
        return None


def _json(status: int, payload) -> Response:
    return Response(json.dumps(payload, default=str), status=status, mimetype="application/json")


class Control:
    """WSGI middleware: the /_conveyor control API in front of moto, plus fault injection."""

    def __init__(self, inner):
        self.inner = inner

    def __call__(self, environ, start_response):
        request = Request(environ)
        if request.path.startswith("/_conveyor/"):
            return self.control(request)(environ, start_response)
        body = request.get_data(cache=True)
        environ["wsgi.input"] = io.BytesIO(body)
        environ["CONTENT_LENGTH"] = str(len(body))
        operation = _operation(request)
        with LOCK:
            CALLS.append((operation or request.path, body))
            del CALLS[:-MAX_CALLS]
        fault = _take_fault(operation, body) if FAULTS else None
        if fault is not None:
            body = {"__type": fault["code"], "message": fault.get("message", "injected fault")}
            return _json(fault.get("status", 500), body)(environ, start_response)
        return self.inner(environ, start_response)

    def control(self, request: Request) -> Response:
        try:
            body = request.get_json(force=True, silent=True) or {}
            if request.path == "/_conveyor/ecs/settle":
                return _json(200, {"events": settle(body)})
            if request.path == "/_conveyor/eventbridge/install":
                return _json(200, install_rules(body))
            if request.path == "/_conveyor/eventbridge/put":
                return _json(200, put_events(body))
            if request.path == "/_conveyor/ecs/autopilot":
                with LOCK:
                    AUTOPILOTS[:] = [p for p in AUTOPILOTS if p["clusters"] != body["clusters"]] + [body]
                return _json(200, {"ok": True})
            if request.path == "/_conveyor/faults/clear":
                with LOCK:
                    for queue in FAULTS.values():
                        queue[:] = [f for f in queue if f.get("match", "") != body.get("match", "")]
                return _json(200, {"ok": True})
            if request.path == "/_conveyor/faults":
                with LOCK:
                    FAULTS.setdefault(body["operation"], []).append(dict(body, count=body.get("count", 1)))
                return _json(200, {"ok": True})
            if request.path == "/_conveyor/calls":
                marker = body["match"].encode()
                counts: dict[str, int] = {}
                with LOCK:
                    for operation, call in CALLS:
                        if marker in call:
                            counts[operation] = counts.get(operation, 0) + 1
                return _json(200, counts)
            if request.path == "/_conveyor/health":
                return _json(200, {"ok": True})
            return _json(404, {"error": f"unknown control path {request.path}"})
        except Exception as error:  # the control API answers every mistake with a readable 400
            return _json(400, {"error": f"{type(error).__name__}: {error}"})


def _exit_with_parent(pid: int) -> None:
    """Test harnesses cannot always stop us (a static lives until exit): follow the parent."""
    import time

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
    server = make_server(args.host, args.port, app, threaded=True, request_handler=MotoRequestHandler)
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
