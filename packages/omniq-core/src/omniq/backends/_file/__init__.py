"""Internals of the file backend (:mod:`omniq.backends.file`).

* :mod:`.layout`: every folder and file name, and how task files are named;
* :mod:`.store`: the two storage drivers (local directory, any fsspec URL),
  locks and in-process wake-ups;
* :mod:`.tasks`: the task queue's state machine over a store (synchronous);
* :mod:`.records`: results and events over a store (synchronous).

The public async classes in :mod:`omniq.backends.file` run these synchronous
operations in a worker thread, one thread hop per batch.
"""
