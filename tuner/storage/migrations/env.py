"""Alembic environment: runs on the connection the storage hands in, never a URL of its own."""

from alembic import context

from tuner.storage.models import Base

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
