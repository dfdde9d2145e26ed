"""The pages and the actions: one handler each, rendered through autoescaped templates.

Every page has a ``live`` block: a page polled with the ``X-OmniQ-Live``
header gets that block only, which the page's script swaps in (short polling;
no connection is held open). Every action is a POST whose form carries the
session's CSRF token; after it the browser is sent back (303) to the page it
came from with a notice chosen from a fixed list, never text from the request.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlencode

import jinja2
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from omniq.app import AsyncOmniQ
from omniq.dashboard import data
from omniq.dashboard.security import CSRF_COOKIE, CSRF_FIELD, new_token, origin_matches, tokens_match

__all__ = ["LIVE_HEADER", "backend_error", "not_found", "routes"]

#: the header of a live refresh (the reply is the page's live block only).
LIVE_HEADER = "X-OmniQ-Live"

_NOTICES = {
    "retried": "Retried: the task is pending again with a fresh attempt budget.",
    "not-retried": "Not retried: the task is not failed, cancelled or expired, or its unique key is taken.",
    "cancelled": "Cancelled.",
    "not-cancelled": "Not cancelled: the task is unknown or already finished.",
    "paused": "Schedule paused.",
    "resumed": "Schedule resumed.",
    "schedule-cancelled": "Schedule cancelled.",
    "schedule-unchanged": "Nothing changed: the schedule is unknown or has ended.",
    "purged": "Purged.",
}

#: the largest action form accepted (the dashboard's own are a few hundred bytes).
_MAX_FORM = 64 * 1024

_SCHEDULE_ACTIONS = {
    "pause": ("pause_schedule", "paused"),
    "resume": ("resume_schedule", "resumed"),
    "cancel": ("cancel_schedule", "schedule-cancelled"),
}


def _omniq(request: Request) -> AsyncOmniQ:
    app: AsyncOmniQ = request.app.state.omniq
    return app


def _root(request: Request) -> str:
    return str(request.scope.get("root_path", "")).rstrip("/")


def render(request: Request, name: str, context: dict[str, Any], status_code: int = 200) -> Response:
    """``name`` with ``context``, or only its live block for a live refresh; the CSRF cookie set once."""
    templates: jinja2.Environment = request.app.state.templates
    config = request.app.state.config
    token = request.cookies.get(CSRF_COOKIE) or new_token()
    notice = _NOTICES.get(request.query_params.get("notice", ""))
    purged = request.query_params.get("purged", "")
    if request.query_params.get("notice") == "purged" and purged.isdigit():
        notice = f"Purged {int(purged)} task(s)."
    values = {
        "root": _root(request),
        "path": request.url.path,
        "read_only": config.read_only,
        "poll_ms": int(config.poll_seconds * 1000),
        "csrf_field": CSRF_FIELD,
        "csrf": token,
        "notice": notice,
        **context,
    }
    template = templates.get_template(name)
    if request.headers.get(LIVE_HEADER):
        body = "".join(template.blocks["live"](template.new_context(values)))
    else:
        body = template.render(values)
    response = HTMLResponse(body, status_code=status_code)
    if CSRF_COOKIE not in request.cookies:
        path = _root(request) or "/"
        response.set_cookie(CSRF_COOKIE, token, httponly=True, samesite="strict", path=path)
    return response


class Form:
    """An url-encoded form (what the dashboard's own forms send; no python-multipart needed)."""

    def __init__(self, body: bytes) -> None:
        self._fields = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)

    def get(self, name: str, default: str | None = None) -> str | None:
        """The field's first value."""
        values = self._fields.get(name)
        return values[0] if values else default

    def getlist(self, name: str) -> list[str]:
        """Every value of the field."""
        return self._fields.get(name, [])


async def _action_form(request: Request) -> Form:
    """The POST's form once it passes the checks (read-only, origin, CSRF token); else 403."""
    if request.app.state.config.read_only:
        raise HTTPException(403, "this dashboard is read-only")
    if not origin_matches(request.headers.get("origin"), request.headers.get("host")):
        raise HTTPException(403, "cross-origin request refused")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > _MAX_FORM:
            raise HTTPException(413, "form too large")
    form = Form(body)
    if not tokens_match(request.cookies.get(CSRF_COOKIE), form.get(CSRF_FIELD)):
        raise HTTPException(403, "missing or wrong CSRF token: reload the page and try again")
    return form


def _back(request: Request, path: str, **params: str) -> RedirectResponse:
    query = f"?{urlencode(params)}" if params else ""
    return RedirectResponse(f"{_root(request)}{path}{query}", status_code=303)


# -- pages -------------------------------------------------------------------------------------------


async def overview_page(request: Request) -> Response:
    """Per queue: counts by status, the oldest ready task's age, the last hour's throughput."""
    view = await data.overview(_omniq(request))
    return render(request, "overview.html", {"title": "Overview", "view": view, "statuses": data.STATUSES})


