"""A sync ``OmniQ`` built before ``fork()`` works in the child (a pre-forking web server's workers)."""

from __future__ import annotations

import multiprocessing
import sys
from pathlib import Path
from typing import Any

import pytest

from omniq import OmniQ

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="fork")


def add(a: int, b: int) -> int:
    return a + b


def _child(app: OmniQ, out: Any) -> None:
    try:
        task_id = app.enqueue(add, 2, 3)
        out.send(("ok", task_id, app.count_tasks()))
    except BaseException as exc:  # reported to the parent, which fails the test with it
        out.send(("error", repr(exc), 0))


def test_a_forked_child_uses_the_parents_sync_app(tmp_path: Path) -> None:
    with OmniQ(backend="sqlite", url=f"sqlite:///{tmp_path / 'fork.db'}") as app:
        first = app.enqueue(add, 1, 1)  # the parent's loop thread and connections exist before the fork
        context = multiprocessing.get_context("fork")
        receiver, sender = context.Pipe(duplex=False)
        child = context.Process(target=_child, args=(app, sender))
        with pytest.warns(DeprecationWarning) if sys.version_info >= (3, 12) else _nothing():
            child.start()  # 3.12+ warns about forking a multi-threaded process: this test is about that case
        assert receiver.poll(60), "the child did not answer"
        status, value, count = receiver.recv()
        child.join(60)
        assert status == "ok", value
        assert child.exitcode == 0
        assert count == 2
        # the parent's app is untouched by the child's
        assert app.get_task(first) is not None and app.get_task(value) is not None
        assert app.count_tasks() == 2


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None
