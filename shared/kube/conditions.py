"""Status conditions, the Kubernetes way, as pure functions over plain dicts.

A condition is `{"type", "status": "True"|"False"|"Unknown", "reason", "message",
"observedGeneration", "lastTransitionTime"}` (metav1.Condition). Two rules make them useful:

- `lastTransitionTime` moves only when `status` changes: a reason or message that changes
  while the status stays is an update, not a transition. A dashboard reads "False since
  10:02", and an Event is emitted only on a transition (`set_condition` says which happened).
- `observedGeneration` says which spec the condition is about, so a reader can tell a stale
  `Ready=True` (for the previous spec) from a current one.

A reconciler builds the status it wants from a copy of the live one, and writes only when
`status_differs(live, desired)`: an idle controller sends no requests.

Usage::

    status = copy.deepcopy(obj.get("status") or {})
    conditions = status.setdefault("conditions", [])
    if set_condition(conditions, "Available", "False", "BentoNotFound", "no Bento iris",
                     observed_generation=obj["metadata"]["generation"]):
        ...  # something changed
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

ConditionStatus = Literal["True", "False", "Unknown"]
_STATUSES = ("True", "False", "Unknown")


def format_time(now: dt.datetime) -> str:
    """A metav1.Time: RFC 3339 in UTC, whole seconds."""
    if now.tzinfo is None:
        raise ValueError("a timezone-aware datetime is required")
    return now.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def get_condition(
    conditions: Iterable[Mapping[str, Any]] | None, type_: str
) -> dict[str, Any] | None:
    for condition in conditions or ():
        if condition.get("type") == type_:
            return dict(condition)
    return None


def is_true(conditions: Iterable[Mapping[str, Any]] | None, type_: str) -> bool:
    condition = get_condition(conditions, type_)
    return condition is not None and condition.get("status") == "True"


def set_condition(
    conditions: list[dict[str, Any]],
    type_: str,
    status: ConditionStatus | bool,
    reason: str,
    message: str = "",
    observed_generation: int | None = None,
    *,
    now: dt.datetime | None = None,
) -> bool:
    """Set condition `type_` in `conditions` (in place); True when anything changed.

    `status` may be a bool. `lastTransitionTime` is set to `now` (default: the current time)
    for a new condition or a changed status, and kept otherwise.
    """
    if isinstance(status, bool):
        status = "True" if status else "False"
    if status not in _STATUSES:
        raise ValueError(f"condition status must be one of {_STATUSES}, not {status!r}")
    if not reason:
        raise ValueError("a condition needs a reason (a CamelCase word)")
    desired: dict[str, Any] = {"type": type_, "status": status, "reason": reason}
    desired["message"] = message
    if observed_generation is not None:
        desired["observedGeneration"] = observed_generation
    for index, current in enumerate(conditions):
        if current.get("type") != type_:
            continue
        if current.get("status") == status and current.get("lastTransitionTime"):
            desired["lastTransitionTime"] = current["lastTransitionTime"]
        else:
            desired["lastTransitionTime"] = format_time(now or dt.datetime.now(dt.UTC))
        if _normal(current) == _normal(desired):
            return False
        conditions[index] = desired
        return True
    desired["lastTransitionTime"] = format_time(now or dt.datetime.now(dt.UTC))
    conditions.append(desired)
    return True


def remove_condition(conditions: list[dict[str, Any]], type_: str) -> bool:
    """Drop condition `type_`; True when it was there."""
    before = len(conditions)
    conditions[:] = [c for c in conditions if c.get("type") != type_]
    return len(conditions) != before


def status_differs(live: Mapping[str, Any] | None, desired: Mapping[str, Any] | None) -> bool:
    """Whether writing `desired` as the whole `status` would change the live one.

    Conditions compare as a map by type (their order carries no meaning); absent fields,
    None and empty containers are alike, as the API server prunes them anyway.
    """
    return bool(_normal(live or {}) != _normal(desired or {}))


def _normal(value: Any) -> Any:
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            normal = _normal(item)
            if normal in (None, {}, []):
                continue
            if key == "conditions" and isinstance(normal, list):
                normal = _by_type(normal)
            out[key] = normal
        return out
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        return [_normal(item) for item in value]
    return value


def _by_type(conditions: list[Any]) -> Any:
    if all(isinstance(c, Mapping) and "type" in c for c in conditions):
        return {c["type"]: c for c in conditions}
    return conditions
