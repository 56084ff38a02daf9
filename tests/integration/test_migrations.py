"""Migrations: applied once even when replicas start together; edits are caught."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import pytest

from shared.db.migrations import MigrationError, apply_migrations, load_migrations, migrations_for


def write(folder: Path, name: str, sql: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(sql)


async def test_concurrent_starts_apply_each_migration_once(pg_dsn: str, tmp_path: Path) -> None:
    write(tmp_path, "0001_things.sql", "CREATE TABLE things (id int PRIMARY KEY);")
    write(tmp_path, "0002_more.sql", "ALTER TABLE things ADD COLUMN name text;")
    migrations = migrations_for(tmp_path, "svc")
    conns = [await asyncpg.connect(pg_dsn) for _ in range(4)]
    try:
        results = await asyncio.gather(*(apply_migrations(c, "svc", migrations) for c in conns))
        applied = sorted(key for result in results for key in result)
        assert applied == sorted(m.key for m in migrations)
        columns = await conns[0].fetch(
            "SELECT column_name FROM information_schema.columns"
            " WHERE table_schema = 'svc' AND table_name = 'things' ORDER BY ordinal_position"
        )
        assert [c["column_name"] for c in columns] == ["id", "name"]
        # A later start finds nothing to do.
        assert await apply_migrations(conns[0], "svc", migrations) == []
    finally:
        for conn in conns:
            await conn.close()


async def test_changed_migration_is_refused(pg_dsn: str, tmp_path: Path) -> None:
    write(tmp_path, "0001_things.sql", "CREATE TABLE things (id int);")
    conn = await asyncpg.connect(pg_dsn)
    try:
        await apply_migrations(conn, "svc", load_migrations(tmp_path, "svc"))
        write(tmp_path, "0001_things.sql", "CREATE TABLE things (id bigint);")
        with pytest.raises(MigrationError, match="changed after it was applied"):
            await apply_migrations(conn, "svc", load_migrations(tmp_path, "svc"))
    finally:
        await conn.close()


async def test_failed_migration_leaves_nothing_half_applied(pg_dsn: str, tmp_path: Path) -> None:
    write(tmp_path, "0001_ok.sql", "CREATE TABLE ok (id int);")
    write(tmp_path, "0002_broken.sql", "CREATE TABLE broken (id int); SELECT no_such_function();")
    conn = await asyncpg.connect(pg_dsn)
    try:
        with pytest.raises(asyncpg.UndefinedFunctionError):
            await apply_migrations(conn, "svc", load_migrations(tmp_path, "svc"))
        tables = await conn.fetchval(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'svc'"
        )
        assert tables == 0
    finally:
        await conn.close()


def test_badly_named_migration_file_is_an_error(tmp_path: Path) -> None:
    write(tmp_path, "init.sql", "SELECT 1;")
    with pytest.raises(MigrationError, match="NNNN_description"):
        load_migrations(tmp_path, "svc")
