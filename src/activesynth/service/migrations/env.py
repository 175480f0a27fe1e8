"""Alembic environment: migrations run on the connection handed over by ``db.upgrade``."""

from __future__ import annotations

from alembic import context

from activesynth.service.db import Base

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - only through db.upgrade
    raise RuntimeError("Run the service migrations through activesynth.service.db.upgrade().")
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
