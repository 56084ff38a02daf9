"""The transactional outbox and idempotent consumption.

Write side: `write_event(conn, event)` inside the transaction that changes state. If the
transaction rolls back, the event never existed; if it commits, the relay publishes it.

Relay: `OutboxRelay` publishes unpublished rows in order with `Nats-Msg-Id` = event id,
then stamps them. A NOTIFY from the insert trigger wakes it at once; a slow safety poll
covers a missed notification. Several relays may run (one per replica): an advisory lock
lets one drain at a time, which keeps the publish order, and another takes over the moment
a holder's connection dies. A relay killed after publishing but before stamping publishes
the row again on restart; JetStream's duplicate window drops the copy.

Read side: `processed_once(conn, consumer, event_id)` in the consumer's transaction
records the event id; it returns False for a redelivery, which the handler then skips.
`processed_first_time` does the same for a batch of events in one round trip.
"""

from shared.outbox.relay import OutboxRelay
from shared.outbox.store import processed_first_time, processed_once, write_event, write_events

__all__ = ["OutboxRelay", "processed_first_time", "processed_once", "write_event", "write_events"]
