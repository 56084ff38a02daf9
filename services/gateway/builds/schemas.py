"""What the builds API answers (the builder's `Build`, shaped for people and scripts)."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator

from shared.contracts.builder import Build
from shared.contracts.registry import TAG_PART
from shared.contracts.vocabulary import BuildStatus
from shared.text import StorableText

_PART = TAG_PART.pattern[1:-1]
_TAG = re.compile(rf"^(?P<name>{_PART}):(?P<version>{_PART})$")


def parse_bento_tag(value: str) -> tuple[str, str]:
    """`name:version` (BentoML's tag rules); ValueError saying what is wrong."""
    match = _TAG.match(value)
    if match is None or len(match["name"]) > 63 or len(match["version"]) > 63:
        raise ValueError(
            f"{value[:140]!r} is not a bento tag: give name:version, lowercase letters, digits, "
            "'-', '.' and '_', each part at most 63 characters"
        )
    return match["name"], match["version"]


class RequestBuildBody(StorableText):
    model_config = ConfigDict(extra="forbid")

    bento: str = Field(max_length=128, description="The bento to build, `name:version`.")
    force: bool = Field(default=False, description="Build even if the image exists.")

    @field_validator("bento")
    @classmethod
    def _tag(cls, value: str) -> str:
        parse_bento_tag(value)
        return value


class BuildSchema(BaseModel):
    id: str
    bento: str
    status: BuildStatus
    reason: str | None
    message: str | None
    image: str | None = Field(description="repository@sha256:... once built")
    target: str = Field(description="repository:tag the image is pushed to")
    trigger: Literal["push", "manual", "deployment"]
    attempts: int
    force: bool
    backend: str
    namespace: str
    requested_by: str | None
    log_tail: list[str]
    created_at: AwareDatetime
    started_at: AwareDatetime | None
    finished_at: AwareDatetime | None


def build_schema(build: Build) -> BuildSchema:
    return BuildSchema(
        id=build.id,
        bento=build.bento,
        status=build.status,
        reason=build.reason,
        message=build.message,
        image=build.image,
        target=build.target,
        trigger=build.trigger,
        attempts=build.attempts,
        force=build.force,
        backend=build.backend,
        namespace=build.namespace,
        requested_by=build.requested_by,
        log_tail=build.log_tail,
        created_at=build.created_at,
        started_at=build.started_at,
        finished_at=build.finished_at,
    )
