"""Native ECS deployments for the local AWS: BLUE_GREEN, LINEAR and CANARY, with Lambda lifecycle hooks.

moto stores a service's ``deploymentConfiguration`` (``strategy``, ``lifecycleHooks``,
``bakeTimeInMinutes``...) but runs no strategy and has none of the service-deployment APIs. Here, for
a service whose strategy is native, ``UpdateService`` to a new task definition also creates:

* a **service revision** per task definition deployed (``DescribeServiceRevisions``: the task
  definition, ``containerImages`` with each container's ``imageDigest``);
* a **service deployment** (``ListServiceDeployments``, ``DescribeServiceDeployments``) that steps
  through ECS's lifecycle stages on the autopilot thread, moving green's test and production traffic
  weights as ECS does, and calling the Lambda hooks registered at each stage through a Lambda Invoke
  API (the test kit's, ``lambda_url``) with ECS's payload: ``SUCCEEDED`` goes on, ``IN_PROGRESS``
  calls again after ``callBackDelay`` (its returned ``hookDetails`` merged into the next call's),
  ``FAILED``, a function error or an answer without a valid ``hookStatus`` roll back;
* ``StopServiceDeployment(ROLLBACK)`` rolls an in-flight deployment back;
* a ``PAUSE`` hook holds the deployment at its stage (``lifecycleHookDetails``: an ``ecs-pause-...``
  ``hookId``, ``AWAITING_ACTION``, ``expiresAt``, ``timeoutAction``) and puts an ``ECS Hook State
  Change`` event (``HOOK_AWAITING_ACTION``) on the bus, until ``ContinueServiceDeployment`` with that
  ``hookId`` (``CONTINUE`` goes on, ``ROLLBACK`` rolls back; another id, or a hook no longer
  awaiting, is refused) or its timeout (``timeoutInMinutes``, scaled) takes ``timeoutAction``.

A rollback moves all traffic back to blue and settles the service's ``deployments`` list as ECS's
circuit breaker does (the green deployment FAILED with the reason, a rollback deployment to blue),
so the same ``ECS Deployment State Change`` events follow; success completes it. Hooks are called
outside the launcher's lock (a hook calls back into the local AWS) and their answers applied on a
later tick. Time is scaled: each stage lasts ``stage_seconds``, a ``callBackDelay`` or a bake time
of N seconds lasts N × ``time_scale``.

Test traffic has no data plane in moto: ``GET /_conveyor/traffic/{test|production}/{cluster}/{service}``
answers as the revision a request would reach by the deployment's weights (green with its weight's
probability): ``503`` for a digest in ``unhealthy_digests``, else ``200``.

What this assumes where AWS's documentation is silent is listed in ``tests/localaws/ASSUMPTIONS.md``.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import random
import sys
import threading
import urllib.parse
import urllib.request
import uuid

from moto.core.responses import ActionResult
from moto.core.utils import utcnow
from moto.ecs.exceptions import EcsClientException
from moto.ecs.responses import EC2ContainerServiceResponse
from moto.moto_api._internal import mock_random

NATIVE_STRATEGIES = ("BLUE_GREEN", "LINEAR", "CANARY")
DEFAULT_CALL_BACK_SECONDS = 30
TERMINAL = ("SUCCESSFUL", "STOPPED", "ROLLBACK_SUCCESSFUL", "ROLLBACK_FAILED")

CONFIGS: list[dict] = []
REVISIONS: dict[str, dict] = {}
DEPLOYMENTS: dict[str, dict] = {}
RUNS: dict[str, dict] = {}
HOOKS = {"lock": None, "settle": None, "backend": None}


def install(lock, settle, backend) -> None:
    """The launcher's lock, its ``settle`` (which settles the ``deployments`` list and returns the
    events) and its ``_ecs_backend(region, account)``."""
    HOOKS.update(lock=lock, settle=settle, backend=backend)


def configure(body: dict) -> dict:
    """``/_conveyor/ecs/native``: ``{clusters, lambda_url, bus, bus_region, stage_seconds, time_scale,
    unhealthy_digests}`` for the services of those clusters."""
    with HOOKS["lock"]:
        CONFIGS[:] = [c for c in CONFIGS if c["clusters"] != body["clusters"]] + [body]
    return {"ok": True}


def _config(cluster: str) -> dict:
    return next((c for c in reversed(CONFIGS) if cluster in c["clusters"]), {})


def strategy(service) -> str | None:
    conf = getattr(service, "deployment_configuration", None) or {}
    found = conf.get("strategy") if isinstance(conf, dict) else None
    return found if found in NATIVE_STRATEGIES else None


def _arn_parts(service) -> tuple[str, str]:
    parts = service.arn.split(":")
    return parts[3], parts[4]


def _digest(image: str) -> str | None:
    return image.rsplit("@", 1)[1] if "@" in image else None


def _revision(backend, service, task_definition_arn: str) -> dict:
    """The service revision of `task_definition_arn` (one per task definition and service here)."""
    for revision in REVISIONS.values():
        if revision["serviceArn"] == service.arn and revision["taskDefinition"] == task_definition_arn:
            return revision
    region, account = _arn_parts(service)
    definition = backend.describe_task_definition(task_definition_arn)
    images = []
    for container in definition.container_definitions:
        image = container.get("image", "")
        entry = {"containerName": container.get("name"), "image": image}
        if _digest(image):
            entry["imageDigest"] = _digest(image)
        images.append(entry)
    arn = (f"arn:aws:ecs:{region}:{account}:service-revision/{service.cluster_name}/{service.name}/"
           f"{mock_random.randint(10**18, 10**19 - 1)}")
    revision = {
        "serviceRevisionArn": arn,
        "serviceArn": service.arn,
        "clusterArn": f"arn:aws:ecs:{region}:{account}:cluster/{service.cluster_name}",
        "taskDefinition": task_definition_arn,
        "launchType": service.launch_type or "FARGATE",
        "containerImages": images,
        "loadBalancers": copy.deepcopy(getattr(service, "load_balancers", None) or []),
        "createdAt": utcnow(),
    }
    REVISIONS[arn] = revision
    return revision


def _plan(conf: dict) -> list[tuple[str, int | None]]:
    """The stages in order, each with green's production weight once it is reached (None: unchanged)."""
    start = [("PRE_SCALE_UP", None), ("SCALE_UP", None), ("POST_SCALE_UP", None),
             ("TEST_TRAFFIC_SHIFT", None), ("POST_TEST_TRAFFIC_SHIFT", None)]
    end = [("POST_PRODUCTION_TRAFFIC_SHIFT", None), ("BAKE_TIME", None), ("CLEAN_UP", None)]
    kind = conf.get("strategy")
    if kind == "BLUE_GREEN":
        steps = [100]
    elif kind == "LINEAR":
        step = float((conf.get("linearConfiguration") or {}).get("stepPercent", 50.0))
        steps, weight = [], 0.0
        while weight < 100:
            weight = min(100.0, weight + step)
            steps.append(int(weight))
    else:
        canary = float((conf.get("canaryConfiguration") or {}).get("canaryPercent", 10.0))
        steps = [int(canary), 100]
    middle = []
    for weight in steps:
        if kind != "BLUE_GREEN":
            middle.append(("PRE_PRODUCTION_TRAFFIC_SHIFT", None))
        middle.append(("PRODUCTION_TRAFFIC_SHIFT", weight))
    return start + middle + end


