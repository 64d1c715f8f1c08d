"""The index: SQLAlchemy models, engine/session factory, migrations."""
