"""shared.kube.conditions: transitions, observedGeneration, "would this write change anything"."""

from __future__ import annotations

import copy
import datetime as dt
from typing import Any

import pytest

from shared.kube.conditions import (
    get_condition,
    is_true,
    remove_condition,
    set_condition,
    status_differs,
)

T0 = dt.datetime(2025, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
T1 = T0 + dt.timedelta(minutes=5)


def test_a_new_condition_is_added_with_its_transition_time() -> None:
    conditions: list[dict[str, Any]] = []
    assert set_condition(conditions, "Ready", "False", "Pending", "waiting", 3, now=T0)
    assert conditions == [
        {
            "type": "Ready",
            "status": "False",
            "reason": "Pending",
            "message": "waiting",
            "observedGeneration": 3,
            "lastTransitionTime": "2025-01-02T03:04:05Z",
        }
    ]
    assert not is_true(conditions, "Ready")
    assert get_condition(conditions, "Missing") is None


def test_setting_the_same_condition_again_changes_nothing() -> None:
    conditions: list[dict[str, Any]] = []
    set_condition(conditions, "Ready", "True", "Available", "ok", 1, now=T0)
    before = copy.deepcopy(conditions)
    assert not set_condition(conditions, "Ready", "True", "Available", "ok", 1, now=T1)
    assert conditions == before


def test_a_new_message_with_the_same_status_keeps_the_transition_time() -> None:
    conditions: list[dict[str, Any]] = []
    set_condition(conditions, "Ready", "False", "Building", "step 1", 1, now=T0)
    assert set_condition(conditions, "Ready", "False", "Building", "step 2", 2, now=T1)
    ready = get_condition(conditions, "Ready")
    assert ready is not None
    assert ready["message"] == "step 2"
    assert ready["observedGeneration"] == 2
    assert ready["lastTransitionTime"] == "2025-01-02T03:04:05Z"


def test_a_status_change_moves_the_transition_time() -> None:
    conditions: list[dict[str, Any]] = []
    set_condition(conditions, "Ready", "False", "Building", "", 1, now=T0)
    assert set_condition(conditions, "Ready", True, "Built", "", 1, now=T1)
    assert is_true(conditions, "Ready")
    ready = get_condition(conditions, "Ready")
    assert ready is not None
    assert ready["lastTransitionTime"] == "2025-01-02T03:09:05Z"


def test_other_conditions_are_left_alone() -> None:
    conditions: list[dict[str, Any]] = []
    set_condition(conditions, "A", "True", "Yes", now=T0)
    set_condition(conditions, "B", "False", "No", now=T0)
    set_condition(conditions, "A", "False", "Nope", now=T1)
    assert [c["type"] for c in conditions] == ["A", "B"]
    assert get_condition(conditions, "B") == {
        "type": "B",
        "status": "False",
        "reason": "No",
        "message": "",
        "lastTransitionTime": "2025-01-02T03:04:05Z",
    }
    assert remove_condition(conditions, "A")
    assert not remove_condition(conditions, "A")
    assert [c["type"] for c in conditions] == ["B"]


def test_invalid_conditions_are_refused() -> None:
    with pytest.raises(ValueError, match="status"):
        set_condition([], "Ready", "Maybe", "Why")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="reason"):
        set_condition([], "Ready", "True", "")
    with pytest.raises(ValueError, match="timezone"):
        set_condition([], "Ready", "True", "Ok", now=dt.datetime(2025, 1, 1))  # noqa: DTZ001


def test_status_differs_ignores_order_and_empty_fields() -> None:
    live = {
        "phase": "Building",
        "conditions": [
            {"type": "A", "status": "True", "reason": "X"},
            {"type": "B", "status": "False", "reason": "Y"},
        ],
    }
    same: dict[str, Any] = {
        "conditions": [
            {"type": "B", "status": "False", "reason": "Y"},
            {"type": "A", "status": "True", "reason": "X", "message": None},
        ],
        "phase": "Building",
        "image": None,
        "extra": {},
    }
    assert not status_differs(live, same)
    assert not status_differs(None, {})
    assert status_differs(live, {**same, "phase": "Succeeded"})
    changed = copy.deepcopy(same)
    changed["conditions"][0]["status"] = "True"
    assert status_differs(live, changed)


def test_a_reconciler_that_recomputes_the_same_status_writes_nothing() -> None:
    live: dict[str, Any] = {"observedGeneration": 4, "conditions": []}
    set_condition(live["conditions"], "Ready", "True", "Available", "ok", 4, now=T0)
    desired = copy.deepcopy(live)
    # A later pass computes the same facts at a later time.
    changed = set_condition(desired["conditions"], "Ready", "True", "Available", "ok", 4, now=T1)
    assert not changed
    assert not status_differs(live, desired)
