"""Persistence: SQLAlchemy models, sessions, migrations and the blob store. No discord, no HTTP."""
