"""The event contract: types, subjects, decoding, and the committed AsyncAPI document."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from shared.events import EVENT_TYPES, BentoPushed, decode_event
from shared.events.asyncapi import asyncapi_document

ROOT = Path(__file__).parents[2]
REQUIRED = {
    "bento.pushed", "model.pushed", "bento.deleted", "model.deleted", "build.requested",
    "build.started", "build.completed", "build.failed", "deployment.requested",
    "deployment.updated", "deployment.terminated", "deployment.deleted",
    "deployment.status_changed",
}  # fmt: skip


def test_every_event_type_is_defined() -> None:
    # That each lands in its stream is checked against a real server:
    # tests/integration/test_event_subjects.py.
    assert set(EVENT_TYPES) >= REQUIRED


def test_decoding_picks_the_model_by_type_and_validates_data() -> None:
    event = BentoPushed(
        source="/ekiben/registry",
        data={
            "artifact": {"organization": "o", "name": "iris", "version": "v1"},
            "size_bytes": 1,
            "object_key": "k",
        },
    )
    assert decode_event(event.model_dump_json()) == event
    assert event.specversion == "1.0"
    assert event.nats_subject == "ekiben.events.bento.pushed"
    broken = json.loads(event.model_dump_json())
    broken["data"]["size_bytes"] = -1
    with pytest.raises(ValidationError):
        decode_event(broken)
    broken = json.loads(event.model_dump_json()) | {"type": "bento.exploded"}
    with pytest.raises(ValidationError):
        decode_event(broken)


def test_event_ids_are_unique_and_time_ordered() -> None:
    ids = [BentoPushed.model_fields["id"].default_factory() for _ in range(1000)]  # type: ignore[call-arg,misc]
    assert len(set(ids)) == 1000
    assert ids == sorted(ids) or [i[:13] for i in ids] == sorted(i[:13] for i in ids)


def test_committed_asyncapi_document_matches_the_code() -> None:
    committed = json.loads((ROOT / "docs" / "asyncapi.json").read_text())
    assert committed == asyncapi_document(), (
        "docs/asyncapi.json is stale: run `ekiben events asyncapi > docs/asyncapi.json`"
    )
    channels = committed["channels"]
    assert set(channels) >= REQUIRED
    assert channels["bento.pushed"]["address"] == "ekiben.events.bento.pushed"
