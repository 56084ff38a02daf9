"""JetStream streams: every lifecycle event in one stream, dead letters in another."""

from __future__ import annotations

from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import NotFoundError

from shared.events import DLQ_STREAM, DLQ_SUBJECT_PREFIX, EVENT_STREAM, EVENT_SUBJECT_PREFIX
from shared.settings import NatsSettings

_WEEK = 7 * 24 * 3600.0


def stream_configs(settings: NatsSettings) -> list[StreamConfig]:
    return [
        StreamConfig(
            name=EVENT_STREAM,
            description="Ekiben lifecycle events (CloudEvents 1.0 JSON)",
            subjects=[f"{EVENT_SUBJECT_PREFIX}.>"],
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            discard=DiscardPolicy.OLD,
            max_age=30 * 24 * 3600.0,
            duplicate_window=settings.duplicate_window_seconds,
        ),
        StreamConfig(
            name=DLQ_STREAM,
            description="Events a consumer gave up on after max_deliver attempts",
            subjects=[f"{DLQ_SUBJECT_PREFIX}.>"],
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            max_age=4 * _WEEK,
            duplicate_window=settings.duplicate_window_seconds,
        ),
    ]


async def ensure_streams(js: JetStreamContext, settings: NatsSettings) -> None:
    """Create the streams, or bring an existing one's configuration up to date.

    Safe to call from every replica at every start: add and update are idempotent.
    """
    for config in stream_configs(settings):
        try:
            await js.stream_info(config.name or "")
        except NotFoundError:
            await js.add_stream(config)
        else:
            await js.update_stream(config)
