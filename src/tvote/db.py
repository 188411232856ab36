"""Schema migrations (alembic) run from code, so `tvote` and the tests need no alembic.ini lookup."""

from __future__ import annotations

from pathlib import Path

from alembic.config import Config

from alembic import command

ROOT = Path(__file__).resolve().parents[2]
APP_ROLE = "tvote_app"


def alembic_config(url: str) -> Config:
    cfg = Config(str(ROOT / "alembic.ini"))
    cfg.set_main_option("script_location", str(ROOT / "alembic"))
    cfg.attributes["url"] = url
    return cfg


def upgrade(url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(url), revision)


def downgrade(url: str, revision: str = "base") -> None:
    command.downgrade(alembic_config(url), revision)


def sqlalchemy_url(dsn_url: str) -> str:
    return dsn_url if dsn_url.startswith("postgresql+psycopg://") else dsn_url.replace(
        "postgresql://", "postgresql+psycopg://", 1)
