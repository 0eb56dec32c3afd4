"""Alembic environment: the URL comes from the project's settings (postgres.dsn), never from an ini."""

from alembic import context
from sqlalchemy import create_engine

from config.settings import get_settings

url = context.config.attributes.get("url") or get_settings().postgres.sqlalchemy_url


def run_migrations_online() -> None:
    engine = create_engine(url)
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=None, transaction_per_migration=True)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    context.configure(url=url, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    run_migrations_online()
