"""Optional integrations: lifecycle plugins that are off until enabled, and web-framework glue.

* :mod:`omniq.contrib.prometheus` (``omniq-core[prometheus]``): Prometheus metrics;
  ``omniq worker APP --metrics-port P`` or ``omniq.contrib.prometheus.enable()``.
* :mod:`omniq.contrib.otel` (``omniq-core[otel]``): OpenTelemetry tracing across
  producer and worker; ``omniq.contrib.otel.enable()``.
* :mod:`omniq.contrib.fastapi` (``omniq-core[fastapi]``): a lifespan that connects an
  ``AsyncOmniQ`` (optionally running a worker in the server), and a dependency.
* :mod:`omniq.contrib.flask` (``omniq-core[flask]``): ``FlaskOmniQ``, binding a sync ``OmniQ``
  to a Flask app, and ``current_omniq``.
* :mod:`omniq.contrib.django` (``omniq-core[django]``): ``OmniQBackend``, a backend for
  Django's task framework, and ``worker_app`` for ``omniq worker``.

Nothing here is imported or registered unless asked for, so a disabled
integration costs nothing on the hot path.
"""