def on_update(backend, service, previous: str, target: str, deployment_id: str) -> None:
    """`UpdateService` moved a native service from `previous` to `target` (called under the lock)."""
    region, account = _arn_parts(service)
    conf = copy.deepcopy(service.deployment_configuration)
    now = utcnow()
    # A deployment in flight is stopped by a newer one.
    for arn, run in list(RUNS.items()):
        if run["service_arn"] == service.arn:
            _finish(arn, "STOPPED", "a newer service deployment started")
    blue, green = _revision(backend, service, previous), _revision(backend, service, target)
    arn = (f"arn:aws:ecs:{region}:{account}:service-deployment/{service.cluster_name}/{service.name}/"
           f"{uuid.uuid4().hex[:21]}")
    count = service.desired_count
    # DescribeServices' `currentServiceDeployment` (moto serialises the attribute by its name).
    service.current_service_deployment = arn
    DEPLOYMENTS[arn] = {
        "serviceDeploymentArn": arn,
        "serviceArn": service.arn,
        "clusterArn": green["clusterArn"],
        "createdAt": now,
        "startedAt": now,
        "updatedAt": now,
        "sourceServiceRevisions": [{"arn": blue["serviceRevisionArn"], "requestedTaskCount": count,
                                    "runningTaskCount": count, "pendingTaskCount": 0}],
        "targetServiceRevision": {"arn": green["serviceRevisionArn"], "requestedTaskCount": count,
                                  "runningTaskCount": 0, "pendingTaskCount": count},
        "status": "IN_PROGRESS",
        "lifecycleStage": "RECONCILE_SERVICE",
        "deploymentConfiguration": conf,
    }
    RUNS[arn] = {
        "service_arn": service.arn, "region": region, "account": account, "cluster": service.cluster_name,
        "service": service.name, "deployment_id": deployment_id, "blue": blue["serviceRevisionArn"],
        "green": green["serviceRevisionArn"], "plan": _plan(conf), "index": -1, "due": 0.0,
        "test": 0, "production": 0, "hooks": [], "hook": None, "busy": False, "answer": None,
    }


