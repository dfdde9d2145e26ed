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
  those of its tasks that have dependants: one UPDATE takes one off each
  dependant's ``waiting`` per ended dependency, one DELETE drops their edges.
  A finish knows the flag from the lease SELECT it runs anyway, a cancel and
  a recovery from their UPDATE's ``RETURNING``; a purge looks the purged
  dependencies up from ``omniq_dependencies`` (empty without dependencies).

What a task without dependencies pays: nothing on enqueue (the same one
INSERT, ``waiting`` its column default), one more term in the claim's WHERE,
one more column in the finish's lease SELECT (0: no statement more), and one
more column returned by every task read.

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
#: one off each dependant's ``waiting`` per listed dependency it waits on; per dependant, whether it became
#: claimable (a cancelled or paused one at 0 wakes nobody). Parameters: updated_at, then the ids.
_RELEASE = (
    f"UPDATE {schema.TASKS} AS t SET waiting = max(t.waiting - d.n, 0), updated_at = ? "
    f"FROM (SELECT dependant_id, count(*) AS n FROM {schema.DEPENDENCIES} WHERE dependency_id IN {{ids}} "
    "GROUP BY dependant_id) AS d "
    "WHERE t.id = d.dependant_id AND t.waiting > 0 "
    "RETURNING waiting = 0 AND status = 'pending' AND paused = 0"  # RETURNING takes no alias
)
_DROP_EDGES = f"DELETE FROM {schema.DEPENDENCIES} WHERE dependency_id IN "
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
    ready = False
    for chunk in chunks(list(dict.fromkeys(ended))):
        ids = schema.placeholders(len(chunk))
        rows = conn.execute(_RELEASE.format(ids=ids), (now, *chunk)).fetchall()
        ready = ready or any(claimable for (claimable,) in rows)
        conn.execute(_DROP_EDGES + ids, chunk)
    return ready


def purged_dependencies(conn: Any, filters: str, params: Sequence[Any]) -> list[str]:
    """The ids of the tasks a purge with ``filters`` (`` AND ...`` clauses) is about to delete that some task waits on."""
    return [task_id for (task_id,) in conn.execute(_PURGED + filters, params)]
