"""Commands the registry answers: repositories, versions, uploads and downloads.

The gateway translates the Yatai-compatible HTTP API into these. Bytes never travel over
NATS: the registry answers with presigned S3 URLs that the client (presigned transfers)
or the gateway (proxied, streamed transfers) uses directly.

Artifacts are bentos or models (`kind`); both share one shape. A name and a version follow
BentoML's tag rules: lowercase `[a-z0-9]([-._a-z0-9]*[a-z0-9])?`, at most 63 characters.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from shared.contracts.command import Command
from shared.text import StorableText

SERVICE = "registry"

TAG_PART = re.compile(r"^[a-z0-9]([-._a-z0-9]*[a-z0-9])?$")
MAX_MANIFEST_BYTES = 4 * 1024 * 1024
MAX_DESCRIPTION_CHARS = 3 * 1024 * 1024 + 1024
MAX_LABELS = 64
MULTIPART_MAX_PARTS = 10_000


def _tag_part(value: str) -> str:
    if len(value) > 63 or not TAG_PART.match(value):
        raise ValueError(
            f"{value!r} is not a valid name or version: lowercase letters, digits, '-', '.' "
            "and '_', starting and ending with a letter or digit, at most 63 characters"
        )
    return value


TagPart = Annotated[str, AfterValidator(_tag_part)]


class Kind(enum.StrEnum):
    BENTO = "bento"
    MODEL = "model"


class UploadStatus(enum.StrEnum):
    PENDING = "pending"
    UPLOADING = "uploading"
    SUCCESS = "success"
    FAILED = "failed"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Command(StorableText, _Model):
    """A command's request: strict, and holding only text PostgreSQL can store, anywhere
    in it (checked once, over the whole request, parts such as `Label` included).

    Replies are plain `_Model`s: they come from the registry's database, which cannot hold
    such text, and a check on every nested model of a page of versions would cost ten
    times its validation.
    """


class Label(_Model):
    key: str = Field(min_length=1, max_length=255)
    value: str = Field(max_length=1024)


def labels_to_dict(labels: Iterable[Label]) -> dict[str, str]:
    """Labels as the services store them, a JSON object; a repeated key keeps its last value."""
    return {label.key: label.value for label in labels}


def labels_from_dict(stored: Mapping[str, str] | None) -> list[Label]:
    """Stored labels back as a list sorted by key."""
    return [Label(key=k, value=v) for k, v in sorted((stored or {}).items())]


# --- what the registry returns -----------------------------------------------------------


class Repository(_Model):
    uid: str
    kind: Kind
    organization: str
    name: str
    description: str
    labels: list[Label]
    created_by: str | None
    created_at: datetime
    updated_at: datetime | None
    # Both None when not computed (a repository embedded in a version answer).
    n_versions: int | None = None
    latest: Version | None = None


class Version(_Model):
    uid: str
    kind: Kind
    organization: str
    repository: str
    version: str
    description: str
    manifest: dict[str, Any] | None
    labels: list[Label]
    size_bytes: int
    bentoml_version: str | None
    build_at: datetime
    created_by: str | None
    created_at: datetime
    updated_at: datetime | None
    upload_status: UploadStatus
    upload_started_at: datetime | None
    upload_finished_at: datetime | None
    upload_finished_reason: str
    upload_id: str | None = None
    # Of the stored archive, when the uploader computed it (proxied uploads).
    sha256: str | None = None
    # Models referenced by a bento's manifest, as "name:version".
    models: list[str] = Field(default_factory=list)
    # The repository it belongs to, when asked for (`GetVersion.include_repository`).
    repository_detail: Repository | None = None


T = TypeVar("T")


class Page(_Model, Generic[T]):
    start: int
    count: int
    total: int
    items: list[T]


# --- commands ----------------------------------------------------------------------------


class Scope(_Model):
    """Who asks, and in which organization: every command carries one."""

    organization: str = Field(min_length=1)
    actor: str | None = None


class RepositoryRef(_Command):
    scope: Scope
    kind: Kind
    name: TagPart


class VersionRef(_Command):
    scope: Scope
    kind: Kind
    repository: TagPart
    version: TagPart


class PresignDownload(VersionRef):
    # Sooner than the registry's own expiry (a URL handed to a build Job); never later.
    expires_seconds: int | None = Field(default=None, ge=1)


class GetVersion(VersionRef):
    # Also return the repository (without its counts): one round trip instead of two.
    include_repository: bool = False


class CreateRepository(RepositoryRef):
    description: str = Field(default="", max_length=MAX_DESCRIPTION_CHARS)
    labels: list[Label] = Field(default_factory=list, max_length=MAX_LABELS)


class UpdateRepository(RepositoryRef):
    description: str | None = Field(default=None, max_length=MAX_DESCRIPTION_CHARS)
    labels: list[Label] | None = Field(default=None, max_length=MAX_LABELS)


SortKey = Literal["created_at", "build_at", "size", "name", "version"]


class ListFilter(_Command):
    """Filters shared by repository and version listings."""

    scope: Scope
    kind: Kind
    search: str | None = Field(default=None, max_length=255)  # substring of name/version
    labels: list[Label] = Field(default_factory=list)  # all must match
    creator: str | None = None
    upload_status: UploadStatus | None = None
    # Bentos only: those whose manifest uses this model version (`name:version`).
    uses_model: str | None = Field(default=None, max_length=127, pattern=r"^[^:\s]+:[^:\s]+$")
    sort: SortKey = "created_at"
    descending: bool = True
    start: int = Field(default=0, ge=0)
    count: int = Field(default=20, ge=1, le=1000)


class ListRepositories(ListFilter):
    pass


class ListVersions(ListFilter):
    repository: TagPart | None = None  # None: across every repository of the kind
    # Each item also carries its repository (with that repository's latest version).
    include_repository: bool = False


class CreateVersion(VersionRef):
    description: str = Field(default="", max_length=MAX_DESCRIPTION_CHARS)
    manifest: dict[str, Any] | None = None
    labels: list[Label] = Field(default_factory=list, max_length=MAX_LABELS)
    build_at: datetime | None = None


class UpdateVersion(VersionRef):
    description: str | None = Field(default=None, max_length=MAX_DESCRIPTION_CHARS)
    manifest: dict[str, Any] | None = None
    labels: list[Label] | None = Field(default=None, max_length=MAX_LABELS)


class PresignPart(VersionRef):
    upload_id: str = Field(min_length=1)
    part_number: int = Field(ge=1, le=MULTIPART_MAX_PARTS)


class CompletedPart(_Model):
    part_number: int = Field(ge=1, le=MULTIPART_MAX_PARTS)
    etag: str = Field(min_length=1)


class CompleteMultipart(VersionRef):
    upload_id: str = Field(min_length=1)
    parts: list[CompletedPart] = Field(min_length=1, max_length=MULTIPART_MAX_PARTS)


class FinishUpload(VersionRef):
    status: Literal["success", "failed"]
    reason: str = Field(default="", max_length=4096)
    # Set by the gateway after a proxied upload: the byte count it streamed and their hash.
    expected_size: int | None = Field(default=None, ge=0)
    sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")


class PresignedUrl(_Model):
    url: str
    expires_at: datetime
    version: Version


class DeleteResult(_Model):
    deleted_versions: int


Repository.model_rebuild()
Version.model_rebuild()

# The commands the registry answers (`ekiben.rpc.registry.<name>`).
GET_REPOSITORY = Command(SERVICE, "repository.get", RepositoryRef, Repository)
CREATE_REPOSITORY = Command(SERVICE, "repository.create", CreateRepository, Repository)
UPDATE_REPOSITORY = Command(SERVICE, "repository.update", UpdateRepository, Repository)
LIST_REPOSITORIES = Command(SERVICE, "repository.list", ListRepositories, Page[Repository])
DELETE_REPOSITORY = Command(SERVICE, "repository.delete", RepositoryRef, DeleteResult)
GET_VERSION = Command(SERVICE, "version.get", GetVersion, Version)
CREATE_VERSION = Command(SERVICE, "version.create", CreateVersion, Version)
UPDATE_VERSION = Command(SERVICE, "version.update", UpdateVersion, Version)
LIST_VERSIONS = Command(SERVICE, "version.list", ListVersions, Page[Version])
DELETE_VERSION = Command(SERVICE, "version.delete", VersionRef, DeleteResult)
START_UPLOAD = Command(SERVICE, "upload.start", VersionRef, Version)
PRESIGN_UPLOAD = Command(SERVICE, "upload.presign", VersionRef, PresignedUrl)
# A URL for the gateway to stream a proxied upload to: only while an upload is in progress.
PRESIGN_PROXY_UPLOAD = Command(SERVICE, "upload.presign_proxy", VersionRef, PresignedUrl)
START_MULTIPART = Command(SERVICE, "upload.multipart.start", VersionRef, Version)
PRESIGN_PART = Command(SERVICE, "upload.multipart.presign_part", PresignPart, PresignedUrl)
COMPLETE_MULTIPART = Command(SERVICE, "upload.multipart.complete", CompleteMultipart, Version)
FINISH_UPLOAD = Command(SERVICE, "upload.finish", FinishUpload, Version)
PRESIGN_DOWNLOAD = Command(SERVICE, "download.presign", PresignDownload, PresignedUrl)

COMMANDS: tuple[Command[Any, Any], ...] = (
    GET_REPOSITORY,
    CREATE_REPOSITORY,
    UPDATE_REPOSITORY,
    LIST_REPOSITORIES,
    DELETE_REPOSITORY,
    GET_VERSION,
    CREATE_VERSION,
    UPDATE_VERSION,
    LIST_VERSIONS,
    DELETE_VERSION,
    START_UPLOAD,
    PRESIGN_UPLOAD,
    PRESIGN_PROXY_UPLOAD,
    START_MULTIPART,
    PRESIGN_PART,
    COMPLETE_MULTIPART,
    FINISH_UPLOAD,
    PRESIGN_DOWNLOAD,
)