async def tasks_page(request: Request) -> Response:
    """Tasks, newest first, filtered by status, queue and name, paged by cursor."""
    filters = data.TaskFilters.from_query(request.query_params)
    page = await data.task_page(_omniq(request), filters)
    next_url = None
    if page.next_after is not None:
        next_url = f"{_root(request)}/tasks?{urlencode(filters.params(after=page.next_after))}"
    first_url = f"{_root(request)}/tasks?{urlencode(filters.params(after=''))}" if filters.after else None
    context = {"title": "Tasks", "page": page, "statuses": data.STATUSES, "next_url": next_url, "first_url": first_url}
    return render(request, "tasks.html", context)


async def task_page(request: Request) -> Response:
    """One task: arguments, result or error with traceback, attempts, the event timeline."""
    task_id = request.path_params["task_id"]
    detail = await data.task_detail(_omniq(request), task_id)
    if detail is None:
        return render(request, "missing.html", {"title": "Unknown task", "what": f"task {task_id}"}, 404)
    return render(request, "task.html", {"title": f"Task {task_id}", "detail": detail})


async def workers_page(request: Request) -> Response:
    """Live workers: host, pid, queues, pool, concurrency, version, heartbeat, counts."""
    found, shared = await data.workers(_omniq(request))
    return render(request, "workers.html", {"title": "Workers", "workers": found, "shared": shared})


async def schedules_page(request: Request) -> Response:
    """Recurring tasks, with Pause / Resume / Cancel."""
    found = await data.schedules(_omniq(request))
    return render(request, "schedules.html", {"title": "Schedules", "schedules": found})


def _purge_scope(source: Any) -> tuple[str, list[str]]:
    queue = str(source.get("queue", "") or "").strip()
    statuses = [value for value in source.getlist("status") if value in data.STATUSES]
    return queue, statuses


async def purge_page(request: Request) -> Response:
    """Choose what to purge (queue, statuses); the next step asks for confirmation."""
    queue, statuses = _purge_scope(request.query_params)
    stats = await _omniq(request).queue_stats()
    context = {"title": "Purge", "queue": queue, "chosen": statuses, "queues": [entry.queue for entry in stats]}
    return render(request, "purge.html", {**context, "statuses": data.STATUSES, "confirm": None})


# -- actions -----------------------------------------------------------------------------------------


async def retry_action(request: Request) -> Response:
    """Run a FAILED, CANCELLED or EXPIRED task again."""
    await _action_form(request)
    task_id = request.path_params["task_id"]
    done = await _omniq(request).retry(task_id)
    return _back(request, f"/tasks/{task_id}", notice="retried" if done else "not-retried")


async def cancel_action(request: Request) -> Response:
    """Cancel a pending or running task."""
    await _action_form(request)
    task_id = request.path_params["task_id"]
    done = await _omniq(request).cancel(task_id)
    return _back(request, f"/tasks/{task_id}", notice="cancelled" if done else "not-cancelled")


async def schedule_action(request: Request) -> Response:
    """Pause, resume or cancel a schedule."""
    await _action_form(request)
    schedule_id, action = request.path_params["schedule_id"], request.path_params["action"]
    if action not in _SCHEDULE_ACTIONS:
        raise HTTPException(404)
    method, notice = _SCHEDULE_ACTIONS[action]
    done = await getattr(_omniq(request), method)(schedule_id)
    return _back(request, "/schedules", notice=notice if done else "schedule-unchanged")


async def purge_action(request: Request) -> Response:
    """First POST: show what would go and ask again; the confirmed POST deletes."""
    form = await _action_form(request)
    queue, statuses = _purge_scope(form)
    app = _omniq(request)
    if form.get("confirmed") != "yes":
        count = await data.purge_count(app, queue or None, statuses)
        context = {"title": "Purge", "queue": queue, "chosen": statuses, "queues": [], "statuses": data.STATUSES}
        return render(request, "purge.html", {**context, "confirm": count})
    purged = await app.purge(queue=queue or None, statuses=statuses or None)
    return _back(request, "/", notice="purged", purged=str(purged))


async def not_found(request: Request, exc: Exception) -> Response:
    """An unknown page (404) as a page of the dashboard."""
    return render(request, "missing.html", {"title": "Not found", "what": f"page {request.url.path}"}, 404)


async def backend_error(request: Request, exc: Exception) -> Response:
    """An error from OmniQ (the backend away, say) as a page, with status 503; the page polls on."""
    context = {"title": "Backend error", "message": f"{type(exc).__name__}: {exc}"}
    return render(request, "failure.html", context, 503)


def routes() -> list[Route]:
    """Every page and action of the dashboard."""
    return [
        Route("/", overview_page, methods=["GET"]),
        Route("/tasks", tasks_page, methods=["GET"]),
        Route("/tasks/{task_id}", task_page, methods=["GET"]),
        Route("/tasks/{task_id}/retry", retry_action, methods=["POST"]),
        Route("/tasks/{task_id}/cancel", cancel_action, methods=["POST"]),
        Route("/workers", workers_page, methods=["GET"]),
        Route("/schedules", schedules_page, methods=["GET"]),
        Route("/schedules/{schedule_id}/{action}", schedule_action, methods=["POST"]),
        Route("/purge", purge_page, methods=["GET"]),
        Route("/purge", purge_action, methods=["POST"]),
    ]
