"""Versioned SQL migrations, one schema per service, safe when replicas start together.

Each service keeps plain SQL files named `NNNN_description.sql` in its `migrations/`
folder; the shared library contributes its own (the outbox and the processed-event
record) that every service schema gets first. `apply_migrations` takes a transaction-level
advisory lock per schema, so two replicas starting at once apply each file exactly once:
the second waits, then finds nothing left to do. A changed file that was already applied
is an error, never silently skipped.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg

from shared.logging import get_logger

log = get_logger(__name__)

SHARED_MIGRATIONS = Path(__file__).parent / "sql"
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


class MigrationError(RuntimeError):
    pass


@dataclass(frozen=True)
class Migration:
    key: str  # "<origin>/<NNNN>_<name>", unique inside a schema
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def load_migrations(folder: Path, origin: str) -> list[Migration]:
    migrations = []
    for path in sorted(folder.glob("*.sql")):
        if not _NAME.match(path.name):
            raise MigrationError(f"{path}: migration files are named NNNN_description.sql")
        migrations.append(Migration(f"{origin}/{path.stem}", path.read_text()))
    return migrations


def migrations_for(service_folder: Path | None, service: str) -> list[Migration]:
    """The shared migrations, then the service's own."""
    found = load_migrations(SHARED_MIGRATIONS, "shared")
    if service_folder is not None and service_folder.is_dir():
        found += load_migrations(service_folder, service)
    return found


async def apply_migrations(
    conn: asyncpg.Connection[Any], schema: str, migrations: list[Migration]
) -> list[str]:
    """Apply what is missing in `schema`; returns the keys applied now."""
    if not re.fullmatch(r"[a-z_][a-z0-9_]*", schema):
        raise MigrationError(f"invalid schema name {schema!r}")
    applied_now: list[str] = []
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", f"ekiben.migrate.{schema}")
        await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
        await conn.execute(
            f"""CREATE TABLE IF NOT EXISTS {schema}.schema_migrations (
                    key text PRIMARY KEY,
                    checksum text NOT NULL,
                    applied_at timestamptz NOT NULL DEFAULT now())"""
        )
        # The schema name is checked against an identifier pattern above.
        rows = await conn.fetch(f"SELECT key, checksum FROM {schema}.schema_migrations")  # noqa: S608
        done = {row["key"]: row["checksum"] for row in rows}
        await conn.execute(f"SET LOCAL search_path TO {schema}, public")
        for migration in migrations:
            if migration.key in done:
                if done[migration.key] != migration.checksum:
                    raise MigrationError(
                        f"{schema}: migration {migration.key} changed after it was applied"
                    )
                continue
            await conn.execute(migration.sql)
            await conn.execute(
                f"INSERT INTO {schema}.schema_migrations (key, checksum) VALUES ($1, $2)",  # noqa: S608
                migration.key,
                migration.checksum,
            )
            applied_now.append(migration.key)
    if applied_now:
        log.info("db.migrations.applied", schema=schema, keys=applied_now)
    return applied_now


async def migrate(dsn: str, schema: str, service_folder: Path | None, service: str) -> list[str]:
    """Apply a service's migrations on a connection of its own (what every start does)."""
    conn = await asyncpg.connect(dsn)
    try:
        return await apply_migrations(conn, schema, migrations_for(service_folder, service))
    finally:
        await conn.close()
