"""omniq.logs: nothing configured on import; configure() on request; bind_task() tags records."""

from __future__ import annotations

import importlib
import io
import json
import logging
import sys

import pytest

from omniq import ConfigurationError, Settings, logs as omniq_logs


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


def test_json_format_writes_one_object_a_line_with_the_task_fields(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OMNIQ_LOG_FORMAT", raising=False)
    stream = io.StringIO()
    logger = omniq_logs.configure("INFO", stream=stream, log_format="json")
    try:
        fields = {"task_id": "abc", "task": "send", "queue": "mail", "attempt": 2, "runtime": 0.5}
        logging.getLogger("omniq.worker.tasks").info("task abc succeeded", extra={"omniq": fields})
        try:
            raise ValueError("bad")
        except ValueError:
            logging.getLogger("omniq.worker").exception("it broke")
        first, second = (json.loads(line) for line in stream.getvalue().splitlines())
        assert first["level"] == "INFO" and first["logger"] == "omniq.worker.tasks"
        assert first["message"] == "task abc succeeded" and first["time"].endswith("+00:00")
        assert {key: first[key] for key in fields} == fields
        assert second["level"] == "ERROR" and "ValueError: bad" in second["exception"]
    finally:
        _remove_handler(logger)


def test_the_format_comes_from_the_environment_and_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMNIQ_LOG_FORMAT", "json")
    stream = io.StringIO()
    logger = omniq_logs.configure("INFO", stream=stream)
    try:
        logging.getLogger("omniq").info("hello")
        assert json.loads(stream.getvalue())["message"] == "hello"
    finally:
        _remove_handler(logger)
    monkeypatch.setenv("OMNIQ_LOG_FORMAT", "xml")
    with pytest.raises(ConfigurationError, match="OMNIQ_LOG_FORMAT"):
        omniq_logs.configure("INFO", stream=stream)
    assert Settings.from_env({"OMNIQ_LOG_FORMAT": "JSON"}).log_format == "json"
    with pytest.raises(ConfigurationError, match="OMNIQ_LOG_FORMAT"):
        Settings.from_env({"OMNIQ_LOG_FORMAT": "xml"})


def _remove_handler(logger: logging.Logger) -> None:
    for handler in list(logger.handlers):
        if getattr(handler, "_omniq_default", False):
            logger.removeHandler(handler)
    logger.setLevel(logging.NOTSET)
