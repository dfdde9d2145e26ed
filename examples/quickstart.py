"""The README demo: enqueue tasks, run a worker, read the results.

Runs on the embedded default (SQLite, a file under ./.omniq) with no
configuration. Set OMNIQ_BACKEND=redis (and install omniq-redis) to run the
same code on Redis.
"""

from __future__ import annotations

from omniq import OmniQ

app = OmniQ()


@app.task
def add(a: int, b: int) -> int:
    return a + b


@app.task(max_retries=1)
def divide(a: float, b: float) -> float:
    return a / b


def main() -> None:
    with app:
        ids = [add.enqueue(i, i) for i in range(5)]
        bad = divide.enqueue(1, 0)
        app.run_worker(concurrency=4, burst=True)  # drain what is ready, then return

        print("backend:", app.settings.component("task_queue").type)
        print("sums:", [app.get_result(task_id).result for task_id in ids])
        failure = app.get_result(bad)
        print(f"divide(1, 0): {failure.status.value} after {failure.attempts} attempts ({failure.error.type})")


if __name__ == "__main__":
    main()
