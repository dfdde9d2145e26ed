"""Several real processes on one directory: exclusive claims, killed writers, dead workers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from typing import Any

import anyio
import pytest

from omniq.backends.file import FileTaskQueue, layout
from omniq.models import TaskStatus
from omniq.testing import make_task

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

CLAIMER = textwrap.dedent(
    """
    import json, os, sys, time
    import anyio
    from omniq.backends.file import FileTaskQueue
    from omniq.models import Outcome, OutcomeKind, TaskStatus

    async def main(root, out, start):
        async with FileTaskQueue(root) as queue:
            while time.time() < start:  # line up with the other processes to maximise contention
                await anyio.sleep(0.005)
            got = []
            while True:
                tasks = await queue.claim_ready(["default"], 3, lease=30, worker_id=str(os.getpid()))
                if not tasks:
                    if await queue.count(status=TaskStatus.PENDING) == 0:
                        break
                    continue
                got += [task.id for task in tasks]
                outcomes = [Outcome(task_id=t.id, lease_token=t.lease_token, kind=OutcomeKind.SUCCEEDED) for t in tasks]
                assert all(await queue.finish(outcomes))
        with open(out, "w") as handle:
            json.dump(got, handle)

    anyio.run(main, sys.argv[1], sys.argv[2], float(sys.argv[3]))
    """
)

HOLDER = textwrap.dedent(
    """
    import sys, time
    import anyio
    from omniq.backends.file import FileTaskQueue

    async def main(root):
        async with FileTaskQueue(root) as queue:
            tasks = await queue.claim_ready(["default"], 100, lease=1.0, worker_id="doomed")
            print(len(tasks), flush=True)
            await anyio.sleep(3600)  # killed while holding the leases, never heartbeats

    anyio.run(main, sys.argv[1])
    """
)

WRITER = textwrap.dedent(
    """
    import sys
    import anyio
    from omniq.backends.file import FileTaskQueue
    from omniq.models import Task, new_id

    async def main(root):
        async with FileTaskQueue(root) as queue:
            print("ready", flush=True)
            while True:
                await queue.enqueue_many([Task(id=new_id(), func="f", payload=b"x" * 50_000) for _ in range(20)])

    anyio.run(main, sys.argv[1])
    """
)


def _spawn(tmp_path, name: str, source: str, *args: str, output: bool = False) -> subprocess.Popen[str]:
    script = tmp_path / f"{name}.py"
    if not script.exists():  # rewriting it would truncate it under a process that is still reading it
        script.write_text(source)
    stdout = subprocess.PIPE if output else subprocess.DEVNULL
    return subprocess.Popen([sys.executable, str(script), *args], stdout=stdout, text=True)


async def test_processes_claiming_from_one_directory_never_share_a_task(tmp_path):
    root = str(tmp_path / "files")
    tasks = [make_task() for _ in range(300)]
    async with FileTaskQueue(root) as queue:
        await queue.enqueue_many(tasks)
    start = time.time() + 2.0
    outputs = [tmp_path / f"claimed-{i}.json" for i in range(4)]
    procs = [_spawn(tmp_path, "claimer", CLAIMER, root, str(out), str(start)) for out in outputs]
    for proc in procs:
        assert proc.wait(timeout=60) == 0

    claimed = [task_id for out in outputs for task_id in json.loads(out.read_text())]
    assert len(claimed) == len(tasks)  # nobody ran a task twice
    assert set(claimed) == {t.id for t in tasks}  # and every task ran
    async with FileTaskQueue(root) as queue:
        assert await queue.count(status=TaskStatus.SUCCEEDED) == len(tasks)


async def test_a_killed_workers_tasks_run_again_after_their_lease(tmp_path):
    root = str(tmp_path / "files")
    tasks = [make_task(max_retries=1) for _ in range(5)]
    async with FileTaskQueue(root) as queue:
        await queue.enqueue_many(tasks)
        with _spawn(tmp_path, "holder", HOLDER, root, output=True) as proc:
            assert proc.stdout is not None
            line = await anyio.to_thread.run_sync(proc.stdout.readline)
            assert line.strip() == "5"
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
        assert await queue.claim_ready(["default"], 10, lease=30, worker_id="w") == []

        recovered: list[Any] = []
        with anyio.fail_after(10):
            while len(recovered) < len(tasks):
                recovered += await queue.recover()
                await anyio.sleep(0.1)
        assert {t.id for t in recovered} == {t.id for t in tasks}
        assert {t.status for t in recovered} == {TaskStatus.PENDING}
        again = await queue.claim_ready(["default"], 10, lease=30, worker_id="w")
        assert sorted(t.id for t in again) == sorted(t.id for t in tasks)
        assert {t.attempts for t in again} == {2}


async def test_a_writer_killed_mid_write_leaves_only_whole_tasks(tmp_path):
    root = tmp_path / "files"
    with _spawn(tmp_path, "writer", WRITER, str(root), output=True) as proc:
        assert proc.stdout is not None
        assert (await anyio.to_thread.run_sync(proc.stdout.readline)).strip() == "ready"
        await anyio.sleep(0.5)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)

    async with FileTaskQueue(str(root)) as queue:
        visible = len(os.listdir(root / layout.queue_dir("default")))
        assert visible > 0
        assert await queue.count(status=TaskStatus.PENDING) == visible
        claimed = await queue.claim_ready(["default"], visible + 10, lease=30, worker_id="w")
    assert len(claimed) == visible
    assert all(task.payload == b"x" * 50_000 for task in claimed)
    assert os.listdir(root / layout.CORRUPT_DIR) == []
