"""The event contract: every fact one service tells the others, as CloudEvents 1.0.

An event is an envelope (`id` made by the producer, `source`, `type`, `specversion`,
`time`, `subject`) around typed `data`. Each event type is one pydantic model whose `type`
is a `Literal`, so decoding goes through a single discriminated union (`decode_event`).
The NATS subject is derived from the type (`subject_for`), never typed at a call site.

Change events additively: a new optional field is fine; a removed or renamed field is a new
type (`bento.pushed.v2`). The AsyncAPI document in `docs/asyncapi.json` is exported from
these models and a test fails when they disagree.
"""

from shared.events.envelope import (
    DLQ_STREAM,
    DLQ_SUBJECT_PREFIX,
    EVENT_STREAM,
    EVENT_SUBJECT_PREFIX,
    Event,
    dlq_subject_for,
    subject_for,
)
from shared.events.organization import (
    ORGANIZATION_FIELD,
    NoOrganizationError,
    organization_of,
)
from shared.events.types import (
    EVENT_TYPES,
    AnyEvent,
    ArtifactRef,
    BentoDeleted,
    BentoPushed,
    BuildCompleted,
    BuildFailed,
    BuildRequested,
    BuildStarted,
    DeploymentDeleted,
    DeploymentRequested,
    DeploymentStatusChanged,
    DeploymentTerminated,
    DeploymentUpdated,
    ModelDeleted,
    ModelPushed,
    decode_event,
)

__all__ = [
    "DLQ_STREAM",
    "DLQ_SUBJECT_PREFIX",
    "EVENT_STREAM",
    "EVENT_SUBJECT_PREFIX",
    "EVENT_TYPES",
    "ORGANIZATION_FIELD",
    "AnyEvent",
    "ArtifactRef",
    "BentoDeleted",
    "BentoPushed",
    "BuildCompleted",
    "BuildFailed",
    "BuildRequested",
    "BuildStarted",
    "DeploymentDeleted",
    "DeploymentRequested",
    "DeploymentStatusChanged",
    "DeploymentTerminated",
    "DeploymentUpdated",
    "Event",
    "ModelDeleted",
    "ModelPushed",
    "NoOrganizationError",
    "decode_event",
    "dlq_subject_for",
    "organization_of",
    "subject_for",
]
