"""The JSON answers of the bento and model routes, key for key what the bentoml client reads.

The client structures every answer strictly (cattrs): each field below without a default
is a key it requires (`bentoml/_internal/cloud/schemas/schemasv1.py`), `""` stands for "no
URL" (a `null` would become the string "None"), and a bento's or model's `name` is its
version. Bentos and models share one shape but name their repository fields after their
kind (`latest_bento`, `n_models`), hence one class per kind; `SCHEMAS` picks them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict

from services.gateway.schemas import LabelSchema, ResourceSchema
from shared.contracts import registry as reg

TransmissionStrategy = Literal["presigned_url", "proxy"]


class CreatorSchema(BaseModel):
    name: str


class ModelManifestSchema(BaseModel):
    """What the client needs of a model's manifest; the rest passes through as stored."""

    model_config = ConfigDict(extra="allow")

    module: str
    api_version: str
    bentoml_version: str
    size_bytes: int


class ArtifactVersionSchema(ResourceSchema):
    description: str
    version: str
    image_build_status: str
    upload_status: reg.UploadStatus
    upload_finished_reason: str
    presigned_upload_url: str
    presigned_download_url: str
    transmission_strategy: TransmissionStrategy
    upload_id: str | None
    upload_started_at: AwareDatetime | None
    upload_finished_at: AwareDatetime | None
    build_at: AwareDatetime
    size_bytes: int
    creator: CreatorSchema


class BentoSchema(ArtifactVersionSchema):
    resource_type: Literal["bento"] = "bento"
    manifest: dict[str, Any] | None


class ModelSchema(ArtifactVersionSchema):
    resource_type: Literal["model"] = "model"
    manifest: ModelManifestSchema


class _RepositorySchema(ResourceSchema):
    description: str
    creator: CreatorSchema


class BentoRepositorySchema(_RepositorySchema):
    resource_type: Literal["bento_repository"] = "bento_repository"
    latest_bento: BentoSchema | None
    n_bentos: int | None


class ModelRepositorySchema(_RepositorySchema):
    resource_type: Literal["model_repository"] = "model_repository"
    latest_model: ModelSchema | None
    n_models: int | None


class BentoWithRepositorySchema(BentoSchema):
    repository: BentoRepositorySchema


class ModelWithRepositorySchema(ModelSchema):
    repository: ModelRepositorySchema


class RepositoryDeletedSchema(BaseModel):
    name: str
    deleted_versions: int


class VersionDeletedSchema(RepositoryDeletedSchema):
    version: str


@dataclass(frozen=True)
class KindSchemas:
    """The answer classes of one kind: a version, a repository, a version with its repository."""

    version: type[BentoSchema] | type[ModelSchema]
    repository: type[BentoRepositorySchema] | type[ModelRepositorySchema]
    with_repository: type[BentoWithRepositorySchema] | type[ModelWithRepositorySchema]


SCHEMAS = {
    reg.Kind.BENTO: KindSchemas(BentoSchema, BentoRepositorySchema, BentoWithRepositorySchema),
    reg.Kind.MODEL: KindSchemas(ModelSchema, ModelRepositorySchema, ModelWithRepositorySchema),
}


# --- builders -------------------------------------------------------------------------------


def _labels(labels: list[reg.Label]) -> list[LabelSchema]:
    return [LabelSchema(key=label.key, value=label.value) for label in labels]


def _manifest(version: reg.Version) -> dict[str, Any] | None:
    if version.kind is reg.Kind.BENTO:
        return version.manifest
    # A model's manifest must be an object with these keys, or the client cannot decode it.
    manifest = dict(version.manifest or {})
    manifest.setdefault("module", "")
    manifest.setdefault("api_version", "")
    manifest.setdefault("bentoml_version", version.bentoml_version or "")
    manifest.setdefault("size_bytes", version.size_bytes)
    return manifest


def _version_fields(
    version: reg.Version, strategy: TransmissionStrategy, upload_url: str, download_url: str
) -> dict[str, Any]:
    return {
        "uid": version.uid,
        "created_at": version.created_at,
        "updated_at": version.updated_at,
        "deleted_at": None,
        "name": version.version,
        "labels": _labels(version.labels),
        "description": version.description,
        "version": version.version,
        "image_build_status": "pending",
        "upload_status": version.upload_status,
        "upload_finished_reason": version.upload_finished_reason,
        "presigned_upload_url": upload_url,
        "presigned_download_url": download_url,
        "manifest": _manifest(version),
        "transmission_strategy": strategy,
        "upload_id": version.upload_id,
        "upload_started_at": version.upload_started_at,
        "upload_finished_at": version.upload_finished_at,
        "build_at": version.build_at,
        "size_bytes": version.size_bytes,
        "creator": CreatorSchema(name=version.created_by or ""),
    }


def version_schema(
    version: reg.Version,
    strategy: TransmissionStrategy,
    *,
    upload_url: str = "",
    download_url: str = "",
) -> BentoSchema | ModelSchema:
    fields = _version_fields(version, strategy, upload_url, download_url)
    return SCHEMAS[version.kind].version.model_validate(fields)


def version_with_repository_schema(
    version: reg.Version, repository: reg.Repository, strategy: TransmissionStrategy
) -> BentoWithRepositorySchema | ModelWithRepositorySchema:
    fields = _version_fields(version, strategy, "", "")
    fields["repository"] = repository_schema(repository, strategy)
    return SCHEMAS[version.kind].with_repository.model_validate(fields)


def repository_schema(
    repository: reg.Repository, strategy: TransmissionStrategy
) -> BentoRepositorySchema | ModelRepositorySchema:
    kind = repository.kind.value
    latest = repository.latest
    return SCHEMAS[repository.kind].repository.model_validate(
        {
            "uid": repository.uid,
            "created_at": repository.created_at,
            "updated_at": repository.updated_at,
            "deleted_at": None,
            "name": repository.name,
            "labels": _labels(repository.labels),
            "description": repository.description,
            f"latest_{kind}": version_schema(latest, strategy) if latest else None,
            f"n_{kind}s": repository.n_versions,
            "creator": CreatorSchema(name=repository.created_by or ""),
        }
    )