def in_flight(service_arn: str) -> bool:
    """Whether a native deployment of the service is stepping (the autopilot leaves it alone)."""
    return any(run["service_arn"] == service_arn for run in RUNS.values())


def _seconds(run: dict, seconds: float) -> float:
    return seconds * float(_config(run["cluster"]).get("time_scale", 0.05))


def _weights(run: dict, green: int) -> dict:
    return {run["green"]: green, run["blue"]: 100 - green}


def _payload(arn: str, run: dict, stage: str, hook: dict) -> dict:
    return {
        "executionId": hook["execution_id"],
        "lifecycleStage": stage,
        "resourceArn": arn,
        "executionDetails": {
            "serviceArn": run["service_arn"],
            "targetServiceRevisionArn": run["green"],
            "testTrafficWeights": _weights(run, run["test"]),
            "productionTrafficWeights": _weights(run, run["production"]),
        },
        "hookDetails": hook["details"],
    }


def _enter(arn: str, run: dict, now: float) -> list[dict]:
    """Moves `run` to its next stage: its weights, then the hooks registered there (after the last
    stage: success, and its events)."""
    run["index"] += 1
    deployment = DEPLOYMENTS[arn]
    if run["index"] >= len(run["plan"]):
        return _finish(arn, "SUCCESSFUL", None)
    stage, weight = run["plan"][run["index"]]
    if stage == "TEST_TRAFFIC_SHIFT":
        run["test"] = 100
    if weight is not None:
        run["production"] = weight
        PEAKS[arn] = max(PEAKS.get(arn, 0), weight)
    if stage == "SCALE_UP":
        deployment["targetServiceRevision"].update(runningTaskCount=deployment["targetServiceRevision"]["requestedTaskCount"],
                                                   pendingTaskCount=0)
    # ECS's ServiceDeploymentLifecycleStage has no PRE_PRODUCTION_TRAFFIC_SHIFT (assumed reported as
    # PRODUCTION_TRAFFIC_SHIFT).
    deployment["lifecycleStage"] = "PRODUCTION_TRAFFIC_SHIFT" if stage == "PRE_PRODUCTION_TRAFFIC_SHIFT" else stage
    deployment["updatedAt"] = utcnow()
    hooks = [h for h in deployment["deploymentConfiguration"].get("lifecycleHooks") or []
             if stage in (h.get("lifecycleStages") or [])]
    run["hooks"] = [{"target": h.get("hookTargetArn", ""), "execution_id": str(uuid.uuid4()),
                     "type": h.get("targetType") or "AWS_LAMBDA", "stage": stage,
                     "timeout": h.get("timeoutConfiguration") or {},
                     "details": copy.deepcopy(h.get("hookDetails") or {})} for h in hooks]
    bake = float(deployment["deploymentConfiguration"].get("bakeTimeInMinutes") or 0) * 60
    stay = _seconds(run, bake) if stage == "BAKE_TIME" else float(_config(run["cluster"]).get("stage_seconds", 0.1))
    run["due"] = now + stay
    return []


