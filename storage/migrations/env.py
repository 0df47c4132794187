"""Alembic's entry point. SheetReel runs migrations itself (storage/migrate.py), always on a
connection it has already locked, so this only hands that connection to Alembic."""

from alembic import context

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=None, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
