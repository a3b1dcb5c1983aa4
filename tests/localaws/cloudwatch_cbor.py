"""CloudWatch alarms for the Rust SDK, which speaks Smithy RPC v2 CBOR to CloudWatch: moto 5.2.5
serves CloudWatch only over the query protocol, and has no DescribeAlarmHistory (its alarms keep
their history, unread). This module answers the two calls Conveyor makes, from moto's own alarm
backend, as CloudWatch does; and lets tests create an alarm and move it between states.

What CloudWatch does that is kept: `DescribeAlarms` by `AlarmNames` (metric and composite alarms,
`StateUpdatedTimestamp`), `DescribeAlarmHistory` of one alarm (`StateUpdate` items newest first,
`StartDate`/`EndDate`, `HistoryData` JSON with `oldState`/`newState`), errors as Smithy RPC v2
errors (`__type`). Not kept: IAM's scoping (composite alarms are returned whatever the caller's
permission), and `AlarmTypes` (both kinds are always returned).
"""

from __future__ import annotations

import datetime as dt
import json
import re

import cbor2
from moto.cloudwatch.models import cloudwatch_backends
from moto.iam.models import get_account_id_from
from werkzeug.wrappers import Response

PATH = re.compile(r"^/service/GraniteServiceVersion20100801/operation/([A-Za-z]+)$")
_SCOPE = re.compile(r"Credential=([^/,\s]+)/\d{8}/([a-z0-9-]+)/")
UTC = dt.timezone.utc


def operation_of(path: str) -> str | None:
    match = PATH.match(path)
    return match.group(1) if match else None


def _answer(status: int, payload: dict) -> Response:
    body = cbor2.dumps(payload, datetime_as_timestamp=True, timezone=UTC)
    return Response(body, status=status, headers={"Content-Type": "application/cbor", "smithy-protocol": "rpc-v2-cbor"})


def error(status: int, code: str, message: str) -> Response:
    return _answer(status, {"__type": f"com.amazonaws.cloudwatch#{code}", "message": message})


def _backend(headers):
    scope = _SCOPE.search(headers.get("Authorization", ""))
    if not scope:
        return None
    key, region = scope.groups()
    return cloudwatch_backends[get_account_id_from(key)][region]


def _aware(moment: dt.datetime) -> dt.datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _states(alarm) -> list[tuple[str, str, dt.datetime]]:
    """The alarm's states in order, each with its reason and when it was entered (moto keeps each
    state left behind in `history`: value at index 3, its start at index 4)."""
    past = [(entry[3], entry[1], _aware(entry[4])) for entry in alarm.history if entry[0] == "StateUpdate"]
    return past + [(alarm.state_value, alarm.state_reason, _aware(alarm.state_updated_timestamp))]


def _reading(alarm) -> dict:
    return {
        "AlarmName": alarm.name,
        "AlarmArn": alarm.alarm_arn,
        "StateValue": alarm.state_value,
        "StateReason": alarm.state_reason,
        "StateUpdatedTimestamp": _aware(alarm.state_updated_timestamp),
        # moto moves its one timestamp on state changes only: the transition's time too.
        "StateTransitionedTimestamp": _aware(alarm.state_updated_timestamp),
    }


def _describe_alarms(backend, request: dict) -> Response:
    names = request.get("AlarmNames") or []
    alarms = backend.get_alarms_by_alarm_names(names) if names else list(backend.alarms.values())
    metric = [_reading(a) for a in alarms if a.rule is None]
    composite = [_reading(a) for a in alarms if a.rule is not None]
    return _answer(200, {"MetricAlarms": metric, "CompositeAlarms": composite})


def _describe_alarm_history(backend, request: dict) -> Response:
    name = request.get("AlarmName")
    alarm = backend.alarms.get(name) if name else None
    if alarm is None:
        return _answer(200, {"AlarmHistoryItems": []})
    wanted = request.get("HistoryItemType")
    if wanted not in (None, "StateUpdate"):
        return _answer(200, {"AlarmHistoryItems": []})
    start = request.get("StartDate") or dt.datetime.min.replace(tzinfo=UTC)
    end = request.get("EndDate") or dt.datetime.max.replace(tzinfo=UTC)
    states = _states(alarm)
    items = []
    for (old, _, _), (new, reason, at) in zip(states, states[1:]):
        if not start <= at <= end:
            continue
        data = {"version": "1.0", "oldState": {"stateValue": old}, "newState": {"stateValue": new, "stateReason": reason}}
        items.append({"AlarmName": alarm.name, "AlarmType": "MetricAlarm" if alarm.rule is None else "CompositeAlarm",
                      "Timestamp": at, "HistoryItemType": "StateUpdate",
                      "HistorySummary": f"Alarm updated from {old} to {new}", "HistoryData": json.dumps(data)})
    items.sort(key=lambda item: item["Timestamp"], reverse=request.get("ScanBy") != "TimestampAscending")
    return _answer(200, {"AlarmHistoryItems": items[: int(request.get("MaxRecords") or 100)]})


def serve(operation: str, headers, body: bytes) -> Response:
    backend = _backend(headers)
    if backend is None:
        return error(403, "MissingAuthenticationToken", "the request is not signed with SigV4")
    try:
        request = cbor2.loads(body) if body else {}
    except Exception as problem:  # a body that is not CBOR: what CloudWatch answers for it
        return error(400, "SerializationException", str(problem))
    if operation == "DescribeAlarms":
        return _describe_alarms(backend, request)
    if operation == "DescribeAlarmHistory":
        return _describe_alarm_history(backend, request)
    return error(400, "UnknownOperationException", f"{operation} is not served by the local CloudWatch")


def set_alarm(body: dict) -> dict:
    """Tests: creates the alarm `name` in `account`/`region` if needed, then sets its state."""
    backend = cloudwatch_backends[body.get("account", "123456789012")][body.get("region", "us-east-1")]
    name = body["name"]
    if name not in backend.alarms:
        backend.put_metric_alarm(
            name=name, namespace="Conveyor/Test", metric_name="Errors", comparison_operator="GreaterThanThreshold",
            evaluation_periods=1, period=60, threshold=1.0, statistic="Sum", description="", dimensions=[],
            alarm_actions=[])
    state = body.get("state")
    if state and state != backend.alarms[name].state_value:  # CloudWatch records transitions only
        backend.set_alarm_state(name, body.get("reason", f"set to {state} by a test"), "{}", state)
    return {"ok": True}
