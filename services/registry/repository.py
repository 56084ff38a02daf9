"""The registry's SQL: repositories, versions, bento->model links, queued blob deletions.

Every function takes a connection (or the pool) from the caller, who owns the transaction.
Rows leave as typed values (`RepositoryRow`, `VersionRow`: what is stored, internal keys
included), which turn into contract models with `.contract()`; the service never sees a
column name or a driver record. Labels are stored as a JSON object (`{"key": "value"}`,
one value per key) so that a label filter is a GIN-indexed containment test; they come
back as a list sorted by key.

List queries are built from fixed fragments: a filter adds a condition and a bind
parameter, a sort key picks an ORDER BY from a whitelist, so no caller text reaches SQL.
Names sort bytewise (`COLLATE "C"`), the same in every database locale.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Literal

import asyncpg

from shared.contracts.registry import (
    Kind,
    ListFilter,
    Repository,
    UploadStatus,
    Version,
    labels_from_dict,
    labels_to_dict,
)
from shared.db import Connection, Pool

Db = Connection | Pool

# --- rows ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class RepositoryRow:
    """A repository as stored; `id` is the internal key and never leaves the registry."""

    id: int
    uid: str
    kind: Kind
    organization: str
    name: str
    description: str
    labels: dict[str, str]
    created_by: str | None
    created_at: datetime
    updated_at: datetime | None

    def contract(
        self, *, n_versions: int | None = None, latest: VersionRow | None = None
    ) -> Repository:
        return Repository(
            uid=self.uid,
            kind=self.kind,
            organization=self.organization,
            name=self.name,
            description=self.description,
            labels=labels_from_dict(self.labels),
            created_by=self.created_by,
            created_at=self.created_at,
            updated_at=self.updated_at,
            n_versions=n_versions,
            latest=latest.contract() if latest is not None else None,
        )


@dataclass(frozen=True)
class VersionRow:
    """A version as stored, with the models its manifest names and, when joined, its
    repository."""

    id: int
    uid: str
    repository_id: int
    kind: Kind
    organization: str
    repository: str
    version: str
    description: str
    manifest: dict[str, Any] | None
    labels: dict[str, str]
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
    upload_id: str | None
    object_key: str
    sha256: str | None
    models: tuple[str, ...]
    repository_row: RepositoryRow | None = None

    @property
    def tag(self) -> str:
        return f"{self.repository}:{self.version}"

    def contract(self) -> Version:
        return Version(
            uid=self.uid,
            kind=self.kind,
            organization=self.organization,
            repository=self.repository,
            version=self.version,
            description=self.description,
            manifest=self.manifest,
            labels=labels_from_dict(self.labels),
            size_bytes=self.size_bytes,
            bentoml_version=self.bentoml_version,
            build_at=self.build_at,
            created_by=self.created_by,
            created_at=self.created_at,
            updated_at=self.updated_at,
            upload_status=self.upload_status,
            upload_started_at=self.upload_started_at,
            upload_finished_at=self.upload_finished_at,
            upload_finished_reason=self.upload_finished_reason,
            upload_id=self.upload_id,
            sha256=self.sha256,
            models=list(self.models),
            repository_detail=(
                self.repository_row.contract() if self.repository_row is not None else None
            ),
        )


def _repository(row: asyncpg.Record, prefix: str = "") -> RepositoryRow:
    """`prefix`: the columns' prefix in a joined row (see `_with_repository`)."""
    return RepositoryRow(
        id=row[f"{prefix}id"],
        uid=row[f"{prefix}uid"],
        kind=Kind(row["kind"]),
        organization=row["organization"],
        name=row[f"{prefix}name"],
        description=row[f"{prefix}description"],
        labels=dict(row[f"{prefix}labels"] or {}),
        created_by=row[f"{prefix}created_by"],
        created_at=row[f"{prefix}created_at"],
        updated_at=row[f"{prefix}updated_at"],
    )


