"""Batch parameters: a column whose value is the same on every row goes in as one scalar.

A bulk statement takes one array per column and ``unnest``s them. Arrays are
costly at both ends: asyncpg encodes every element and the server decodes
every element again before the statement runs. In a typical batch most
columns hold one value on every row (one function, one queue, the same
options, NULL for the unset ones), so those go in as a single scalar and
only the columns that differ per row travel as arrays: an ``enqueue_many``
with shared options sends 2 or 3 arrays (id, created_at, payload when the
arguments differ) instead of 18, which halves the statement's time.

Each combination of scalar and array columns is its own statement text,
built once and cached (asyncpg prepares each text once per connection);
real workloads use a handful of combinations.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

__all__ = ["BatchColumns", "uniform_mask"]

#: rendered statements kept per column list.
_MAX_CACHED = 256


def uniform_mask(columns: Sequence[list[Any]], *, vary_first: bool) -> tuple[bool, ...]:
    """One flag per column: True when it must go in as an array (its values differ).

    Args:
        columns: the column value lists, all of one length.
        vary_first: keep the first column an array whenever there are
            several rows, so the ``unnest`` has a row source (the key column).
    """
    rows = len(columns[0])
    if rows <= 1:
        return (False,) * len(columns)
    # list.count compares by identity first, so a column of one shared object is a cheap C loop.
    checked = columns[1:] if vary_first else columns
    mask = tuple(column.count(column[0]) != rows for column in checked)
    return (True, *mask) if vary_first else mask


class BatchColumns:
    """Renders and caches the statement for each scalar/array combination of a column list.

    Args:
        columns: ``(name, PostgreSQL type)`` of each parameter, in parameter order.
        render: ``render(values, unnest)`` returns the statement, where
            ``values[name]`` is the SQL expression of that column's value on
            a row (``$3::text`` or ``i.func``) and ``unnest`` is the FROM item
            (``unnest(...) WITH ORDINALITY AS i(..., ord)``) or None when every
            column is a scalar (a single row).
    """

    def __init__(self, columns: Sequence[tuple[str, str]], render: Callable[[dict[str, str], str | None], str]) -> None:
        self.columns = tuple(columns)
        self._render = render
        self._cache: dict[tuple[bool, ...], str] = {}

    def sql(self, mask: tuple[bool, ...]) -> str:
        """The statement where ``mask[k]`` says column k is an array."""
        sql = self._cache.get(mask)
        if sql is None:
            if len(self._cache) >= _MAX_CACHED:  # a bound, not an LRU: real workloads use a handful
                self._cache.clear()
            sql = self._cache[mask] = self._build(mask)
        return sql

    def _build(self, mask: tuple[bool, ...]) -> str:
        values: dict[str, str] = {}
        arrays: list[str] = []
        names: list[str] = []
        for number, ((name, pg_type), is_array) in enumerate(zip(self.columns, mask, strict=True), 1):
            if is_array:
                arrays.append(f"${number}::{pg_type}[]")
                names.append(name)
                values[name] = f"i.{name}"
            else:
                values[name] = f"${number}::{pg_type}"
        unnest = None
        if arrays:
            unnest = f"unnest({', '.join(arrays)}) WITH ORDINALITY AS i({', '.join(names)}, ord)"
        return self._render(values, unnest)

    @staticmethod
    def args(columns: Sequence[list[Any]], mask: tuple[bool, ...]) -> list[Any]:
        """The parameters: the whole list for an array column, its first value for a scalar one."""
        return [column if is_array else column[0] for column, is_array in zip(columns, mask, strict=True)]
