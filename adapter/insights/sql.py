"""The few expressions SQLite and PostgreSQL spell differently, as SQLAlchemy constructs.

Each compiles to one expression per dialect, so every query of ``compute`` is the same
SQLAlchemy Core statement on both. Timestamps are UTC: SQLite stores them as
``YYYY-MM-DD HH:MM:SS.ffffff`` text (SQLAlchemy's format), PostgreSQL as timestamptz.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Float, Integer, String
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.expression import ColumnElement
from sqlalchemy.sql.functions import FunctionElement


class utc_day(FunctionElement[str]):
    """``YYYY-MM-DD`` of a UTC timestamp."""

    type = String()
    inherit_cache = True


class utc_month(FunctionElement[str]):
    """``YYYY-MM`` of a UTC timestamp."""

    type = String()
    inherit_cache = True


class utc_weekday(FunctionElement[int]):
    """The UTC weekday, 0 = Sunday … 6 = Saturday (both databases' own numbering)."""

    type = Integer()
    inherit_cache = True


class seconds_between(FunctionElement[float]):
    """``b - a`` in seconds (a float)."""

    type = Float()
    inherit_cache = True


def _args(element: FunctionElement[Any], compiler: Any, **kw: Any) -> list[str]:
    return [compiler.process(clause, **kw) for clause in element.clauses]


@compiles(utc_day, "sqlite")
def _day_sqlite(element: utc_day, compiler: Any, **kw: Any) -> str:
    return f"substr({_args(element, compiler, **kw)[0]}, 1, 10)"


@compiles(utc_day, "postgresql")
def _day_pg(element: utc_day, compiler: Any, **kw: Any) -> str:
    return f"to_char(({_args(element, compiler, **kw)[0]}) AT TIME ZONE 'UTC', 'YYYY-MM-DD')"


@compiles(utc_month, "sqlite")
def _month_sqlite(element: utc_month, compiler: Any, **kw: Any) -> str:
    return f"substr({_args(element, compiler, **kw)[0]}, 1, 7)"


@compiles(utc_month, "postgresql")
def _month_pg(element: utc_month, compiler: Any, **kw: Any) -> str:
    return f"to_char(({_args(element, compiler, **kw)[0]}) AT TIME ZONE 'UTC', 'YYYY-MM')"


@compiles(utc_weekday, "sqlite")
def _weekday_sqlite(element: utc_weekday, compiler: Any, **kw: Any) -> str:
    return f"CAST(strftime('%w', {_args(element, compiler, **kw)[0]}) AS INTEGER)"


@compiles(utc_weekday, "postgresql")
def _weekday_pg(element: utc_weekday, compiler: Any, **kw: Any) -> str:
    value = _args(element, compiler, **kw)[0]
    return f"CAST(EXTRACT(DOW FROM ({value}) AT TIME ZONE 'UTC') AS INTEGER)"


@compiles(seconds_between, "sqlite")
def _between_sqlite(element: seconds_between, compiler: Any, **kw: Any) -> str:
    a, b = _args(element, compiler, **kw)
    return f"((julianday({b}) - julianday({a})) * 86400.0)"


@compiles(seconds_between, "postgresql")
def _between_pg(element: seconds_between, compiler: Any, **kw: Any) -> str:
    a, b = _args(element, compiler, **kw)
    return f"CAST(EXTRACT(EPOCH FROM ({b}) - ({a})) AS DOUBLE PRECISION)"


def day(column: ColumnElement[Any]) -> utc_day:
    return utc_day(column)


def month(column: ColumnElement[Any]) -> utc_month:
    return utc_month(column)


def weekday(column: ColumnElement[Any]) -> utc_weekday:
    return utc_weekday(column)


def seconds(start: ColumnElement[Any], end: ColumnElement[Any]) -> seconds_between:
    return seconds_between(start, end)
