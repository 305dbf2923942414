"""Alembic revisions, oldest first; each file is one migration (see ../env.py)."""
