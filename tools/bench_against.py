"""Run a benchmark at another revision and at the work tree, alternately, and compare.

A change that must keep figures "within 10%" is measured side by side with its baseline in
the same session: the benchmark runs ``--runs`` times at each side, base and head taking
turns (so a busy moment of the machine hits both), and every number of its JSON result is
compared as the median over the runs. The base revision is checked out in a detached git
worktree under the system's temporary directory, and runs on the same interpreter with its
own packages first on ``PYTHONPATH``.

    python tools/bench_against.py REV local_ops [--runs 3] [-- BENCH ARGS...]

Prints one line per figure (base, head, head/base) and writes
``bench/results/<bench>.against.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("gridkv-core", "gridkv-transport-tcp", "gridkv-transport-quic", "gridkv-metrics")


def checkout(rev: str) -> Path:
    """A detached worktree of ``rev`` (made once per commit, reused afterwards)."""
    commit = subprocess.run(
        ["git", "rev-parse", "--verify", f"{rev}^{{commit}}"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    path = Path(tempfile.gettempdir()) / f"gridkv-base-{commit[:12]}"
    if not path.exists():
        subprocess.run(
            ["git", "worktree", "add", "--detach", str(path), commit],
            cwd=ROOT,
            check=True,
            capture_output=True,
        )
    return path


def run(tree: Path, bench: str, args: list[str]) -> dict[str, Any]:
    """Run ``bench/<bench>.py`` of ``tree`` with that tree's packages; its JSON result."""
    src = [str(tree / pkg / "src") for pkg in PACKAGES if (tree / pkg / "src").is_dir()]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(src)}
    subprocess.run(
        [sys.executable, str(tree / "bench" / f"{bench}.py"), *args],
        cwd=tree,
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    result: dict[str, Any] = json.loads((tree / "bench" / "results" / f"{bench}.json").read_text())
    result.pop("machine", None)
    return result


def leaves(data: Any, prefix: str = "") -> dict[str, float]:
    """Every number in ``data`` by its path.

    Rows of a list go by their ``label`` (else their index); bare numbers in a list
    (samples) are left out.
    """
    out: dict[str, float] = {}
    if isinstance(data, bool):
        return out
    if isinstance(data, int | float):
        out[prefix] = float(data)
    elif isinstance(data, dict):
        for key, value in data.items():
            out.update(leaves(value, f"{prefix}/{key}" if prefix else str(key)))
    elif isinstance(data, list):
        for i, value in enumerate(data):
            if isinstance(value, dict):  # a row (bare samples are summed up elsewhere)
                out.update(leaves(value, f"{prefix}[{value.get('label', i)}]"))
    return out


def main() -> None:
    """Parse the arguments, run both sides, print and write the comparison."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rev", help="the base revision (a commit, tag or branch)")
    parser.add_argument("bench", help="the benchmark's name: bench/<name>.py")
    parser.add_argument("--runs", type=int, default=3, help="runs at each side (default 3)")
    argv = sys.argv[1:]
    args = argv[argv.index("--") + 1 :] if "--" in argv else []
    ns = parser.parse_args(argv[: argv.index("--")] if "--" in argv else argv)
    base = checkout(ns.rev)
    samples: dict[str, list[dict[str, float]]] = {"base": [], "head": []}
    for i in range(ns.runs):
        for side, tree in (("base", base), ("head", ROOT)):
            print(f"run {i + 1}/{ns.runs}: {side}", file=sys.stderr, flush=True)
            samples[side].append(leaves(run(tree, ns.bench, args)))
    common = [k for k in samples["head"][0] if all(k in s for s in samples["base"])]
    figures = {}
    width = max((len(k) for k in common), default=10)
    print(f"{'figure':<{width}}  {'base':>12}  {'head':>12}  head/base")
    for key in common:
        b = statistics.median(s[key] for s in samples["base"])
        h = statistics.median(s[key] for s in samples["head"] if key in s)
        ratio = h / b if b else float("nan")
        figures[key] = {"base": b, "head": h, "ratio": ratio}
        print(f"{key:<{width}}  {b:>12.4g}  {h:>12.4g}  {ratio:9.3f}")
    out = ROOT / "bench" / "results" / f"{ns.bench}.against.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(
        json.dumps({"base": ns.rev, "runs": ns.runs, "args": args, "figures": figures}, indent=2)
        + "\n"
    )
    print(f"written to {out}")


if __name__ == "__main__":
    main()
