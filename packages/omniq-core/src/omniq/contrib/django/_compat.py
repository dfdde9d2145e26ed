"""Django's task API, from Django itself (6.0+: ``django.tasks``) or from the django-tasks backport.

Both lay it out the same way; only the root differs, and:

* one exception's name: ``InvalidTask`` in Django, ``InvalidTaskError`` in
  the backport (``InvalidTask`` here is whichever there is);
* ``normalize_json``: ``django.utils.json`` in Django, ``django_tasks.utils``
  in the backport;
* the logger Django's signal receivers log a task's start and finish to:
  ``django.tasks`` (under ``django``, so Django's default ``DEBUG`` console
  shows it) in Django, ``django_tasks`` in the backport.

When both are installed (Django 6 with the backport left over), Django's own
wins: the backend is a ``django.tasks`` backend, and the backport's ``@task``
makes its tasks through the backend's ``task_class`` (``django.tasks.Task``).
Every name is looked up at run time, so this module imports on any Python and
the types stay ``Any``: Django ships no type information, and which of the two
is installed differs between Pythons (Django 6 needs Python 3.12).
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

INSTALL_HINT = (
    "omniq.contrib.django needs Django's task API: Django 6.0+ (django.tasks), or Django 4.2+ with the "
    "django-tasks backport: pip install './packages/omniq-core[django]' (or pip install django django-tasks)"
)


def _root() -> str:
    """``django.tasks`` when Django has it, else ``django_tasks``; ImportError naming the extra if neither."""
    try:
        importlib.import_module("django")
    except ImportError:
        raise ImportError(INSTALL_HINT) from None
    for root in ("django.tasks", "django_tasks"):
        try:
            importlib.import_module(root)
        except ImportError:
            continue
        return root
    raise ImportError(INSTALL_HINT)


ROOT = _root()
_BACKPORT = ROOT == "django_tasks"


def _module(name: str) -> ModuleType:
    return importlib.import_module(f"{ROOT}.{name}" if name else ROOT)


_api, _base, _backends, _exceptions, _signals = (
    _module(name) for name in ("", "base", "backends.base", "exceptions", "signals")
)

BaseTaskBackend: Any = _backends.BaseTaskBackend
Task: Any = _base.Task
TaskContext: Any = _base.TaskContext
TaskError: Any = _base.TaskError
TaskResult: Any = _base.TaskResult
TaskResultStatus: Any = _base.TaskResultStatus
TaskResultDoesNotExist: Any = _exceptions.TaskResultDoesNotExist
TaskResultMismatch: Any = _exceptions.TaskResultMismatch  # Task.get_result() of another task's result id
DEFAULT_TASK_BACKEND_ALIAS: str = _base.DEFAULT_TASK_BACKEND_ALIAS
task_backends: Any = _api.task_backends
task_enqueued: Any = _signals.task_enqueued
task_started: Any = getattr(_signals, "task_started", None)  # not in every release
task_finished: Any = _signals.task_finished
normalize_json: Any = importlib.import_module("django_tasks.utils" if _BACKPORT else "django.utils.json").normalize_json
ImproperlyConfigured: Any = importlib.import_module("django.core.exceptions").ImproperlyConfigured
InvalidTask: Any = getattr(_exceptions, "InvalidTask", None) or _exceptions.InvalidTaskError
sync_to_async: Any = importlib.import_module("asgiref.sync").sync_to_async
timezone: Any = importlib.import_module("django.utils.timezone")
