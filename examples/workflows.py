"""Workflows: a chain that passes results along, a group, and a chord that gathers them.

Runs on the embedded default (SQLite, a file under ./.omniq), with a worker in the background.
"""

from __future__ import annotations

import omniq
from omniq import OmniQ, chain, chord, group

app = OmniQ()


@app.task
def fetch(page: int) -> list[int]:
    return [page * 10 + i for i in range(3)]


@app.task
def count(rows: list[int]) -> int:
    return len(rows)


@app.task
def total(counts: list[int]) -> int:
    return sum(counts)


@app.task
def notify(message: str) -> str:
    return f"{message} (workflow {omniq.current_task().workflow_id is not None})"


@app.task(max_retries=0)
def broken(rows: list[int]) -> int:
    raise ValueError("no rows today")


def main() -> None:
    with app:
        app.purge()
        with app.worker(concurrency=4):
            # fetch(1) -> count(rows): each result is the next task's first argument
            print("chain:", chain(fetch.s(1), count.s()).enqueue().get(timeout=60))
            # in parallel; the result is the list of results, in order
            print("group:", group(fetch.s(page) for page in range(3)).enqueue().get(timeout=60))
            # the callback receives the list of the group's results
            pages = chord(group(chain(fetch.s(p), count.s()) for p in range(5)), total.s())
            print("chord:", pages.enqueue().get(timeout=60))
            # .si(...): runs after its parent without receiving its result
            print("si:", chain(fetch.s(1), notify.si("fetched")).enqueue().get(timeout=60))
            # a failure fails what depends on it, naming the member that failed
            handle = chain(fetch.s(2), broken.s(), count.s()).enqueue()
            try:
                handle.get(timeout=60)
            except omniq.WorkflowFailed as exc:
                print("failed:", exc.error.type if exc.error else exc.status.value)


if __name__ == "__main__":
    main()
