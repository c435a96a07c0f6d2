"""How many inputs a fuzz test tries: a few hundred in the default run, many more on request.

Fuzz tests (marked ``@pytest.mark.fuzz``) take their example count from :func:`fuzz_examples`,
so the default test run stays quick while ``nox -s fuzz`` sets ``GRIDKV_FUZZ_EXAMPLES`` (to
100,000 or more) and runs the same tests at length. Either way hypothesis draws from a fixed
seed (the ``gridkv`` profile in the repository's ``conftest.py``), so a failure reproduces.
"""

from __future__ import annotations

import os

__all__ = ["FUZZ_ENV", "fuzz_examples"]

#: The environment variable that sets the example count of every fuzz test.
FUZZ_ENV = "GRIDKV_FUZZ_EXAMPLES"


def fuzz_examples(default: int = 300) -> int:
    """Examples a fuzz test should try: ``$GRIDKV_FUZZ_EXAMPLES``, else ``default``."""
    raw = os.environ.get(FUZZ_ENV, "")
    return int(raw) if raw.isdigit() and int(raw) > 0 else default