def _finish(arn: str, status: str, reason: str | None) -> list[dict]:
    """Ends a deployment; returns the events of its `deployments` list (settled as ECS would)."""
    run = RUNS.pop(arn, None)
    deployment = DEPLOYMENTS[arn]
    deployment.update(status=status, updatedAt=utcnow(), finishedAt=utcnow())
    if reason:
        deployment["statusReason"] = reason
    if run is None or status == "STOPPED":
        return []
    body = {"cluster": run["cluster"], "service": run["service"], "region": run["region"], "account": run["account"],
            "deploymentId": run["deployment_id"]}
    try:
        if status == "SUCCESSFUL":
            return HOOKS["settle"](dict(body, outcome="COMPLETED"))
        return HOOKS["settle"](dict(body, outcome="FAILED", reason=reason, circuitBreakerRollback=True,
                                    stoppedTasks=0))
    except KeyError as error:  # the deployment is gone from the list (a newer one replaced it)
        print(f"ecs_native: {error}", file=sys.stderr)
        return []


def _roll_back(arn: str, run: dict, reason: str) -> list[dict]:
    deployment = DEPLOYMENTS[arn]
    run["test"] = run["production"] = 0
    deployment["rollback"] = {"reason": reason, "startedAt": utcnow(), "serviceRevisionArn": run["blue"]}
    deployment["status"] = "ROLLBACK_IN_PROGRESS"
    return _finish(arn, "ROLLBACK_SUCCESSFUL", reason)


def _apply(arn: str, run: dict, answer: dict | None, now: float) -> list[dict]:
    """A hook's answer (None: the function failed or answered no valid hookStatus)."""
    stage = run["plan"][run["index"]][0]
    hook = run["hooks"][0]
    status = (answer or {}).get("hookStatus")
    if status == "SUCCEEDED":
        run["hooks"].pop(0)
        return []
    if status == "IN_PROGRESS":
        details = answer.get("hookDetails")
        if isinstance(details, dict):
            hook["details"].update(details)
        delay = answer.get("callBackDelay", DEFAULT_CALL_BACK_SECONDS)
        run["due"] = now + _seconds(run, float(delay if isinstance(delay, (int, float)) else DEFAULT_CALL_BACK_SECONDS))
        return []
    why = f"hookStatus {status}" if status else "no valid hookStatus (the function failed or answered none)"
    reason = f"Service deployment rolled back: lifecycle hook {hook['target']} at {stage}: {why}."
    return _roll_back(arn, run, reason)


