"""Logging through the standard :mod:`logging` module, as the ``log`` options describe.

GridKV logs to the ``"gridkv"`` logger. :func:`configure_logging` sets its level and, once per
process, gives it a handler on standard error with the text or JSON format; applications that
configure logging themselves can leave the handler out with
``configure_logging(..., handler=False)``.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

from gridkv.options import LogOptions

__all__ = ["configure_logging", "TextFormatter", "JSONFormatter", "LOGGER_NAME"]

LOGGER_NAME = "gridkv"
_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}
_HANDLER_FLAG = "_gridkv_handler"
_STANDARD_ATTRS = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is at the time of each record (it may be replaced)."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


class _Base(logging.Formatter):
    def __init__(self, options: LogOptions) -> None:
        super().__init__()
        self.options = options

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        return time.strftime(self.options.time_format, time.localtime(record.created))

    @staticmethod
    def extras(record: logging.LogRecord) -> dict[str, Any]:
        return {k: v for k, v in record.__dict__.items() if k not in _STANDARD_ATTRS}


class TextFormatter(_Base):
    """``time level logger message key=value ... (module:line)``, parts left out as asked."""

    def format(self, record: logging.LogRecord) -> str:
        """Render one record."""
        parts = []
        if not self.options.no_time:
            parts.append(self.formatTime(record))
        parts.append(f"{record.levelname:<7}")
        parts.append(record.name)
        parts.append(record.getMessage())
        parts.extend(f"{k}={v}" for k, v in self.extras(record).items())
        if not self.options.no_caller:
            parts.append(f"({record.module}:{record.lineno})")
        text = " ".join(parts)
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


class JSONFormatter(_Base):
    """One JSON object a line: ``time``, ``level``, ``logger``, ``msg``, ``caller``, extras."""

    def format(self, record: logging.LogRecord) -> str:
        """Render one record."""
        out: dict[str, Any] = {}
        if not self.options.no_time:
            out["time"] = self.formatTime(record)
        out["level"] = record.levelname.lower()
        out["logger"] = record.name
        out["msg"] = record.getMessage()
        if not self.options.no_caller:
            out["caller"] = f"{record.module}:{record.lineno}"
        out.update(self.extras(record))
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def configure_logging(options: LogOptions, *, handler: bool = True) -> logging.Logger:
    """Apply ``options`` to the ``"gridkv"`` logger and return it."""
    logger = logging.getLogger(LOGGER_NAME)
    logger.setLevel(_LEVELS[options.level])
    if handler:
        formatter: logging.Formatter = (
            JSONFormatter(options) if options.format == "json" else TextFormatter(options)
        )
        ours = [h for h in logger.handlers if getattr(h, _HANDLER_FLAG, False)]
        if ours:
            ours[0].setFormatter(formatter)
        else:
            stream = _StderrHandler()
            setattr(stream, _HANDLER_FLAG, True)
            stream.setFormatter(formatter)
            logger.addHandler(stream)
    return logger
