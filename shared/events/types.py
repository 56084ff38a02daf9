"""One model per event type. `data` fields are what the consuming services need."""

from __future__ import annotations

import typing
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from shared.contracts.vocabulary import DeploymentStatus
from shared.events.envelope import Event


class _Data(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ArtifactRef(_Data):
    """A bento or model version: `<organization>/<name>:<version>`."""

    organization: str
    name: str
    version: str

    @property
    def tag(self) -> str:
        return f"{self.name}:{self.version}"


# --- registry --------------------------------------------------------------------------


class ArtifactPushedData(_Data):
    artifact: ArtifactRef
    size_bytes: int = Field(ge=0)
    sha256: str | None = None
    object_key: str = Field(description="Where the archive lives in the object store")
    bentoml_version: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    pushed_by: str | None = None


class BentoPushedData(ArtifactPushedData):
    services: list[str] = Field(default_factory=list, description="Service names in the bento")
    models: list[ArtifactRef] = Field(default_factory=list)


class BentoPushed(Event):
    """A bento version finished uploading and is ready to pull or build."""

    type: Literal["bento.pushed"] = "bento.pushed"
    data: BentoPushedData


class ModelPushed(Event):
    """A model version finished uploading and is ready to pull."""

    type: Literal["model.pushed"] = "model.pushed"
    data: ArtifactPushedData


class ArtifactDeletedData(_Data):
    artifact: ArtifactRef
    deleted_by: str | None = None


class BentoDeleted(Event):
    """A bento version (or, with version '*', a whole repository) was deleted."""

    type: Literal["bento.deleted"] = "bento.deleted"
    data: ArtifactDeletedData


class ModelDeleted(Event):
    """A model version (or, with version '*', a whole repository) was deleted."""

    type: Literal["model.deleted"] = "model.deleted"
    data: ArtifactDeletedData


# --- builder ---------------------------------------------------------------------------


class BuildRequestedData(_Data):
    build_id: str
    bento: ArtifactRef
    image_repository: str | None = Field(default=None, description="Override of the target")
    reason: Literal["bento.pushed", "manual", "deployment"] = "manual"
    requested_by: str | None = None
    cluster: str | None = Field(
        default=None, description="The cluster whose builder should act; None: any"
    )
    namespace: str | None = Field(
        default=None, description="Where the Bento is wanted; None: the builder's own"
    )
    force: bool = Field(default=False, description="Build even if the image exists")


class BuildRequested(Event):
    """Someone or something asked for an image of a bento version."""

    type: Literal["build.requested"] = "build.requested"
    data: BuildRequestedData


class BuildStartedData(_Data):
    build_id: str
    bento: ArtifactRef
    image: str
    attempt: int = Field(default=1, ge=1)


class BuildStarted(Event):
    """The builder started building an image."""

    type: Literal["build.started"] = "build.started"
    data: BuildStartedData


class BuildCompletedData(_Data):
    build_id: str
    bento: ArtifactRef
    image: str = Field(description="Image reference with its digest: repo@sha256:...")
    digest: str
    duration_seconds: float = Field(ge=0)


class BuildCompleted(Event):
    """An image was built and pushed; `image` pins it by digest."""

    type: Literal["build.completed"] = "build.completed"
    data: BuildCompletedData


class BuildFailedData(_Data):
    build_id: str
    bento: ArtifactRef
    reason: str = Field(description="Machine-readable reason, e.g. BentoNotFound, BuildError")
    message: str
    retriable: bool = False


class BuildFailed(Event):
    """A build ended without an image; `reason` says why."""

    type: Literal["build.failed"] = "build.failed"
    data: BuildFailedData


# --- deployer --------------------------------------------------------------------------


class DeploymentRef(_Data):
    organization: str
    cluster: str
    namespace: str
    name: str


class DeploymentSpecData(_Data):
    deployment: DeploymentRef
    bento: ArtifactRef
    revision: int = Field(ge=1)
    spec: dict[str, Any] = Field(description="The BentoDeployment spec of this revision")
    requested_by: str | None = None


class DeploymentRequested(Event):
    """A new deployment (revision 1) was asked for."""

    type: Literal["deployment.requested"] = "deployment.requested"
    data: DeploymentSpecData


class DeploymentUpdated(Event):
    """A deployment got a new revision."""

    type: Literal["deployment.updated"] = "deployment.updated"
    data: DeploymentSpecData


class DeploymentStoppedData(_Data):
    deployment: DeploymentRef
    by: str | None = None


class DeploymentTerminated(Event):
    """A deployment was scaled to nothing; its record and revisions remain."""

    type: Literal["deployment.terminated"] = "deployment.terminated"
    data: DeploymentStoppedData


class DeploymentDeleted(Event):
    """A deployment and its Kubernetes resources were removed."""

    type: Literal["deployment.deleted"] = "deployment.deleted"
    data: DeploymentStoppedData


class DeploymentStatusData(_Data):
    deployment: DeploymentRef
    status: DeploymentStatus
    previous_status: DeploymentStatus | None = None
    revision: int | None = None
    ready_replicas: int = Field(default=0, ge=0)
    desired_replicas: int = Field(default=0, ge=0)
    observed_generation: int | None = None
    reason: str | None = None
    message: str | None = None
    observed_at: datetime | None = None


class DeploymentStatusChanged(Event):
    """The observed state of a deployment changed (phase, replicas)."""

    type: Literal["deployment.status_changed"] = "deployment.status_changed"
    data: DeploymentStatusData


AnyEvent = Annotated[
    BentoPushed
    | ModelPushed
    | BentoDeleted
    | ModelDeleted
    | BuildRequested
    | BuildStarted
    | BuildCompleted
    | BuildFailed
    | DeploymentRequested
    | DeploymentUpdated
    | DeploymentTerminated
    | DeploymentDeleted
    | DeploymentStatusChanged,
    Field(discriminator="type"),
]

_ADAPTER: TypeAdapter[AnyEvent] = TypeAdapter(AnyEvent)

# Every event type, read off the union above: the one list of them.
EVENT_TYPES: dict[str, type[Event]] = {
    cls.event_type: cls for cls in typing.get_args(typing.get_args(AnyEvent)[0])
}


def decode_event(raw: bytes | str | dict[str, Any]) -> AnyEvent:
    """Any event from its JSON (or a dict), validated against its own type's model."""
    if isinstance(raw, dict):
        return _ADAPTER.validate_python(raw)
    return _ADAPTER.validate_json(raw)
