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
import threading
import time
from collections.abc import Callable
from typing import Any

from gridkv.base.options import LogOptions

__all__ = [
    "configure_logging",
    "TextFormatter",
    "JSONFormatter",
    "LOGGER_NAME",
    "RateLimitedLog",
]

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


class RateLimitedLog:
    """Logs each kind of message at most once per ``interval``, counting the rest.

    A peer that sends ten thousand bad frames must not write ten thousand lines: the first of
    a kind is logged, later ones within the interval are only counted, and the next line of
    that kind says how many were left out (``suppressed`` in its extra fields). The kinds are
    few and fixed by the code (a message and a reason), so the table stays small.

    :param logger: where the lines go.
    :param interval: seconds between two lines of one kind.
    :param clock: monotonic seconds.
    """

    #: Kinds remembered at most; the oldest are forgotten first.
    MAX_KINDS = 256

    def __init__(
        self,
        logger: logging.Logger,
        interval: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._logger = logger
        self._interval = interval
        self._clock = clock
        self._lock = threading.Lock()
        # kind -> (time of the last line, occurrences left out since)
        self._kinds: dict[str, tuple[float, int]] = {}

    def log(
        self,
        level: int,
        kind: str,
        message: str,
        *,
        exc_info: BaseException | None = None,
        **extra: Any,
    ) -> bool:
        """Log ``message`` unless a line of ``kind`` went out within the interval.

        ``exc_info`` adds a traceback to the lines that are written. Returns whether a line
        was written.
        """
        now = self._clock()
        with self._lock:
            last, suppressed = self._kinds.get(kind, (float("-inf"), 0))
            if now - last < self._interval:
                self._kinds[kind] = (last, suppressed + 1)
                return False
            self._kinds.pop(kind, None)
            self._kinds[kind] = (now, 0)
            while len(self._kinds) > self.MAX_KINDS:
                del self._kinds[next(iter(self._kinds))]
        if suppressed:
            message = f"{message} ({suppressed} more like it in the last {self._interval:g}s)"
        self._logger.log(
            level, message, exc_info=exc_info, extra={**extra, "suppressed": suppressed}
        )
        return True
