"""Flask integration (``omniq-core[flask]``): a Flask extension binding a sync :class:`~omniq.OmniQ` to an app.

::

    from flask import Flask
    from omniq import OmniQ
    from omniq.contrib.flask import FlaskOmniQ, current_omniq

    omniq = OmniQ()
    app = Flask(__name__)
    FlaskOmniQ(app, omniq)  # or: ext = FlaskOmniQ(omniq=omniq), then ext.init_app(app) in your factory

    @app.post("/reports")
    def create_report() -> dict[str, str]:
        return {"task_id": current_omniq.enqueue("build_report")}

The OmniQ is kept at ``app.extensions["omniq"]``; :data:`current_omniq` (a
proxy) and :func:`get_omniq` reach it from a request or an app context.
Without ``omniq``, :meth:`FlaskOmniQ.init_app` builds one from the app's
``OMNIQ_*`` config keys (``OMNIQ_BACKEND = "redis"`` is the setting
``backend``), over the environment as :meth:`omniq.Settings.load` reads it.

Its life, decided once:

* **One OmniQ per process, shared by every request and thread.** Its calls
  are thread safe (each is handed to the OmniQ's own event-loop thread), so
  threaded servers need nothing more.
* **Connected lazily**, on first use (usually the first enqueue), not at
  ``init_app``: importing the app, ``flask routes`` or a CLI command opens
  no connection.
* **Never closed per request.** ``teardown_appcontext`` runs after every
  request; closing there would reopen the engine's connections (or the
  SQLite database) on the next one. The extension holds nothing per request
  or per app context, so it registers no teardown at all.
* **Closed at interpreter exit** (an OmniQ closes itself then: buffered
  events are flushed, connections closed), or earlier by
  :meth:`FlaskOmniQ.close` (tests, or a server's worker-exit hook).
* **Forking servers** (gunicorn ``--preload``): an OmniQ made before the
  ``fork()`` works in each child, which starts its own loop thread and opens
  its own connections at its first call (``omniq.sync``).

Tasks run in worker processes (``omniq worker yourapp:omniq``), which import
the same module: register tasks with explicit names (``@omniq.task(name=...)``)
so the web process and the workers agree on them.
"""

from __future__ import annotations

from typing import cast

try:
    from flask import Flask, current_app
    from werkzeug.local import LocalProxy
except ImportError as exc:  # pragma: no cover - the extra is not installed (tests/contrib checks the message)
    raise ImportError(f"omniq.contrib.flask needs Flask: pip install './packages/omniq-core[flask]' ({exc})") from exc

from omniq.config import Settings
from omniq.sync import OmniQ

__all__ = ["CONFIG_PREFIX", "EXTENSION_KEY", "FlaskOmniQ", "current_omniq", "get_omniq"]

#: the key of ``app.extensions`` that holds the OmniQ.
EXTENSION_KEY = "omniq"
#: Flask config keys with this prefix are settings (``OMNIQ_BACKEND`` -> ``backend``) when the OmniQ is built here.
CONFIG_PREFIX = "OMNIQ_"


class FlaskOmniQ:
    """Binds a sync :class:`~omniq.OmniQ` to Flask apps (the ``init_app`` pattern).

    Args:
        app: a Flask app to bind now (or call :meth:`init_app` later, in an app factory).
        omniq: the OmniQ to bind to every app; None builds one per app from its ``OMNIQ_*`` config.
    """

    def __init__(self, app: Flask | None = None, omniq: OmniQ | None = None) -> None:
        if omniq is not None and not isinstance(omniq, OmniQ):
            raise TypeError(
                f"expected an OmniQ, got {type(omniq).__name__}: Flask views are synchronous, "
                "bind omniq.OmniQ (an AsyncOmniQ is for async frameworks, see omniq.contrib.fastapi)"
            )
        self.omniq = omniq
        self._bound: list[OmniQ] = []
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> OmniQ:
        """Bind the OmniQ (given, or built from ``app.config``) to ``app``; return it. Connects nothing yet.

        Raises:
            RuntimeError: another OmniQ is bound to ``app`` already.
            omniq.ConfigurationError: an ``OMNIQ_*`` config key is not a setting, or its value is not valid.
        """
        omniq = self.omniq
        if omniq is None:
            omniq = OmniQ(Settings.load(**app.config.get_namespace(CONFIG_PREFIX)))
        bound = app.extensions.get(EXTENSION_KEY)
        if bound is not None and bound is not omniq:
            raise RuntimeError(f"an OmniQ is bound to the Flask app {app.name!r} already")
        app.extensions[EXTENSION_KEY] = omniq
        if omniq not in self._bound:
            self._bound.append(omniq)
        return omniq

    def close(self) -> None:
        """Close every OmniQ this extension bound; idempotent.

        A closed OmniQ is closed for good (its loop thread stops): call this when the process is done with it.
        """
        for omniq in self._bound:
            omniq.close()


def get_omniq(app: Flask | None = None) -> OmniQ:
    """The OmniQ bound to ``app`` (default: the current app, in a request or an app context).

    Raises:
        RuntimeError: no OmniQ is bound to the app (or, without ``app``, there is no app context).
    """
    app = app if app is not None else current_app
    omniq = app.extensions.get(EXTENSION_KEY)
    if omniq is None:
        raise RuntimeError(
            f"no OmniQ is bound to the Flask app {app.name!r}: FlaskOmniQ(app, omniq) or FlaskOmniQ(...).init_app(app)"
        )
    return cast("OmniQ", omniq)


#: the current app's OmniQ (:func:`get_omniq`), for use in a request or an app context.
current_omniq = cast("OmniQ", LocalProxy(get_omniq))
