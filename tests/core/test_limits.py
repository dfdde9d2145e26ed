"""Durations and sizes have bounds, checked when settings load and again at enqueue (issue 21).

A value that passes validation must not make a worker claim and release the
same task forever: a result TTL past year 9999 made every finished task fail
to record its result (and run again), a ``nan`` lease made every claim fail,
and an enormous task TTL made enqueue raise a raw OverflowError.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from omniq import ConfigurationError, TaskStatus
from omniq._limits import MAX_DURATION, MAX_PAYLOAD_SIZE, MAX_RETRIES, MAX_WORKERS, PRIORITY_MAX, PRIORITY_MIN
from omniq.config import Settings

TEN_YEARS = 10 * 365.25 * 86400


def test_the_documented_maxima() -> None:
    assert MAX_DURATION == TEN_YEARS
    assert (PRIORITY_MIN, PRIORITY_MAX) == (-(2**31), 2**31 - 1)  # PostgreSQL's integer column
    assert MAX_RETRIES <= PRIORITY_MAX and MAX_WORKERS >= 1000 and MAX_PAYLOAD_SIZE >= 16 * 1024 * 1024


# -- at load -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("OMNIQ_RESULT_TTL", "100000000000000"),
        ("OMNIQ_RESULT_TTL", "9" * 400),  # float() makes it inf
        ("OMNIQ_TASK_TTL", "3653d"),
        ("OMNIQ_EVENT_TTL", "1e400"),
        ("OMNIQ_DEFAULT_TIMEOUT", "nan"),
        ("OMNIQ_LEASE_DURATION", "0"),
        ("OMNIQ_HEARTBEAT_INTERVAL", "0"),
        ("OMNIQ_POLL_INTERVAL", "0"),
        ("OMNIQ_SWEEP_INTERVAL", "0s"),
        ("OMNIQ_RETRY_BACKOFF_MAX", "87661h"),
        ("OMNIQ_MAX_WORKERS", "1000000000"),
        ("OMNIQ_MAX_WORKERS", "9" * 5000),  # more digits than int() takes on 3.11+
        ("OMNIQ_DEFAULT_MAX_RETRIES", str(2**31)),
        ("OMNIQ_MAX_PAYLOAD_SIZE", str(2**40)),
    ],
)
def test_out_of_range_environment_values_are_refused(variable: str, value: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        Settings.load(env={variable: value})
    assert variable in str(info.value)


@pytest.mark.parametrize("value", [".nan", ".inf", "-.inf", "1e400", "315576001", "-1"])
def test_out_of_range_yaml_durations_are_refused(tmp_path: Path, value: str) -> None:
    config = tmp_path / "omniq.yaml"
    config.write_text(f"result_ttl: {value}\n")
    with pytest.raises(ConfigurationError, match="result_ttl"):
        Settings.load(env={"OMNIQ_CONFIG": str(config)})


@pytest.mark.parametrize(
    "values",
    [
        {"lease_duration": math.nan, "heartbeat_interval": math.nan},  # nan passed `heartbeat < lease`
        {"lease_duration": math.inf},
        {"result_ttl": timedelta(days=36600)},
        {"max_workers": 10**30},
        {"default_max_retries": 10**30},
        {"max_payload_size": 10**30},
        {"poll_interval": 0},
    ],
)
def test_out_of_range_values_in_code_are_refused(values: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError, match=next(iter(values))):
        Settings(**values)


def test_the_maxima_themselves_are_accepted() -> None:
    settings = Settings.load(
        env={"OMNIQ_RESULT_TTL": "3652.5d", "OMNIQ_MAX_WORKERS": str(MAX_WORKERS), "OMNIQ_EVENT_TTL": "0"}
    )
    assert settings.result_ttl == TEN_YEARS
    assert settings.max_workers == MAX_WORKERS
    assert settings.event_ttl == 0.0


@pytest.mark.anyio
async def test_a_ten_year_result_ttl_records_the_result_once(make_app: Any) -> None:
    async with make_app(result_ttl=TEN_YEARS, task_ttl=TEN_YEARS) as app:

        @app.task
        async def one() -> int:
            return 1

        task_id = await one.enqueue()
        await app.worker(burst=True).start()
        result = await app.get_result(task_id)
        assert result is not None and result.status is TaskStatus.SUCCEEDED and result.attempts == 1


def test_retry_backoff_stays_finite_for_every_allowed_attempt() -> None:
    from omniq.scheduling import backoff_delay

    for attempt in (10, 1024, 1025, 5000, MAX_RETRIES + 1):  # the int power overflowed a float from 1025 on
        assert 150 <= backoff_delay(attempt, 1.0, 300.0) <= 300
        assert backoff_delay(attempt, MAX_DURATION, MAX_DURATION) <= MAX_DURATION
        assert backoff_delay(attempt, 0.0, 300.0) == 0.0


# -- at enqueue ----------------------------------------------------------------------------------------------

NOW = datetime.now(timezone.utc)


@pytest.mark.anyio
@pytest.mark.parametrize(
    "options",
    [
        {"ttl": 100_000_000_000_000},  # a raw OverflowError before
        {"ttl": math.inf},
        {"result_ttl": math.nan},
        {"result_ttl": TEN_YEARS + 1},
        {"timeout": math.nan},
        {"timeout": -1},
        {"interval": math.inf},
        {"interval": timedelta(days=4000)},
        {"delay": 1e300},
        {"delay": math.nan},
        {"delay": "5"},
        {"max_retries": 2**31},
        {"max_retries": True},
        {"max_retries": "3"},
        {"priority": 2**31},
        {"priority": -(2**31) - 1},
        {"priority": 1.5},
        {"eta": datetime(9999, 12, 31, tzinfo=timezone.utc)},
        {"eta": datetime.min},
        {"eta": NOW - timedelta(days=4000)},
        {"eta": "tomorrow"},
    ],
)
async def test_out_of_range_enqueue_options_fail_at_enqueue_and_store_nothing(
    make_app: Any, options: dict[str, Any]
) -> None:
    async with make_app() as app:
        app.register(lambda: None, name="f")
        with pytest.raises(ConfigurationError, match=next(iter(options))):
            await app.enqueue("f", **options)
        with pytest.raises(ConfigurationError, match=next(iter(options))):
            await app.enqueue_many("f", [()], **options)
        with pytest.raises(ConfigurationError, match=next(iter(options))):
            await app.functions["f"].options(**options).enqueue()
        assert await app.count_tasks() == 0


@pytest.mark.anyio
async def test_out_of_range_decorator_options_fail_at_enqueue(make_app: Any) -> None:
    async with make_app() as app:

        @app.task(ttl=math.inf)
        async def forever() -> None:
            pass

        with pytest.raises(ConfigurationError, match="ttl"):
            await forever.enqueue()
        assert await app.count_tasks() == 0


@pytest.mark.anyio
async def test_enqueue_options_at_their_bounds_are_accepted(make_app: Any) -> None:
    async with make_app() as app:
        app.register(lambda: None, name="f")
        ids = [
            await app.enqueue("f", ttl=TEN_YEARS, result_ttl=timedelta(days=3652.5), timeout=TEN_YEARS),
            await app.enqueue("f", priority=PRIORITY_MAX, max_retries=MAX_RETRIES, delay=TEN_YEARS - 60),
            await app.enqueue("f", priority=PRIORITY_MIN, eta=NOW - timedelta(days=3650)),
            await app.enqueue("f", eta=datetime.now() + timedelta(days=3650)),  # naive: local time
            await app.enqueue("f", interval=TEN_YEARS, ttl=0, delay=0),
        ]
        assert len(set(ids)) == 5
        assert await app.count_tasks() == 5
