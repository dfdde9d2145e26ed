"""The fuzz tests' shared budget: one environment variable sets how many inputs each test tries.

CI runs each fuzz test with its small default; ``OMNIQ_FUZZ_EXAMPLES`` raises it for a long
run (the commands are in each fuzz module's docstring).
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings


def fuzz_settings(default: int, *extra_checks: HealthCheck) -> settings:
    """Hypothesis settings with ``OMNIQ_FUZZ_EXAMPLES`` (else ``default``) examples per test.

    No deadline and no example database: a run is bounded by its count, and the inputs come
    fresh each time. Large and slow inputs are the point of fuzzing, not a health problem.
    """
    return settings(
        max_examples=int(os.environ.get("OMNIQ_FUZZ_EXAMPLES", str(default))),
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, *extra_checks],
    )
