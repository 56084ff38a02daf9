"""The event backbone on FastStream's NATS broker.

- `streams`: the JetStream streams, created idempotently, with a de-duplication window.
- `broker`: one `NatsBroker` per process with tracing and metrics middlewares.
- `consumer`: durable pull consumers with explicit ack, bounded redelivery with backoff and
  a dead-letter subject for poison messages.
- `rpc`: typed request/reply for commands that need an answer (nats-py directly).
"""

from shared.bus.broker import create_broker
from shared.bus.consumer import Delivery, EventHandler, subscribe_events
from shared.bus.rpc import RpcClient, RpcServer
from shared.bus.streams import ensure_streams, stream_configs

__all__ = [
    "Delivery",
    "EventHandler",
    "RpcClient",
    "RpcServer",
    "create_broker",
    "ensure_streams",
    "stream_configs",
    "subscribe_events",
]
