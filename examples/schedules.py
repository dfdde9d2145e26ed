"""Recurring tasks: an interval schedule that is paused, resumed and cancelled by its id."""

from __future__ import annotations

import time
from datetime import timedelta

from omniq import OmniQ

app = OmniQ()
runs: list[float] = []


@app.task
def heartbeat() -> int:
    runs.append(time.monotonic())
    return len(runs)


def main() -> None:
    with app:
        schedule_id = app.enqueue(heartbeat, interval=timedelta(seconds=0.2))
        with app.worker(concurrency=2):
            while len(runs) < 3:
                time.sleep(0.05)
            app.pause_schedule(schedule_id)
            print("paused after", len(runs), "runs; latest result:", app.get_result(schedule_id).result)
            app.resume_schedule(schedule_id)
            time.sleep(0.5)
            app.cancel_schedule(schedule_id)
        print("schedule:", app.get_schedule(schedule_id).status.value)


if __name__ == "__main__":
    main()
