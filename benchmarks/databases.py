"""The database a benchmark measures on, emptied before and after."""

from __future__ import annotations


def empty_database(url: str) -> None:
    """Drop every table of the database: this tuner's, Optuna's, anything."""
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    try:
        meta = sa.MetaData()
        with engine.begin() as conn:
            meta.reflect(conn)
            meta.drop_all(conn)
    finally:
        engine.dispose()
