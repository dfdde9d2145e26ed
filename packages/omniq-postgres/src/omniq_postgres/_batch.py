"""Batch parameters: a column whose value is the same on every row goes in as one scalar.

A bulk statement takes one array per column and ``unnest``s them. Arrays are
costly at both ends: asyncpg encodes every element and the server decodes
every element again before the statement runs. In a typical batch most
columns hold one value on every row (one function, one queue, the same
options, NULL for the unset ones), so those go in as a single scalar and
only the columns that differ per row travel as arrays: an ``enqueue_many``
with shared options sends 2 or 3 arrays (id, created_at, payload when the
arguments differ) instead of 18, which halves the statement's time.

A text array (the ids of a bulk enqueue, the task ids of an event batch)
goes in as one string, its values joined by a separator the server splits
on (``string_to_array``) whenever that splits back into exactly the values:
asyncpg encodes a text[] element by element in Python (~4 ms per 10k ids,
measured), while a join is one C call and ``string_to_array`` is cheaper
for the server than decoding the array.

Each combination of scalar, array and packed columns is its own statement
text, built once and cached (asyncpg prepares each text once per
connection); real workloads use a handful of combinations.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

__all__ = ["ARRAY", "PACKED", "SCALAR", "BatchColumns", "uniform_mask"]

#: rendered statements kept per column list.
_MAX_CACHED = 256

#: how a column travels: one value for every row, an array, or a text array packed into one string.
SCALAR, ARRAY, PACKED = 0, 1, 2
#: the packed separator (ASCII unit separator): a value containing it is sent as a plain array.
_SEP = "\x1f"


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
            a row (``$3::text`` or ``i.func``; an array column's whole array is
            ``values[name + "[]"]``) and ``unnest`` is the FROM item
            (``unnest(...) WITH ORDINALITY AS i(..., ord)``) or None when every
            column is a scalar (a single row).
    """

    def __init__(self, columns: Sequence[tuple[str, str]], render: Callable[[dict[str, str], str | None], str]) -> None:
        self.columns = tuple(columns)
        self._render = render
        self._cache: dict[tuple[int, ...], str] = {}

    def sql(self, kinds: tuple[int, ...]) -> str:
        """The statement where ``kinds[k]`` says how column k travels (SCALAR, ARRAY or PACKED).

        A mask of bools (True: an array) works too.
        """
        sql = self._cache.get(kinds)
        if sql is None:
            if len(self._cache) >= _MAX_CACHED:  # a bound, not an LRU: real workloads use a handful
                self._cache.clear()
            sql = self._cache[kinds] = self._build(kinds)
        return sql

    def bind(self, columns: Sequence[list[Any]], mask: tuple[bool, ...]) -> tuple[str, list[Any]]:
        """The statement and its parameters, text arrays packed where they split back exactly.

        Args:
            columns: the column value lists, all of one length.
            mask: from :func:`uniform_mask` (True: the column's values differ).
        """
        kinds: list[int] = []
        args: list[Any] = []
        for (_, pg_type), column, is_array in zip(self.columns, columns, mask, strict=True):
            if not is_array:
                kinds.append(SCALAR)
                args.append(column[0])
            elif pg_type == "text" and (packed := _packed(column)) is not None:
                kinds.append(PACKED)
                args.append(packed)
            else:
                kinds.append(ARRAY)
                args.append(column)
        return self.sql(tuple(kinds)), args

    def _build(self, kinds: tuple[int, ...]) -> str:
        values: dict[str, str] = {}
        arrays: list[str] = []
        names: list[str] = []
        for number, ((name, pg_type), kind) in enumerate(zip(self.columns, kinds, strict=True), 1):
            if kind == SCALAR:
                values[name] = f"${number}::{pg_type}"
                continue
            array = f"string_to_array(${number}::text, E'\\x1f')" if kind == PACKED else f"${number}::{pg_type}[]"
            arrays.append(array)
            names.append(name)
            values[name] = f"i.{name}"
            values[f"{name}[]"] = array  # the whole column, for a statement that needs it apart
        unnest = None
        if arrays:
            unnest = f"unnest({', '.join(arrays)}) WITH ORDINALITY AS i({', '.join(names)}, ord)"
        return self._render(values, unnest)

    @staticmethod
    def args(columns: Sequence[list[Any]], mask: tuple[bool, ...]) -> list[Any]:
        """The parameters: the whole list for an array column, its first value for a scalar one."""
        return [column if is_array else column[0] for column, is_array in zip(columns, mask, strict=True)]


def _packed(values: list[Any]) -> str | None:
    """The values joined by the separator, or None when they would not split back into themselves."""
    try:
        joined = _SEP.join(values)
    except TypeError:  # a NULL (None) among them: string_to_array has no way to say it
        return None
    return joined if joined.count(_SEP) == len(values) - 1 else None
