"""PostgreSQL access: one asyncpg pool per service, one schema per service, migrations."""

from shared.db.migrations import Migration, apply_migrations, load_migrations
from shared.db.pool import Connection, Pool, create_pool

__all__ = ["Connection", "Migration", "Pool", "apply_migrations", "create_pool", "load_migrations"]