def tick(now: float) -> tuple[list[dict], list[tuple]]:
    """Advances every run (under the lock): returns the events to put, by bus, and the hooks to call
    (outside the lock)."""
    to_put, to_call = [], []
    for arn, run in list(RUNS.items()):
        if run["busy"]:
            continue
        events = []
        if run["answer"] is not None:
            answer, run["answer"] = run["answer"], None
            events = _apply(arn, run, answer[0], now)
        elif run["hooks"] and run["hooks"][0]["type"] == "PAUSE" and now >= run["due"]:
            events = _pause(arn, run, now)
            if events and events[0].get("detail-type") == HOOK_STATE_CHANGE:
                EVENTS.setdefault(run["service_arn"], []).extend(events)
                config = _config(run["cluster"])
                if config.get("bus"):
                    to_put.append({"bus": config["bus"], "region": config.get("bus_region", run["region"]),
                                   "events": events})
                continue
        elif now >= run["due"]:
            if run["hooks"]:
                config = _config(run["cluster"])
                stage = run["plan"][run["index"]][0]
                run["busy"] = True
                to_call.append((arn, config.get("lambda_url", ""), run["hooks"][0]["target"],
                                _payload(arn, run, stage, run["hooks"][0])))
            else:
                events = _enter(arn, run, now)
        if events:
            EVENTS.setdefault(run["service_arn"], []).extend(events)
            config = _config(run["cluster"])
            if config.get("bus"):
                to_put.append({"bus": config["bus"], "region": config.get("bus_region", run["region"]),
                               "events": events})
    return to_put, to_call


HOOK_STATE_CHANGE = "ECS Hook State Change"


def _pause(arn: str, run: dict, now: float) -> list[dict]:
    """A pause hook at the head of `run`'s hooks: starts awaiting action (an ECS Hook State Change
    event), or takes its timeout action when it expires; returns the events."""
    hook = run["hooks"][0]
    deployment = DEPLOYMENTS[arn]
    if "hook_id" not in hook:
        minutes = float(hook["timeout"].get("timeoutInMinutes") or 1440)
        hook.update(hook_id=f"ecs-pause-{uuid.uuid4().hex}", expires=now + _seconds(run, minutes * 60),
                    action=hook["timeout"].get("action") or "ROLLBACK")
        expires_at = utcnow() + dt.timedelta(seconds=_seconds(run, minutes * 60))
        deployment["lifecycleHookDetails"] = [{"hookId": hook["hook_id"], "targetType": "PAUSE",
                                               "status": "AWAITING_ACTION", "expiresAt": expires_at,
                                               "timeoutAction": hook["action"]}]
        return [_hook_event(arn, run, hook, expires_at)]
    if now < hook["expires"]:
        return []
    deployment["lifecycleHookDetails"][0]["status"] = "TIMED_OUT"
    return _answer_pause(arn, run, hook["action"], f"pause hook {hook['hook_id']} timed out")


def _answer_pause(arn: str, run: dict, action: str, why: str) -> list[dict]:
    run["hooks"].pop(0)
    if action == "ROLLBACK":
        return _roll_back(arn, run, f"Service deployment rolled back: {why} ({action}).")
    return []


