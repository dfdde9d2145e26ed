"""Flow control: a concurrency limit per customer, a rate limit, and a paused queue.

Runs on the embedded default (SQLite, a file under ./.omniq). The limits are held by
the engine, so they hold however many worker processes (and, on Redis, PostgreSQL or
NATS, hosts) share it.
"""

from __future__ import annotations

import threading
import time

from omniq import OmniQ

app = OmniQ()
lock = threading.Lock()
running: dict[str, int] = {}
most: dict[str, int] = {}


@app.task(concurrency_limit=2, limit_key=lambda customer, report: customer)
def export(customer: str, report: int) -> int:
    """At most two exports per customer at once; customers do not wait for each other."""
    with lock:
        running[customer] = running.get(customer, 0) + 1
        most[customer] = max(most.get(customer, 0), running[customer])
    time.sleep(0.05)
    with lock:
        running[customer] -= 1
    return report


@app.task(rate_limit="20/s", rate_burst=5)
def call_api(n: int) -> float:
    """At most 20 calls a second (5 at once after a quiet spell), across every worker."""
    return time.time()


def main() -> None:
    with app:
        app.purge()
        exports = [
            task_id
            for customer in ("acme", "globex")
            for task_id in app.enqueue_many(export, [(customer, report) for report in range(6)])
        ]
        calls = app.enqueue_many(call_api, [(n,) for n in range(25)])
        app.pause_queue("reports")  # claims skip it until it is resumed
        late = app.enqueue(export, "acme", 99, queue="reports")

        # A worker in the background (a rate-limited task waits for its token, so a burst worker,
        # which drains what is ready now, would leave the later ones for the next run).
        with app.worker(concurrency=8, queues=["default", "reports"]):
            for task_id in exports:
                app.get_result(task_id, wait=True, timeout=60)
            times = sorted(app.get_result(task_id, wait=True, timeout=60).result for task_id in calls)
            print("most exports at once per customer:", dict(sorted(most.items())))
            print(f"25 API calls took at least 1 s at 20/s after a burst of 5: {times[-1] - times[0] >= 0.95}")
            print("paused queue:", app.paused_queues(), "->", app.get_task(late).status.value)
            app.resume_queue("reports")
            print("after resume_queue:", app.get_result(late, wait=True, timeout=60).status.value)


if __name__ == "__main__":
    main()
