"""The example's tasks: Django's ``@task``, run by ``omniq worker omniq.contrib.django:worker_app``."""

import asyncio
import importlib.util

if importlib.util.find_spec("django.tasks") is not None:  # Django 6
    from django.tasks import TaskContext, task
else:  # the django-tasks backport
    from django_tasks import TaskContext, task


class PaymentDeclined(Exception):
    """Raised by :func:`charge`."""


@task
def add(a: int, b: int) -> int:
    return a + b


@task(queue_name="emails", priority=10)
def send_welcome(user_id: int, *, greeting: str = "Welcome") -> dict[str, object]:
    return {"to": user_id, "text": f"{greeting}, user {user_id}!"}


@task
async def slow_hello(name: str, seconds: float = 0.1) -> str:
    await asyncio.sleep(seconds)
    return f"hello {name}"


@task
def charge(amount: int) -> None:
    raise PaymentDeclined(f"card declined for {amount}")


@task(takes_context=True)
def attempt(context: TaskContext) -> dict[str, object]:
    return {"attempt": context.attempt, "id": context.task_result.id}
