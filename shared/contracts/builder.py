"""What the builder and its neighbours agree on: resource names, labels, and its commands.

A bento version of an organization is built into an image and published on a cluster as a
`Bento` (resources.ekiben.dev) of a fixed name, the same name as the `BentoRequest` that
produced it. The deployer finds the image of `bento name:version` by that name in the
deployment's namespace (`bento_resource_name`); when it is missing, it asks for a build with
`build.requested` (carrying cluster and namespace) and waits for the Bento to appear.

The builder's request/reply commands (request, get and list builds, read a build's logs)
are at the end.
"""

from __future__ import annotations

import hashlib
import re
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from shared.contracts.command import Command
from shared.contracts.vocabulary import BuildStatus
from shared.text import StorableText

SERVICE = "builder"

# Labels on BentoRequests, Bentos and build Jobs (values are tag parts: valid label values).
ORGANIZATION_LABEL = "ekiben.dev/organization"
BENTO_NAME_LABEL = "ekiben.dev/bento-name"
BENTO_VERSION_LABEL = "ekiben.dev/bento-version"
# On a BentoRequest: the build that produced it (annotation), and a rebuild request: any new
# value (a timestamp) asks for a forced rebuild of the same spec.
BUILD_ID_ANNOTATION = "ekiben.dev/build-id"
REBUILD_ANNOTATION = "ekiben.dev/rebuild"

_NOT_DNS = re.compile(r"[^a-z0-9-]+")
MAX_NAME = 63


def bento_resource_name(organization: str, name: str, version: str) -> str:
    """The name of the BentoRequest and Bento of `organization`'s `name:version`.

    A DNS label (the CRDs allow 63 characters): lowercase, `[a-z0-9-]`, starting and ending
    with an alphanumeric. Tags that are already such labels read as `org-name-version`;
    anything that had to be changed or shortened ends in a hash of the exact input, so two
    different tags never share a name.
    """
    readable = f"{organization}-{name}-{version}"
    cleaned = _NOT_DNS.sub("-", readable.lower()).strip("-")
    if cleaned == readable and len(cleaned) <= MAX_NAME:
        return cleaned
    digest = hashlib.sha256(f"{organization}/{name}:{version}".encode()).hexdigest()[:10]
    head = cleaned[: MAX_NAME - len(digest) - 1].rstrip("-")
    return f"{head}-{digest}" if head else f"b-{digest}"


# --- the builder's commands ------------------------------------------------------------
#
# A build is one attempt at an image of `organization`'s `bento_name:bento_version` under a
# content-derived tag (`image_tag`). `image` is `repository@sha256:...` once pushed. Logs
# are kept by the builder (its own database) and read in pages by sequence number.

MAX_LOG_PAGE = 1000


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Request(StorableText, _Model):
    """A command's request: strict, with text PostgreSQL can store."""


class Build(_Model):
    id: str
    organization: str
    bento_name: str
    bento_version: str
    status: BuildStatus
    trigger: Literal["push", "manual", "deployment"]
    reason: str | None = None
    message: str | None = None
    image_repository: str = Field(description="HOST/PREFIX/name, without tag")
    image_tag: str = Field(description="Derived from the bento's content and build settings")
    image: str | None = Field(default=None, description="repository@sha256:..., once pushed")
    digest: str | None = None
    attempts: int = 0
    force: bool = False
    backend: str
    namespace: str
    requested_by: str | None = None
    log_lines: int = 0
    log_tail: list[str] = Field(default_factory=list)
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    updated_at: datetime | None = None

    @property
    def bento(self) -> str:
        return f"{self.bento_name}:{self.bento_version}"

    @property
    def target(self) -> str:
        """`repository:tag`: where the image is pushed."""
        return f"{self.image_repository}:{self.image_tag}"


class RequestBuild(_Request):
    organization: str = Field(min_length=1)
    bento_name: str = Field(min_length=1, max_length=63)
    bento_version: str = Field(min_length=1, max_length=63)
    force: bool = False
    trigger: Literal["push", "manual", "deployment"] = "manual"
    requested_by: str | None = None
    namespace: str | None = None


class GetBuild(_Request):
    organization: str = Field(min_length=1)
    id: str = Field(min_length=1, max_length=64)


class ListBuilds(_Request):
    organization: str = Field(min_length=1)
    bento_name: str | None = None
    bento_version: str | None = None
    status: BuildStatus | None = None
    start: int = Field(default=0, ge=0)
    count: int = Field(default=20, ge=1, le=1000)


class BuildPage(_Model):
    total: int
    items: list[Build]


class ReadLogs(_Request):
    organization: str = Field(min_length=1)
    id: str = Field(min_length=1, max_length=64)
    after: int = Field(default=0, ge=0, description="Lines with a sequence number above this")
    limit: int = Field(default=MAX_LOG_PAGE, ge=1, le=MAX_LOG_PAGE)


class LogLine(_Model):
    seq: int
    line: str


class BuildLogs(_Model):
    build: Build
    lines: list[LogLine]
    # Whether the build has finished: no line will follow the last one.
    finished: bool


REQUEST_BUILD = Command(SERVICE, "build.request", RequestBuild, Build)
GET_BUILD = Command(SERVICE, "build.get", GetBuild, Build)
LIST_BUILDS = Command(SERVICE, "build.list", ListBuilds, BuildPage)
READ_LOGS = Command(SERVICE, "build.logs", ReadLogs, BuildLogs)
COMMANDS = (REQUEST_BUILD, GET_BUILD, LIST_BUILDS, READ_LOGS)
