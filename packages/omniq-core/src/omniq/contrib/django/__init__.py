"""Django's task framework on OmniQ (``omniq[django]``): Django 6's ``django.tasks``, or the django-tasks backport.

Settings::

    TASKS = {
        "default": {
            "BACKEND": "omniq.contrib.django.OmniQBackend",
            "QUEUES": ["default", "emails"],
            "OPTIONS": {"SETTINGS": {"backend": "sqlite", "base_dir": "/var/lib/myproject/omniq"}},
        }
    }

and a worker: ``DJANGO_SETTINGS_MODULE=myproject.settings omniq worker omniq.contrib.django:worker_app``.

How the two models meet:

* **One OmniQ task per Django task, named after it.** ``send_welcome.enqueue(7)``
  enqueues the OmniQ task ``myapp.tasks.send_welcome`` (Django's
  ``task.module_path``) with the arguments ``(7,)``, so the CLI, the
  dashboard, metrics and per-name rate limits see each task by its own name.
  Arguments (and return values) must be JSON data, as Django requires; they
  are checked at enqueue (a bad one raises there) and travel as OmniQ's
  serializer encodes them.
* **Which app.** ``OPTIONS["SETTINGS"]`` are OmniQ settings given in code,
  over ``OMNIQ_*`` and the YAML file (``Settings.load``); without them the
  backend is configured by the environment, like ``OmniQ.from_env()``. The web
  process and the worker read the same Django settings, so they agree. Each
  process enqueues through one ``OmniQ`` app per backend, made on first use.
* **Which worker.** ``worker_app`` calls ``django.setup()`` and returns a
  :class:`DjangoWorkerApp` consuming the backend's ``QUEUES`` (``-q`` narrows
  them; ``TASKS`` aliases other than ``default``: a module with
  ``app = worker_app("emails")``). It runs a Django task it has not seen only
  if the task's module belongs to an installed app (``INSTALLED_APPS``), so
  ``enqueue`` refuses a task from elsewhere; any other name is OmniQ's
  recorded ``UnknownTaskError`` error, never an import.
* **The mapping.** ``queue_name`` -> ``queue`` (validated against ``QUEUES``
  by Django); ``priority`` -> ``priority`` (both: higher runs first);
  ``run_after`` -> ``eta``; result id = OmniQ task id. OmniQ's PENDING is
  READY, RUNNING is RUNNING, SUCCEEDED is SUCCESSFUL, and FAILED, CANCELLED
  and EXPIRED are FAILED. ``errors`` holds the latest attempt's error (its
  exception's dotted class path and traceback), ``worker_ids`` one entry per
  attempt, ``return_value`` OmniQ's result.
* **Retries and the rest** are OmniQ's, from its settings: a failure is
  retried ``default_max_retries`` times (3) with backoff, the task READY in
  between; ``"SETTINGS": {"default_max_retries": 0}`` gives Django's
  run-once behaviour. Delivery is at least once, so tasks should be idempotent.
* **Async.** ``async def`` tasks run on the worker's event loop; ``aenqueue``,
  ``aget_result`` and ``arefresh`` run the blocking calls off the caller's loop.

OmniQ's ``eager`` setting does not run Django tasks (the enqueuing app has no
Django runner): use Django's ``ImmediateBackend`` in tests that want that.
"""

from omniq.contrib.django import _compat  # noqa: F401  # first: without Django, an ImportError naming the extra
from omniq.contrib.django.backend import OmniQBackend
from omniq.contrib.django.worker import DjangoWorkerApp, worker_app

__all__ = ["DjangoWorkerApp", "OmniQBackend", "worker_app"]