def _hook_event(arn: str, run: dict, hook: dict, expires_at) -> dict:
    stamp = lambda at: at.replace(tzinfo=dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")  # noqa: E731
    return {
        "version": "0", "id": str(uuid.uuid4()), "detail-type": HOOK_STATE_CHANGE, "source": "aws.ecs",
        "account": run["account"], "time": stamp(utcnow()), "region": run["region"],
        "resources": [run["service_arn"]],
        "detail": {"eventName": "HOOK_AWAITING_ACTION", "serviceDeploymentArn": arn, "hookId": hook["hook_id"],
                   "targetType": "PAUSE", "lifecycleStage": hook["stage"], "expiresAt": stamp(expires_at)},
    }


def continue_service_deployment(self) -> ActionResult:
    arn = self._get_param("serviceDeploymentArn")
    hook_id = self._get_param("hookId")
    action = self._get_param("action") or "CONTINUE"
    with HOOKS["lock"]:
        run = RUNS.get(arn)
        hook = run["hooks"][0] if run and run["hooks"] else None
        if hook is None or hook["type"] != "PAUSE" or hook.get("hook_id") != hook_id:
            raise EcsClientException(f"Lifecycle hook {hook_id} of service deployment {arn} is not awaiting action.")
        DEPLOYMENTS[arn]["lifecycleHookDetails"][0]["status"] = "SUCCEEDED"
        events = _answer_pause(arn, run, action, f"pause hook {hook_id} answered")
        EVENTS.setdefault(DEPLOYMENTS[arn]["serviceArn"], []).extend(events)
        config = _config(arn.split("/")[1])
    if events and config.get("bus"):
        PENDING_PUTS.append({"bus": config["bus"], "region": config.get("bus_region", arn.split(":")[3]),
                             "events": events})
    return ActionResult({"serviceDeploymentArn": arn})


EVENTS: dict[str, list] = {}
# The most production traffic green ever had, by service deployment.
PEAKS: dict[str, int] = {}


def call_hook(arn: str, url: str, target: str, payload: dict) -> None:
    """Calls one hook (outside the lock) and leaves its answer for the next tick."""
    answer = None
    try:
        name = urllib.parse.quote(target, safe="")
        request = urllib.request.Request(f"{url}/2015-03-31/functions/{name}/invocations",
                                         data=json.dumps(payload).encode(), method="POST",
                                         headers={"content-type": "application/json"})
        with urllib.request.urlopen(request, timeout=120) as response:
            body = json.loads(response.read() or b"null")
            if not response.headers.get("X-Amz-Function-Error") and isinstance(body, dict):
                answer = body
    except Exception as error:  # a hook that cannot be called fails, as in ECS
        print(f"ecs_native: hook {target}: {error}", file=sys.stderr)
    with HOOKS["lock"]:
        run = RUNS.get(arn)
        if run is not None:
            run["busy"] = False
            run["answer"] = (answer,)


def stop(arn: str, stop_type: str) -> list[dict]:
    """`StopServiceDeployment`: ROLLBACK sends an in-flight deployment back to blue."""
    run = RUNS.get(arn)
    if arn not in DEPLOYMENTS:
        raise EcsClientException(f"Service deployment {arn} not found.")
    if run is None:
        raise EcsClientException(f"Service deployment {arn} is {DEPLOYMENTS[arn]['status']}: it cannot be stopped.")
    if stop_type == "ROLLBACK":
        return _roll_back(arn, run, "Service deployment rolled back because of a stop request.")
    return _finish(arn, "STOPPED", "Service deployment stopped by a stop request.")


def traffic(kind: str, cluster: str, service: str) -> tuple[int, dict]:
    """One request to the service's test (or production) listener: which revision answers, and how."""
    with HOOKS["lock"]:
        runs = [r for r in RUNS.values() if r["cluster"] == cluster and r["service"] == service]
        if runs:
            run = runs[-1]
            weight = run["test"] if kind == "test" else run["production"]
            chosen = run["green"] if random.uniform(0, 100) < weight else run["blue"]
        else:
            latest = [d for d in DEPLOYMENTS.values() if d["serviceArn"].endswith(f"/{cluster}/{service}")]
            if not latest:
                return 404, {"error": f"no native deployment of {cluster}/{service}"}
            last = latest[-1]
            chosen = (last["targetServiceRevision"]["arn"] if last["status"] == "SUCCESSFUL"
                      else last["sourceServiceRevisions"][0]["arn"])
        revision = REVISIONS[chosen]
        digests = {i.get("imageDigest") for i in revision["containerImages"]}
        unhealthy = digests & set(_config(cluster).get("unhealthy_digests", []))
    return (503 if unhealthy else 200), {"revision": chosen, "digests": sorted(d for d in digests if d)}


def state(body: dict) -> dict:
    """The service's native deployments, newest first, and the events they emitted."""
    with HOOKS["lock"]:
        suffix = f":service/{body['cluster']}/{body['service']}"
        deployments = [d for d in DEPLOYMENTS.values() if d["serviceArn"].endswith(suffix)]
        events = [e for arn, es in EVENTS.items() if arn.endswith(suffix) for e in es]
        traffic = {d["serviceDeploymentArn"]: {"production_peak": PEAKS.get(d["serviceDeploymentArn"], 0),
                                               **({"test": RUNS[d["serviceDeploymentArn"]]["test"],
                                                   "production": RUNS[d["serviceDeploymentArn"]]["production"]}
                                                  if d["serviceDeploymentArn"] in RUNS else {})}
                   for d in deployments}
    encode = lambda value: json.loads(json.dumps(value, default=str))  # noqa: E731
    return {"deployments": encode(list(reversed(deployments))), "events": encode(events), "traffic": traffic}


# --------------------------------------------------------------------------------------------
# The service-deployment APIs, dispatched by moto to these methods and serialised against the
# botocore model.
# --------------------------------------------------------------------------------------------


def _brief(deployment: dict) -> dict:
    keys = ("serviceDeploymentArn", "serviceArn", "clusterArn", "startedAt", "createdAt", "finishedAt", "status",
            "statusReason")
    brief = {k: deployment[k] for k in keys if k in deployment}
    brief["targetServiceRevisionArn"] = deployment["targetServiceRevision"]["arn"]
    return brief


def list_service_deployments(self) -> ActionResult:
    service = self._get_param("service")
    cluster = self._get_param("cluster", "default").split("/")[-1]
    statuses = self._get_param("status") or []
    with HOOKS["lock"]:
        found = [d for d in DEPLOYMENTS.values()
                 if d["serviceArn"].split(":")[3:5] == [self.region, self.current_account]
                 and d["serviceArn"].endswith(f"/{cluster}/{service.split('/')[-1]}")
                 and (not statuses or d["status"] in statuses)]
        briefs = [_brief(d) for d in reversed(found)]
    return ActionResult({"serviceDeployments": briefs})


def describe_service_deployments(self) -> ActionResult:
    arns = self._get_param("serviceDeploymentArns") or []
    with HOOKS["lock"]:
        found = [copy.deepcopy(DEPLOYMENTS[a]) for a in arns if a in DEPLOYMENTS]
    for deployment in found:
        deployment.pop("updatedAt", None)
    failures = [{"arn": a, "reason": "MISSING"} for a in arns if a not in DEPLOYMENTS]
    return ActionResult({"serviceDeployments": found, "failures": failures})


def describe_service_revisions(self) -> ActionResult:
    arns = self._get_param("serviceRevisionArns") or []
    with HOOKS["lock"]:
        found = [copy.deepcopy(REVISIONS[a]) for a in arns if a in REVISIONS]
    failures = [{"arn": a, "reason": "MISSING"} for a in arns if a not in REVISIONS]
    return ActionResult({"serviceRevisions": found, "failures": failures})


def stop_service_deployment(self) -> ActionResult:
    arn = self._get_param("serviceDeploymentArn")
    with HOOKS["lock"]:
        events = stop(arn, self._get_param("stopType") or "ROLLBACK")
        run_arn = DEPLOYMENTS[arn]["serviceArn"]
        EVENTS.setdefault(run_arn, []).extend(events)
        config = _config(arn.split("/")[1])
    if events and config.get("bus"):
        PENDING_PUTS.append({"bus": config["bus"], "region": config.get("bus_region", arn.split(":")[3]),
                             "events": events})
    return ActionResult({"serviceDeploymentArn": arn})


PENDING_PUTS: list[dict] = []

EC2ContainerServiceResponse.list_service_deployments = list_service_deployments
EC2ContainerServiceResponse.describe_service_deployments = describe_service_deployments
EC2ContainerServiceResponse.describe_service_revisions = describe_service_revisions
EC2ContainerServiceResponse.stop_service_deployment = stop_service_deployment
EC2ContainerServiceResponse.continue_service_deployment = continue_service_deployment


def step(now: float) -> tuple[list[dict], list[tuple]]:
    """The autopilot thread's tick (under the lock): events to put (with those of stop requests)
    and hooks to call."""
    to_put, to_call = tick(now)
    to_put.extend(PENDING_PUTS)
    PENDING_PUTS.clear()
    return to_put, to_call


def start_calls(to_call: list[tuple]) -> None:
    for arn, url, target, payload in to_call:
        threading.Thread(target=call_hook, args=(arn, url, target, payload), daemon=True).start()
