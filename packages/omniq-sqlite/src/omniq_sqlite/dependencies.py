"""Dependencies in the SQLite engine: a dependant is stored waiting and made ready by the step that ends its last dependency.

The rules are :meth:`omniq.base.BaseTaskQueue.enqueue`'s
(``Capability.DEPENDENCIES``), applied inside the write transaction
(``BEGIN IMMEDIATE``) of the step itself, which already serializes every
writer of the file, in every process:

* Enqueue (:func:`insert_dependant`, only for a task with ``depends_on``):
  one UPDATE flags the listed dependencies that are stored and not terminal
  (``dependants = 1``) and returns them; their number is the new task's
  ``waiting``, stored by its INSERT; one row per such dependency goes to
  ``omniq_dependencies`` (dependency, dependant). Dependencies inserted
  earlier in the same batch are rows by then, so they count.
* The claim never sees a waiting task: the claim index is partial on
  ``waiting = 0`` (see :func:`omniq_sqlite.schema.claim_sql`), so a waiting
  row is not in it, and enters it, at its place (priority, then ``ready_at``:
  its eta or ``created_at``), when ``waiting`` reaches 0.
* Every step that ends a task (finish with a terminal outcome, cancel, a
  recovery that fails it) or deletes it (purge) calls :func:`release` for
  those of its tasks that have dependants: one DELETE drops their edges, and
  a dependant left without edges stops waiting (``waiting = 0``, one UPDATE of
  its row at its last end). The edges left are the count ``Task.waiting``
  reports (``schema.TASK_COLUMNS``), so an end that is not the last writes no
  dependant row: a chord's callback lists thousands of ids in ``depends_on``,
  and SQLite rewrites a whole row to change one column (measured: the 10,000
  finishes of a chord's members took 1.7x a plain drain when each batch
  updated the callback's row, about 1.1x without). A finish knows the flag from the lease SELECT it runs anyway, a cancel and
  a recovery from their UPDATE's ``RETURNING``; a purge looks the purged
  dependencies up from ``omniq_dependencies`` (empty without dependencies).

What a task without dependencies pays: nothing on enqueue (the same one
INSERT, ``waiting`` its column default), one more term in the claim's WHERE,
one more column in the finish's lease SELECT (0: no statement more), and one
more column returned by every task read (a CASE that reads no edge when the
task is not waiting).

A dependant that ends first (cancelled while waiting) keeps being counted
down, as in the memory engine: should an operator retry it, it waits for
what is still running. Edges of a deleted dependant go when its dependency
ends (the UPDATE finds no row).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec

from omniq_sqlite import schema
from omniq_sqlite.records import DEPENDS_ON, chunks

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["insert_dependant", "purged_dependencies", "release"]

_decode_ids = msgspec.msgpack.Decoder(tuple[str, ...]).decode
#: the listed dependencies that are stored and not terminal, flagged as having a dependant (parameters: their ids).
_REGISTER = f"UPDATE {schema.TASKS} SET dependants = 1 WHERE status IN ('pending', 'running') AND id IN "
_ADD_EDGE = f"INSERT OR IGNORE INTO {schema.DEPENDENCIES} (dependency_id, dependant_id) VALUES (?, ?)"
#: the tasks waiting on the listed ones (parameters: their ids).
_DEPENDANTS = f"SELECT DISTINCT dependant_id FROM {schema.DEPENDENCIES} WHERE dependency_id IN "
_DROP_EDGES = f"DELETE FROM {schema.DEPENDENCIES} WHERE dependency_id IN "
#: the listed dependants left without edges stop waiting; per one, whether it became claimable (a cancelled or
#: paused one wakes nobody). Parameters: updated_at, then the ids. Only this write touches a dependant's row:
#: its ``depends_on`` may be thousands of ids (a chord's callback), which a row update rewrites whole.
_READY = (
    f"UPDATE {schema.TASKS} SET waiting = 0, updated_at = ? WHERE waiting > 0 "
    f"AND NOT EXISTS (SELECT 1 FROM {schema.DEPENDENCIES} AS e WHERE e.dependant_id = id) AND id IN {{ids}} "
    "RETURNING status = 'pending' AND paused = 0"
)
#: the tasks a purge deletes that some task waits on: driven by the edges, so O(edges), nothing without any.
_PURGED = f"SELECT id FROM {schema.TASKS} WHERE id IN (SELECT dependency_id FROM {schema.DEPENDENCIES})"


def insert_dependant(conn: Any, row: tuple[Any, ...]) -> int:
    """Insert the task of ``row`` (``records.task_params`` of a task with ``depends_on``) waiting on its live dependencies.

    Returns:
        the INSERT's rowcount (0: an existing id or a held unique key, and no edge was added).
    """
    live: list[str] = []
    for chunk in chunks(list(dict.fromkeys(_decode_ids(row[DEPENDS_ON])))):
        live.extend(
            found for (found,) in conn.execute(_REGISTER + schema.placeholders(len(chunk)) + " RETURNING id", chunk)
        )
    # A dependency flagged for a task the INSERT then ignores costs its end one lookup that finds nothing.
    inserted: int = conn.execute(schema.INSERT_WAITING_TASK, (*row, len(live))).rowcount
    if inserted and live:
        conn.executemany(_ADD_EDGE, [(dependency, row[0]) for dependency in live])
    return inserted


def release(conn: Any, ended: Sequence[str], now: float) -> bool:
    """Count ``ended`` (tasks just made terminal, or deleted) off their dependants' ``waiting``; forget their edges.

    Returns:
        whether a dependant became claimable (the caller wakes waiting workers as after an enqueue).
    """
    dependants: dict[str, None] = {}
    for chunk in chunks(list(dict.fromkeys(ended))):
        ids = schema.placeholders(len(chunk))
        dependants.update((dependant, None) for (dependant,) in conn.execute(_DEPENDANTS + ids, chunk))
        conn.execute(_DROP_EDGES + ids, chunk)
    ready = False
    for chunk in chunks(list(dependants)):
        rows = conn.execute(_READY.format(ids=schema.placeholders(len(chunk))), (now, *chunk)).fetchall()
        ready = ready or any(claimable for (claimable,) in rows)
    return ready


def purged_dependencies(conn: Any, filters: str, params: Sequence[Any]) -> list[str]:
    """The ids of the tasks a purge with ``filters`` (`` AND ...`` clauses) is about to delete that some task waits on."""
    return [task_id for (task_id,) in conn.execute(_PURGED + filters, params)]
