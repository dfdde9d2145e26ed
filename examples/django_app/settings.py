"""The example project's settings: ``TASKS`` hands Django's tasks to OmniQ.

OmniQ's own settings come from ``OPTIONS["SETTINGS"]``, over the
``OMNIQ_*`` variables (``OMNIQ_BASE_DIR`` says where the SQLite files go).
"""

import importlib.util

SECRET_KEY = "example-only-not-secret"
DEBUG = True
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = "examples.django_app.urls"
USE_TZ = True
DATABASES: dict[str, dict[str, str]] = {}  # the tasks need none: OmniQ keeps its own store

INSTALLED_APPS = ["examples.django_app"]  # workers import tasks only from installed apps
if importlib.util.find_spec("django.tasks") is None:  # Django < 6: the django-tasks backport
    INSTALLED_APPS.append("django_tasks")

# The worker logs each task's start and finish, as Django's task signals report them (task_started,
# task_finished): Django's logger is "django.tasks" in Django 6, "django_tasks" in the backport.
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {
        name: {"handlers": ["console"], "level": "INFO", "propagate": False}
        for name in ("django.tasks", "django_tasks")
    },
}

TASKS = {
    "default": {
        "BACKEND": "omniq.contrib.django.OmniQBackend",
        "QUEUES": ["default", "emails"],
        "OPTIONS": {
            # one retry, soon after a failure (OmniQ's defaults: 3 retries, backoff from 1 s)
            "SETTINGS": {"default_max_retries": 1, "retry_backoff": 0.2},
        },
    }
}
