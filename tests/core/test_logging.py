"""omniq.logging: nothing configured on import; configure() on request; bind_task() tags records."""

from __future__ import annotations

import io
import logging

import pytest

from omniq import ConfigurationError, logging as omniq_logging


def test_importing_configures_nothing() -> None:
    assert not any(getattr(h, "_omniq_default", False) for h in logging.getLogger("omniq").handlers)


def test_configure_honours_env_and_does_not_stack_handlers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMNIQ_LOG_LEVEL", "debug")
    stream = io.StringIO()
    logger = omniq_logging.configure(stream=stream)
    try:
        omniq_logging.configure(stream=stream)
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
        omniq_logging.configure("LOUD")


def test_bind_task_tags_every_record(caplog: pytest.LogCaptureFixture) -> None:
    log = omniq_logging.bind_task("send_email", task_id="abc", attempt=2)
    with caplog.at_level(logging.INFO, logger="omniq.task"):
        log.info("sent to %s", "x@example.com")
    record = caplog.records[-1]
    assert record.getMessage() == "[task=send_email task_id=abc attempt=2] sent to x@example.com"
    assert record.omniq == {"task": "send_email", "task_id": "abc", "attempt": 2}  # type: ignore[attr-defined]
