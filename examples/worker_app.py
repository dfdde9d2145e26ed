"""An app module for the CLI: `omniq worker examples.worker_app:app --burst`.

Producers import the same module and enqueue; workers run in other processes.
"""

from __future__ import annotations

from omniq import OmniQ

app = OmniQ()


@app.task(name="square")  # an explicit name is the same in producers and workers, however they start
def square(x: int) -> int:
    return x * x


if __name__ == "__main__":
    with app:
        ids = [square.enqueue(i) for i in range(10)]
        print("enqueued", len(ids), "tasks; run: omniq worker examples.worker_app:app --burst")
