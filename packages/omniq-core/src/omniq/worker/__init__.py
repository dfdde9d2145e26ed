"""Workers: the pool that claims and runs tasks, and the executors that run functions."""

from omniq.worker.pool import AsyncWorkerPool

__all__ = ["AsyncWorkerPool"]