def _version(row: asyncpg.Record) -> VersionRow:
    joined = _JOINED + "uid" in row.keys()  # noqa: SIM118 - asyncpg records are not dicts
    return VersionRow(
        id=row["id"],
        uid=row["uid"],
        repository_id=row["repository_id"],
        kind=Kind(row["kind"]),
        organization=row["organization"],
        repository=row["repository"],
        version=row["version"],
        description=row["description"],
        manifest=row["manifest"],
        labels=dict(row["labels"] or {}),
        size_bytes=row["size_bytes"],
        bentoml_version=row["bentoml_version"],
        build_at=row["build_at"],
        created_by=row["created_by"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        upload_status=UploadStatus(row["upload_status"]),
        upload_started_at=row["upload_started_at"],
        upload_finished_at=row["upload_finished_at"],
        upload_finished_reason=row["upload_finished_reason"],
        upload_id=row["upload_id"],
        object_key=row["object_key"],
        sha256=row["sha256"],
        models=tuple(row["models"] or ()),
        repository_row=_repository(row, _JOINED) if joined else None,
    )


def _version_or_none(row: asyncpg.Record | None) -> VersionRow | None:
    return _version(row) if row is not None else None


def with_repository(version: VersionRow, repository: RepositoryRow) -> VersionRow:
    return replace(version, repository_row=repository)


# --- repositories --------------------------------------------------------------------------


async def insert_repository(
    conn: Db,
    *,
    kind: Kind,
    organization: str,
    name: str,
    description: str,
    labels: dict[str, str],
    created_by: str | None,
) -> RepositoryRow | None:
    """The new row, or None when the name is taken."""
    row = await conn.fetchrow(
        """INSERT INTO repositories (kind, organization, name, description, labels, created_by)
           VALUES ($1, $2, $3, $4, $5, $6)
           ON CONFLICT (kind, organization, name) DO NOTHING
           RETURNING *""",
        kind.value,
        organization,
        name,
        description,
        labels,
        created_by,
    )
    return _repository(row) if row is not None else None


async def get_repository(
    conn: Db,
    kind: Kind,
    organization: str,
    name: str,
    *,
    lock: Literal["update", "key share"] | None = None,
) -> RepositoryRow | None:
    """The row; `lock="update"` to change or delete it, `"key share"` to add a version
    (which waits for a repository delete in flight, then finds the repository gone)."""
    locking = f" FOR {lock.upper()}" if lock else ""
    row = await conn.fetchrow(
        f"""SELECT * FROM repositories
            WHERE kind = $1 AND organization = $2 AND name = $3{locking}""",  # noqa: S608 - fixed
        kind.value,
        organization,
        name,
    )
    return _repository(row) if row is not None else None


async def update_repository(
    conn: Db, repository_id: int, *, description: str | None, labels: dict[str, str] | None
) -> RepositoryRow:
    row: asyncpg.Record | None = await conn.fetchrow(
        """UPDATE repositories
           SET description = coalesce($2, description),
               labels = coalesce($3::jsonb, labels),
               updated_at = clock_timestamp()
           WHERE id = $1 RETURNING *""",
        repository_id,
        description,
        labels,
    )
    if row is None:  # pragma: no cover - the caller holds the row lock
        raise LookupError(f"repository {repository_id} vanished")
    return _repository(row)


async def delete_repository(conn: Db, repository_id: int) -> None:
    """The repository, its versions and their links (ON DELETE CASCADE)."""
    await conn.execute("DELETE FROM repositories WHERE id = $1", repository_id)


async def version_counts(conn: Db, repository_ids: Sequence[int]) -> dict[int, int]:
    rows = await conn.fetch(
        """SELECT repository_id, count(*) AS n FROM versions
           WHERE repository_id = ANY($1::bigint[]) GROUP BY repository_id""",
        list(repository_ids),
    )
    return {row["repository_id"]: row["n"] for row in rows}


# The columns of a version as the contract shows it; `models` from the link table.
_VERSION_COLUMNS = """v.*, ARRAY(
    SELECT m.model || ':' || m.model_version FROM bento_models m
    WHERE m.bento_id = v.id ORDER BY 1) AS models"""


# The repository's own columns beside a version's, prefixed: one round trip for both.
# (Kind and organization are the version's too.)
_JOINED = "repository_"
_REPOSITORY_COLUMNS = (
    "id",
    "uid",
    "name",
    "description",
    "labels",
    "created_by",
    "created_at",
    "updated_at",
)


def _with_repository(wanted: bool) -> tuple[str, str]:
    """The select list and join that add the repository's columns to a version query."""
    if not wanted:
        return _VERSION_COLUMNS, ""
    extra = ", ".join(f"r.{c} AS {_JOINED}{c}" for c in _REPOSITORY_COLUMNS)
    return f"{_VERSION_COLUMNS}, {extra}", " JOIN repositories r ON r.id = v.repository_id"


async def latest_versions(conn: Db, repository_ids: Sequence[int]) -> dict[int, VersionRow]:
    """Per repository: its newest successful version, else its newest version.

    Two probes of the `versions_newest*` indexes per repository, whatever its size.
    """
    rows = await conn.fetch(
        f"""SELECT l.* FROM unnest($1::bigint[]) AS r(id)
            CROSS JOIN LATERAL (
                (SELECT {_VERSION_COLUMNS} FROM versions v
                 WHERE v.repository_id = r.id AND v.upload_status = 'success'
                 ORDER BY v.created_at DESC, v.id DESC LIMIT 1)
                UNION ALL
                (SELECT {_VERSION_COLUMNS} FROM versions v
                 WHERE v.repository_id = r.id
                 ORDER BY v.created_at DESC, v.id DESC LIMIT 1)
                LIMIT 1
            ) AS l""",  # noqa: S608 - fixed fragments only
        list(repository_ids),
    )
    return {row["repository_id"]: _version(row) for row in rows}


# --- listing -------------------------------------------------------------------------------


class _Query:
    """WHERE conditions with numbered bind parameters."""

    def __init__(self) -> None:
        self.conditions: list[str] = []
        self.args: list[Any] = []

    def param(self, value: Any) -> str:
        self.args.append(value)
        return f"${len(self.args)}"

    def where(self, condition: str) -> None:
        self.conditions.append(condition)

    @property
    def sql(self) -> str:
        return " AND ".join(self.conditions) if self.conditions else "true"


def _like_pattern(search: str) -> str:
    escaped = search.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _order(columns: Sequence[str], tie_breaker: str, descending: bool) -> str:
    # Sort columns are NOT NULL: no NULLS clause, so the (DESC) indexes serve both ways.
    direction = "DESC" if descending else "ASC"
    return ", ".join(f"{column} {direction}" for column in (*columns, tie_breaker))


_REPOSITORY_SORT: dict[str, tuple[str, ...]] = {
    "created_at": ("r.created_at",),
    "name": ('r.name COLLATE "C"',),
    "version": ('r.name COLLATE "C"',),
    # The most recent build, and the total size of the versions.
    "build_at": (
        (
            "(SELECT coalesce(max(v.build_at), '-infinity') FROM versions v"
            " WHERE v.repository_id = r.id)"
        ),
    ),
    "size": (
        "(SELECT coalesce(sum(v.size_bytes), 0) FROM versions v WHERE v.repository_id = r.id)",
    ),
}

_VERSION_SORT: dict[str, tuple[str, ...]] = {
    "created_at": ("v.created_at",),
    "build_at": ("v.build_at",),
    "size": ("v.size_bytes",),
    "name": ('v.repository COLLATE "C"', 'v.version COLLATE "C"'),
    "version": ('v.version COLLATE "C"',),
}


async def list_repositories(conn: Db, flt: ListFilter) -> tuple[int, list[RepositoryRow]]:
    """(total matching, the requested page)."""
    q = _Query()
    q.where(f"r.kind = {q.param(flt.kind.value)}")
    q.where(f"r.organization = {q.param(flt.scope.organization)}")
    if flt.search:
        q.where(f"r.name LIKE {q.param(_like_pattern(flt.search))}")
    if flt.labels:
        q.where(f"r.labels @> {q.param(labels_to_dict(flt.labels))}::jsonb")
    if flt.creator:
        q.where(f"r.created_by = {q.param(flt.creator)}")
    if flt.upload_status is not None:
        status = q.param(flt.upload_status.value)
        q.where(
            "EXISTS (SELECT 1 FROM versions v"  # noqa: S608 - a bind parameter's name
            f" WHERE v.repository_id = r.id AND v.upload_status = {status})"
        )
    total = await conn.fetchval(f"SELECT count(*) FROM repositories r WHERE {q.sql}", *q.args)  # noqa: S608
    order = _order(_REPOSITORY_SORT[flt.sort], "r.id", flt.descending)
    limit, offset = q.param(flt.count), q.param(flt.start)
    rows = await conn.fetch(
        f"SELECT r.* FROM repositories r WHERE {q.sql} ORDER BY {order}"  # noqa: S608
        f" LIMIT {limit} OFFSET {offset}",
        *q.args,
    )
    return int(total), [_repository(row) for row in rows]


async def list_versions(
    conn: Db, flt: ListFilter, *, repository_id: int | None, with_repository: bool = False
) -> tuple[int, list[VersionRow]]:
    """(total matching, the requested page); across the organization when no repository.

    `with_repository` joins each version's repository (`repository_row`), for listings
    whose items name their repository in full."""
    q = _Query()
    if repository_id is not None:
        q.where(f"v.repository_id = {q.param(repository_id)}")
    else:
        q.where(f"v.kind = {q.param(flt.kind.value)}")
        q.where(f"v.organization = {q.param(flt.scope.organization)}")
    if flt.search:
        # The tag: "iris" finds the repository, "v1" its versions, "iris:v1" one of them.
        q.where(f"(v.repository || ':' || v.version) LIKE {q.param(_like_pattern(flt.search))}")
    if flt.labels:
        q.where(f"v.labels @> {q.param(labels_to_dict(flt.labels))}::jsonb")
    if flt.creator:
        q.where(f"v.created_by = {q.param(flt.creator)}")
    if flt.upload_status is not None:
        q.where(f"v.upload_status = {q.param(flt.upload_status.value)}")
    if flt.uses_model:
        model, _, model_version = flt.uses_model.partition(":")
        name, ver = q.param(model), q.param(model_version)  # bind parameters, not values
        q.where(
            "EXISTS (SELECT 1 FROM bento_models m WHERE m.bento_id = v.id"  # noqa: S608
            f" AND m.model = {name} AND m.model_version = {ver})"
        )
    total = await conn.fetchval(f"SELECT count(*) FROM versions v WHERE {q.sql}", *q.args)  # noqa: S608
    order = _order(_VERSION_SORT[flt.sort], "v.id", flt.descending)
    limit, offset = q.param(flt.count), q.param(flt.start)
    # The page first (an index scan in the requested order), then its links.
    columns, join = _with_repository(with_repository)
    rows = await conn.fetch(
        f"""SELECT {columns} FROM (
                SELECT * FROM versions v WHERE {q.sql} ORDER BY {order}
                LIMIT {limit} OFFSET {offset}) AS v{join}
            ORDER BY {order}""",  # noqa: S608
        *q.args,
    )
    return int(total), [_version(row) for row in rows]


# --- versions ------------------------------------------------------------------------------


async def insert_version(
    conn: Db,
    *,
    repository: RepositoryRow,
    version: str,
    description: str,
    manifest: dict[str, Any] | None,
    labels: dict[str, str],
    size_bytes: int,
    bentoml_version: str | None,
    build_at: datetime,
    created_by: str | None,
    object_key: str,
) -> int | None:
    """The new version's id, or None when the version exists already.

    `ON CONFLICT` names no constraint: two racing creates of one version collide on the
    tag or on the object key, whichever index the loser reaches first, and both mean
    "exists already"."""
    version_id: int | None = await conn.fetchval(
        """INSERT INTO versions (repository_id, kind, organization, repository, version,
                                 description, manifest, labels, size_bytes, bentoml_version,
                                 build_at, created_by, object_key)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
           ON CONFLICT DO NOTHING
           RETURNING id""",
        repository.id,
        repository.kind.value,
        repository.organization,
        repository.name,
        version,
        description,
        manifest,
        labels,
        size_bytes,
        bentoml_version,
        build_at,
        created_by,
        object_key,
    )
    return version_id


async def get_version(
    conn: Db,
    kind: Kind,
    organization: str,
    repository: str,
    version: str,
    *,
    for_update: bool = False,
    with_repository: bool = False,
) -> VersionRow | None:
    """The version's row; `with_repository` adds its repository's (`repository_row`)."""
    lock = " FOR UPDATE OF v" if for_update else ""
    columns, join = _with_repository(with_repository)
    return _version_or_none(
        await conn.fetchrow(
            f"""SELECT {columns} FROM versions v{join}
            WHERE v.kind = $1 AND v.organization = $2 AND v.repository = $3
              AND v.version = $4{lock}""",  # noqa: S608 - fixed fragments only
            kind.value,
            organization,
            repository,
            version,
        )
    )


async def get_version_by_id(conn: Db, version_id: int) -> VersionRow:
    row: asyncpg.Record | None = await conn.fetchrow(
        f"SELECT {_VERSION_COLUMNS} FROM versions v WHERE v.id = $1",  # noqa: S608
        version_id,
    )
    if row is None:  # pragma: no cover - the caller just wrote or locked the row
        raise LookupError(f"version {version_id} vanished")
    return _version(row)


async def latest_successful_version(
    conn: Db, kind: Kind, organization: str, repository: str, *, with_repository: bool = False
) -> VersionRow | None:
    """The newest (by creation) successfully uploaded version of a repository."""
    columns, join = _with_repository(with_repository)
    return _version_or_none(
        await conn.fetchrow(
            f"""SELECT {columns} FROM versions v{join}
            WHERE v.repository_id = (
                    SELECT id FROM repositories
                    WHERE kind = $1 AND organization = $2 AND name = $3)
              AND v.upload_status = 'success'
            ORDER BY v.created_at DESC, v.id DESC LIMIT 1""",  # noqa: S608
            kind.value,
            organization,
            repository,
        )
    )


async def update_version(
    conn: Db,
    version_id: int,
    *,
    description: str | None,
    manifest: dict[str, Any] | None,
    size_bytes: int | None,
    bentoml_version: str | None,
    labels: dict[str, str] | None,
) -> None:
    """Change what is given; a new manifest also replaces size and bentoml version."""
    await conn.execute(
        """UPDATE versions
           SET description = coalesce($2, description),
               manifest = CASE WHEN $3::jsonb IS NULL THEN manifest ELSE $3::jsonb END,
               size_bytes = coalesce($4, size_bytes),
               bentoml_version = CASE WHEN $3::jsonb IS NULL THEN bentoml_version ELSE $5 END,
               labels = coalesce($6::jsonb, labels),
               updated_at = clock_timestamp()
           WHERE id = $1""",
        version_id,
        description,
        manifest,
        size_bytes,
        bentoml_version,
        labels,
    )


async def start_upload(conn: Db, version_id: int, deadline: datetime) -> None:
    await conn.execute(
        """UPDATE versions
           SET upload_status = 'uploading', upload_started_at = clock_timestamp(),
               upload_finished_at = NULL, upload_finished_reason = '', upload_id = NULL,
               upload_deadline = $2, updated_at = clock_timestamp()
           WHERE id = $1""",
        version_id,
        deadline,
    )


async def extend_upload_deadline(conn: Db, version_id: int, deadline: datetime) -> None:
    """Move the deadline of an upload in progress to `deadline`, never earlier."""
    await conn.execute(
        """UPDATE versions SET upload_deadline = greatest(upload_deadline, $2)
           WHERE id = $1 AND upload_status = 'uploading'""",
        version_id,
        deadline,
    )


async def set_upload_id(conn: Db, version_id: int, upload_id: str | None) -> None:
    await conn.execute(
        "UPDATE versions SET upload_id = $2, updated_at = clock_timestamp() WHERE id = $1",
        version_id,
        upload_id,
    )


async def finish_upload(
    conn: Db, version_id: int, *, status: UploadStatus, reason: str, sha256: str | None = None
) -> None:
    await conn.execute(
        """UPDATE versions
           SET upload_status = $2, upload_finished_at = clock_timestamp(),
               upload_finished_reason = $3, upload_id = NULL, sha256 = $4,
               updated_at = clock_timestamp()
           WHERE id = $1""",
        version_id,
        status.value,
        reason,
        sha256,
    )


async def delete_version(conn: Db, version_id: int) -> None:
    await conn.execute("DELETE FROM versions WHERE id = $1", version_id)


async def versions_of_repository(conn: Db, repository_id: int) -> list[VersionRow]:
    rows = await conn.fetch(
        f"""SELECT {_VERSION_COLUMNS} FROM versions v
            WHERE v.repository_id = $1 ORDER BY v.created_at, v.id""",  # noqa: S608
        repository_id,
    )
    return [_version(row) for row in rows]


async def abandoned_uploads(conn: Db, *, now: datetime | None, limit: int) -> list[int]:
    """Uploads in progress past their deadline (as of `now`, default the database's clock),
    locked for the caller's transaction."""
    rows = await conn.fetch(
        """SELECT id FROM versions
           WHERE upload_status = 'uploading'
             AND upload_deadline < coalesce($1::timestamptz, clock_timestamp())
           ORDER BY upload_deadline LIMIT $2
           FOR UPDATE SKIP LOCKED""",
        now,
        limit,
    )
    return [row["id"] for row in rows]


# --- bento -> model links ------------------------------------------------------------------


async def replace_bento_models(
    conn: Db, bento_id: int, organization: str, models: Iterable[tuple[str, str]]
) -> None:
    await conn.execute("DELETE FROM bento_models WHERE bento_id = $1", bento_id)
    refs = sorted(set(models))
    if refs:
        await conn.executemany(
            """INSERT INTO bento_models (bento_id, organization, model, model_version)
               VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING""",
            [(bento_id, organization, name, version) for name, version in refs],
        )


async def bentos_using(
    conn: Db, organization: str, model: str, model_version: str | None, *, limit: int = 5
) -> list[str]:
    """Tags of bento versions that use the model version (any version when None)."""
    rows = await conn.fetch(
        """SELECT DISTINCT v.repository || ':' || v.version AS tag
           FROM bento_models m JOIN versions v ON v.id = m.bento_id
           WHERE m.organization = $1 AND m.model = $2
             AND ($3::text IS NULL OR m.model_version = $3)
           ORDER BY tag LIMIT $4""",
        organization,
        model,
        model_version,
        limit,
    )
    return [row["tag"] for row in rows]


# --- blob deletions ------------------------------------------------------------------------


@dataclass(frozen=True)
class BlobDeletion:
    """An object to delete (`upload_id` None) or a multipart upload to abort."""

    object_key: str
    upload_id: str | None
    reason: str


@dataclass(frozen=True)
class QueuedDeletion(BlobDeletion):
    id: int
    attempts: int


async def queue_blob_deletions(conn: Db, deletions: Sequence[BlobDeletion]) -> None:
    if deletions:
        await conn.executemany(
            "INSERT INTO blob_deletions (object_key, upload_id, reason) VALUES ($1, $2, $3)",
            [(d.object_key, d.upload_id, d.reason) for d in deletions],
        )


async def cancel_object_deletion(conn: Db, object_key: str) -> None:
    """Forget a queued deletion of `object_key`: a new upload is about to write it.

    A deletion the background task is carrying out holds its row lock; this waits for it,
    so an old deletion can never land after the new upload. Queued aborts of old multipart
    uploads stay: they never touch the object.
    """
    await conn.execute(
        "DELETE FROM blob_deletions WHERE object_key = $1 AND upload_id IS NULL", object_key
    )


async def claim_due_deletions(conn: Db, limit: int) -> list[QueuedDeletion]:
    """Due rows, locked until the caller's transaction ends (others skip them)."""
    rows = await conn.fetch(
        """SELECT id, object_key, upload_id, reason, attempts FROM blob_deletions
           WHERE not_before <= clock_timestamp()
           ORDER BY not_before, id LIMIT $1
           FOR UPDATE SKIP LOCKED""",
        limit,
    )
    return [
        QueuedDeletion(
            id=row["id"],
            object_key=row["object_key"],
            upload_id=row["upload_id"],
            reason=row["reason"],
            attempts=row["attempts"],
        )
        for row in rows
    ]


async def drop_deletions(conn: Db, ids: Sequence[int]) -> None:
    await conn.execute("DELETE FROM blob_deletions WHERE id = ANY($1::bigint[])", list(ids))


async def postpone_deletion(conn: Db, deletion_id: int, *, error: str, delay: float) -> None:
    await conn.execute(
        """UPDATE blob_deletions
           SET attempts = attempts + 1, last_error = $2,
               not_before = clock_timestamp() + make_interval(secs => $3)
           WHERE id = $1""",
        deletion_id,
        error[:2000],
        delay,
    )


async def pending_deletions(conn: Db) -> int:
    return int(await conn.fetchval("SELECT count(*) FROM blob_deletions"))
