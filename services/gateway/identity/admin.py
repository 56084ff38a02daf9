"""Operator commands on the gateway's database, for `ekiben token create`.

An operator who can reach the database is trusted like the first start: the command
applies the gateway's migrations if the database is new, makes sure organization `default`
has an admin (as the first start would, but without a bootstrap token), and issues a
token for the first admin of `default` (or of the only organization). The change and its
audit record (actor `system:cli`) commit together.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

from services.gateway.audit import service as audit
from services.gateway.identity import repository
from services.gateway.identity import service as identity
from services.gateway.identity.models import SYSTEM_CLI
from services.gateway.settings import GatewaySettings
from shared.db import create_pool
from shared.db.migrations import migrate

# The same folder as `app.MIGRATIONS`, named here so that a command does not import the
# service's runtime (the bus, tracing), which would cost seconds at every run.
MIGRATIONS = Path(__file__).parents[1] / "migrations"


async def create_admin_token(
    settings: GatewaySettings,
    *,
    name: str,
    scopes: Sequence[str] | None = None,
    expires_in_days: int | None = None,
) -> str:
    """A new admin token's secret; raises an `EkibenError` with a message for the operator."""
    dsn = settings.postgres.dsn.get_secret_value()
    # Migrations on a plain connection, as every service does at start (see shared.service).
    await migrate(dsn, settings.schema_name, MIGRATIONS, settings.service_name)
    pool = await create_pool(dsn, schema=settings.schema_name, min_size=1, max_size=1)
    expired_at = (
        datetime.now(UTC) + timedelta(days=expires_in_days) if expires_in_days is not None else None
    )
    try:
        async with pool.acquire() as conn, conn.transaction():
            await repository.lock_identity(conn)
            await identity.ensure_admin(conn)
            admin = await identity.default_admin(conn)
            issued = await identity.issue_token(
                conn,
                organization=admin.organization,
                user=admin.user,
                name=name,
                description="created with `ekiben token create`",
                scopes=scopes,
                expired_at=expired_at,
            )
            token = issued.token
            await audit.record(
                conn,
                organization=admin.organization,
                actor_name=SYSTEM_CLI,
                action="api_token.created",
                resource_type="api_token",
                resource=token.name,
                details={
                    "uid": token.uid,
                    "user": admin.user.name,
                    "scopes": list(token.scopes),
                    "expired_at": token.expired_at.isoformat() if token.expired_at else None,
                },
            )
    finally:
        await pool.close()
    return issued.secret


async def set_user_password(settings: GatewaySettings, *, name: str, password: str) -> None:
    """Set user `name`'s password (their sessions end), audited as `system:cli`."""
    # Imported here: sessions authenticate through identity, which this module is part of.
    from services.gateway.sessions import service as sessions  # noqa: PLC0415

    sessions.check_password(password)
    dsn = settings.postgres.dsn.get_secret_value()
    await migrate(dsn, settings.schema_name, MIGRATIONS, settings.service_name)
    pool = await create_pool(dsn, schema=settings.schema_name, min_size=1, max_size=1)
    try:
        async with pool.acquire() as conn, conn.transaction():
            user = await sessions.user_by_name(conn, name)
            ended = await sessions.set_password(conn, user, password)
            orgs = await repository.organizations(conn)
            await audit.record(
                conn,
                organization=orgs[0] if len(orgs) == 1 else None,
                actor_name=SYSTEM_CLI,
                action="user.password_set",
                resource_type="user",
                resource=name,
                details={"sessions_ended": ended},
            )
    finally:
        await pool.close()
