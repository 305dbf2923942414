"""Alembic environment and revisions of the store (a package so that wheels ship them)."""
