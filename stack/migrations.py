"""Schemas owned by migrations: Alembic for PostgreSQL, versioned CQL files for Cassandra.

Both are idempotent. Cassandra's applied versions are recorded in `<keyspace>.schema_migrations`
with a checksum, so an edited, already-applied file is reported instead of silently skipped.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine

from config.settings import Settings

HERE = Path(__file__).resolve().parent
CQL_DIR = HERE / "cql"


class MigrationError(RuntimeError):
    pass


def alembic_config(settings: Settings) -> AlembicConfig:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(HERE / "alembic"))
    cfg.attributes["url"] = settings.postgres.sqlalchemy_url
    return cfg


def migrate_postgres(settings: Settings, target: str = "head") -> str | None:
    cfg = alembic_config(settings)
    current = postgres_revision(settings)
    if target in ("base",) or target.startswith("-"):
        command.downgrade(cfg, target)
    elif current != target:
        command.upgrade(cfg, target)
    return postgres_revision(settings)


def postgres_revision(settings: Settings) -> str | None:
    engine = create_engine(settings.postgres.sqlalchemy_url)
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()


def cql_files() -> list[tuple[str, Path]]:
    out = []
    for path in sorted(CQL_DIR.glob("*.cql")):
        m = re.match(r"^(\d{4})_", path.name)
        if not m:
            raise MigrationError(f"{path}: CQL migrations are named NNNN_description.cql")
        out.append((m.group(1), path))
    return out


def _statements(text: str) -> list[str]:
    body = "\n".join(line for line in text.splitlines() if not line.strip().startswith("--"))
    return [s.strip() for s in body.split(";") if s.strip()]


def cassandra_session(settings: Settings, keyspace: str | None = None):
    from sinks.stores import cassandra_cluster

    cluster = cassandra_cluster(settings)
    return cluster, cluster.connect(keyspace)


def migrate_cassandra(settings: Settings) -> list[str]:
    """Create the keyspace, then apply every CQL file not yet recorded; returns the versions applied."""
    ks = settings.cassandra.keyspace
    cluster, session = cassandra_session(settings)
    try:
        session.execute(
            f"CREATE KEYSPACE IF NOT EXISTS {ks} WITH replication = "
            f"{{'class': 'SimpleStrategy', 'replication_factor': {settings.cassandra.replication_factor}}}"
        )
        session.set_keyspace(ks)
        session.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations "
            "(version text PRIMARY KEY, name text, checksum text, applied_at timestamp)"
        )
        applied = {r.version: r.checksum for r in session.execute("SELECT version, checksum FROM schema_migrations")}
        done = []
        for version, path in cql_files():
            text = path.read_text()
            checksum = hashlib.sha256(text.encode()).hexdigest()
            if version in applied:
                if applied[version] != checksum:
                    raise MigrationError(
                        f"{path.name} was changed after it was applied; add a new migration instead"
                    )
                continue
            for stmt in _statements(text):
                session.execute(stmt, timeout=60)
            session.execute(
                "INSERT INTO schema_migrations (version, name, checksum, applied_at) "
                "VALUES (%s, %s, %s, toTimestamp(now()))",
                (version, path.name, checksum),
            )
            done.append(path.name)
        return done
    finally:
        cluster.shutdown()
