"""AsyncOmniQ: the same API for asyncio code, with a worker running beside the producer."""

from __future__ import annotations

import anyio

from omniq import AsyncOmniQ

app = AsyncOmniQ()


@app.task(timeout=10)
async def greet(name: str) -> str:
    await anyio.sleep(0.01)
    return f"hello {name}"


async def main() -> None:
    async with app:
        pool = app.worker(concurrency=10)
        async with anyio.create_task_group() as tg:
            tg.start_soon(pool.start)
            task_id = await greet.enqueue("world")
            result = await app.get_result(task_id, wait=True, timeout=10)
            print(result.result)
            await pool.stop()


if __name__ == "__main__":
    anyio.run(main)
