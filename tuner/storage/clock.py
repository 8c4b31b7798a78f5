"""`db_now()`: the database server's clock, in seconds since the epoch, as a SQL expression.

Leases compare the database's time with the database's time, so clocks of worker hosts
never matter.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.expression import FunctionElement
from sqlalchemy.types import Double


class db_now(FunctionElement[float]):  # noqa: N801 - reads like a SQL function
    type = Double()
    inherit_cache = True


@compiles(db_now)
def _generic(element: Any, compiler: Any, **kw: Any) -> str:
    return "(julianday('now') - 2440587.5) * 86400.0"


@compiles(db_now, "postgresql")
def _postgresql(element: Any, compiler: Any, **kw: Any) -> str:
    return "EXTRACT(EPOCH FROM clock_timestamp())::float8"


@compiles(db_now, "mysql")
@compiles(db_now, "mariadb")
def _mysql(element: Any, compiler: Any, **kw: Any) -> str:
    return "UNIX_TIMESTAMP(NOW(6))"
