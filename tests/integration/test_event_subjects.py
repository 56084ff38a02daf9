"""Every event type lands in the event stream, by the stream's real configuration.

The subjects are published to a real NATS server whose streams `ensure_streams` created
from the same settings the services use, so a type whose subject the stream does not
cover fails here (JetStream answers "no responders"), whatever the prefixes say.
"""

from __future__ import annotations

import nats
from nats.js.errors import NoStreamResponseError

from shared.bus import ensure_streams
from shared.events import DLQ_STREAM, EVENT_STREAM, EVENT_TYPES, dlq_subject_for, subject_for
from shared.settings import NatsSettings


async def test_every_event_type_and_dead_letter_subject_reaches_its_stream(nats_url: str) -> None:
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        await ensure_streams(js, NatsSettings(url=nats_url))
        for event_type in EVENT_TYPES:
            ack = await js.publish(subject_for(event_type), b"{}")
            assert ack.stream == EVENT_STREAM, event_type
            dead = await js.publish(dlq_subject_for("some-consumer", event_type), b"{}")
            assert dead.stream == DLQ_STREAM, event_type
        # And the check can fail: a subject outside both streams finds no stream.
        try:
            await js.publish("ekiben.other.bento.pushed", b"{}", timeout=1.0)
        except NoStreamResponseError:
            pass
        else:  # pragma: no cover - the assertion the test exists for
            raise AssertionError("a subject outside the streams was accepted")
    finally:
        await nc.close()
