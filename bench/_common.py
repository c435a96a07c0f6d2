"""Helpers the benchmarks share: timing, percentiles, and writing results as JSON."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def percentile(samples: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) of ``samples``, nearest-rank."""
    ordered = sorted(samples)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def summary(samples_ns: Sequence[float]) -> dict[str, float]:
    """Median, p99 and mean of per-operation times, in nanoseconds."""
    return {
        "median_ns": statistics.median(samples_ns),
        "p99_ns": percentile(samples_ns, 99),
        "mean_ns": statistics.fmean(samples_ns),
    }


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    return {
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def write(name: str, data: dict[str, Any]) -> Path:
    """Write ``data`` (plus the machine description) to ``bench/results/<name>.json``."""
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({"machine": machine(), **data}, indent=2) + "\n")
    return path


@contextlib.contextmanager
def server_process(script: str, *args: str) -> Iterator[subprocess.Popen[str]]:
    """Run ``python script args...`` until the block ends; it must print "ready" first.

    The block gets the process.

    The server runs until its standard input closes (then it has 10 s to exit, or is killed).
    """
    server = subprocess.Popen(
        [sys.executable, script, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert server.stdout is not None
        assert server.stdout.readline().strip() == "ready"
        yield server
    finally:
        assert server.stdin is not None
        server.stdin.close()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
