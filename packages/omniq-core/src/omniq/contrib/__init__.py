"""Optional integrations, each an ordinary lifecycle plugin that is off until enabled.

* :mod:`omniq.contrib.prometheus` (``omniq[prometheus]``): Prometheus metrics;
  ``omniq worker APP --metrics-port P`` or ``omniq.contrib.prometheus.enable()``.
* :mod:`omniq.contrib.otel` (``omniq[otel]``): OpenTelemetry tracing across
  producer and worker; ``omniq.contrib.otel.enable()``.

Nothing here is imported or registered unless asked for, so a disabled
integration costs nothing on the hot path.
"""
