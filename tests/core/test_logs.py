"""omniq.logs: nothing configured on import; configure() on request; bind_task() tags records."""

from __future__ import annotations

import importlib
import io
import logging
import sys

import pytest

from omniq import ConfigurationError, logs as omniq_logs


def test_importing_configures_nothing() -> None:
    assert not any(getattr(h, "_omniq_default", False) for h in logging.getLogger("omniq").handlers)


def test_configure_honours_env_and_does_not_stack_handlers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMNIQ_LOG_LEVEL", "debug")
    stream = io.StringIO()
    logger = omniq_logs.configure(stream=stream)
    try:
        omniq_logs.configure(stream=stream)
        assert logger.level == logging.DEBUG
        assert sum(getattr(h, "_omniq_default", False) for h in logger.handlers) == 1
        logging.getLogger("omniq.worker").debug("hello %s", "world")
        assert "omniq.worker: hello world" in stream.getvalue()
    finally:
        for handler in list(logger.handlers):
            if getattr(handler, "_omniq_default", False):
                logger.removeHandler(handler)
        logger.setLevel(logging.NOTSET)


def test_configure_rejects_bad_levels() -> None:
    with pytest.raises(ConfigurationError, match="OMNIQ_LOG_LEVEL"):
        omniq_logs.configure("LOUD")


def test_bind_task_tags_every_record(caplog: pytest.LogCaptureFixture) -> None:
    log = omniq_logs.bind_task("send_email", task_id="abc", attempt=2)
    with caplog.at_level(logging.INFO, logger="omniq.task"):
        log.info("sent to %s", "x@example.com")
    record = caplog.records[-1]
    assert record.getMessage() == "[task=send_email task_id=abc attempt=2] sent to x@example.com"
    assert record.omniq == {"task": "send_email", "task_id": "abc", "attempt": 2}  # type: ignore[attr-defined]


def test_the_old_module_name_is_a_deprecated_alias(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "omniq.logging", raising=False)
    with pytest.warns(DeprecationWarning, match=r"omniq\.logging is deprecated: import omniq\.logs"):
        old = importlib.import_module("omniq.logging")
    assert old.configure is omniq_logs.configure
    assert old.bind_task is omniq_logs.bind_task
    assert old.get_logger is omniq_logs.get_logger
    assert old.TaskLoggerAdapter is omniq_logs.TaskLoggerAdapter
