"""Alembic migration scripts of the service database (run by :func:`..db.upgrade`)."""
