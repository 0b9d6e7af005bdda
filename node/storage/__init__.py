"""Storage: SQLAlchemy 2 async models, repositories, the state codec and Alembic migrations."""
