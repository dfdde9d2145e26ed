"""``omniq worker APP --processes N``: one supervisor, N worker processes.

One worker process runs its tasks on one event loop, so it uses one core for
everything that is not the engine's own work. The supervisor starts N
ordinary worker processes (``omniq worker APP`` with the same options), and:

* **restarts a child that dies** (a crash, an OOM kill, ``kill -9``) after a
  short pause; tasks the dead child held come back after their lease expires,
  as with any killed worker;
* **forwards SIGTERM and SIGINT**, each once per signal received, to every
  child: the first asks for a graceful stop (finish what runs, release the
  rest), a second one makes the children release at once, exactly as for a
  single worker. Children run in their own process group, so a Ctrl-C on the
  terminal reaches them only through the supervisor, once;
* **gives up on a crash loop**: when children keep dying soon after they
  start (a broken deployment, an app that does not import), it stops the
  others and exits non-zero instead of restarting forever.

With ``--burst`` each child drains the ready tasks and exits; the supervisor
exits when all have, and does not restart children that ended cleanly.

The children are separate interpreters started with the supervisor's own
Python (not forks), so nothing the supervisor imported or opened leaks into
them; each child knows its slot from ``OMNIQ_WORKER_PROCESS`` (1..N).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import FrameType

__all__ = ["Supervisor", "resolve_processes"]

logger = logging.getLogger("omniq.worker")

#: a child that dies sooner than this after starting counts towards a crash loop.
MIN_UPTIME_SECONDS = 5.0
#: consecutive quick deaths (in any slot) after which the supervisor gives up.
MAX_QUICK_CRASHES = 5
#: pause before a dead child's slot is started again (doubles with each quick crash, up to 10 s).
RESTART_DELAY_SECONDS = 0.5
#: how often the supervisor looks at its children.
POLL_SECONDS = 0.1


def resolve_processes(value: str | int) -> int:
    """``--processes``: a positive count, or ``auto`` for the number of CPUs this process may use."""
    if isinstance(value, str) and value.strip().lower() == "auto":
        try:
            return max(len(os.sched_getaffinity(0)), 1)
        except AttributeError:  # not on Linux
            return os.cpu_count() or 1
    try:
        count = int(value)
    except (TypeError, ValueError):
        count = 0
    if count < 1 or count > 1024:
        raise ValueError(f"--processes must be a whole number from 1 to 1024 or 'auto', not {value!r}")
    return count


@dataclass
class _Child:
    slot: int
    process: subprocess.Popen[bytes]
    started: float = field(default_factory=time.monotonic)


class Supervisor:
    """Runs ``count`` worker processes of ``command`` until they stop; see the module docstring.

    Args:
        command: the child's argv (``[python, -m, omniq, worker, APP, ...]``).
        count: how many children run at once.
        burst: children exit by themselves once the queues are drained.
    """

    def __init__(
        self,
        command: Sequence[str],
        count: int,
        *,
        burst: bool = False,
        on_child_exit: Callable[[int], None] | None = None,
    ) -> None:
        self.command = list(command)
        self.on_child_exit = on_child_exit
        self.count = count
        self.burst = burst
        self._children: dict[int, _Child] = {}
        self._stopping = False
        self._signals: list[int] = []
        self._quick_crashes = 0
        self._restart_at: dict[int, float] = {}

    def run(self) -> int:
        """Start the children and supervise them; return the exit code for the command."""
        previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            for slot in range(1, self.count + 1):
                self._start(slot)
            return self._supervise()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self._kill_all()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._signals.append(signum)

    def _start(self, slot: int) -> None:
        env = {**os.environ, "OMNIQ_WORKER_PROCESS": str(slot)}
        process = subprocess.Popen(self.command, env=env, start_new_session=True)
        self._children[slot] = _Child(slot, process)
        logger.info("worker process %d started (pid %d)", slot, process.pid)

    def _supervise(self) -> int:
        failed = False
        while self._children or (self._restart_at and not self._stopping):
            self._forward_signals()
            for slot, child in list(self._children.items()):
                code = child.process.poll()
                if code is None:
                    continue
                del self._children[slot]
                if self.on_child_exit is not None:  # e.g. Prometheus: its live gauges leave the sum
                    self.on_child_exit(child.process.pid)
                if not self._ended(child, code):
                    failed = True
            if self._quick_crashes >= MAX_QUICK_CRASHES and not self._stopping:
                logger.error(
                    "worker processes keep crashing (%d died within %.0f s of starting): stopping",
                    self._quick_crashes,
                    MIN_UPTIME_SECONDS,
                )
                self._stop_all(signal.SIGTERM)
                failed = True
            self._restart_due()
            time.sleep(POLL_SECONDS)
        return 1 if failed else 0

    def _ended(self, child: _Child, code: int) -> bool:
        """Handle a child that exited; False when its exit counts as a failure of the command."""
        pid = child.process.pid
        if self._stopping:
            logger.info("worker process %d (pid %d) stopped with code %d", child.slot, pid, code)
            return code == 0
        if code == 0 and self.burst:
            logger.info("worker process %d (pid %d) finished its burst", child.slot, pid)
            return True
        how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
        quick = time.monotonic() - child.started < MIN_UPTIME_SECONDS
        self._quick_crashes = self._quick_crashes + 1 if quick else 0
        delay = min(RESTART_DELAY_SECONDS * 2 ** max(self._quick_crashes - 1, 0), 10.0)
        logger.warning("worker process %d (pid %d) %s: restarting it in %.1f s", child.slot, pid, how, delay)
        self._restart_at[child.slot] = time.monotonic() + delay
        return True

    def _restart_due(self) -> None:
        if self._stopping:
            self._restart_at.clear()
            return
        now = time.monotonic()
        for slot, when in list(self._restart_at.items()):
            if when <= now:
                del self._restart_at[slot]
                self._start(slot)

    def _forward_signals(self) -> None:
        while self._signals:
            signum = self._signals.pop(0)
            if not self._stopping:
                logger.info("stopping %d worker process(es) (%s)", len(self._children), signal.Signals(signum).name)
            self._stop_all(signum)

    def _stop_all(self, signum: int) -> None:
        self._stopping = True
        for child in self._children.values():
            if child.process.poll() is None:
                child.process.send_signal(signum)

    def _kill_all(self) -> None:
        """On the way out (an exception in the supervisor): no child outlives it."""
        for child in self._children.values():
            if child.process.poll() is None:
                child.process.kill()
                child.process.wait()
