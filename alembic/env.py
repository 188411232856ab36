"""Alembic environment: online migrations only, URL from `-x url=...`, the config, or TVOTE_DB_URL."""

from __future__ import annotations

import os

from sqlalchemy import create_engine

from alembic import context

config = context.config
url = (
    context.get_x_argument(as_dictionary=True).get("url")
    or config.attributes.get("url")
    or config.get_main_option("sqlalchemy.url")
    or os.environ.get("TVOTE_DB_URL")
)
if not url:
    raise SystemExit("no database URL: pass -x url=postgresql+psycopg://... or set TVOTE_DB_URL")

engine = create_engine(url)
try:
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=None, transaction_per_migration=True)
        with context.begin_transaction():
            context.run_migrations()
finally:
    engine.dispose()  # leave no idle connection behind: the database may be a template next
