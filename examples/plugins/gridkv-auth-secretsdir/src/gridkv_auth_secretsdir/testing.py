"""For tests: write a secrets directory the way the kubelet writes a mounted ``Secret``.

Each version of the secret is a directory ``..<timestamp>``; ``..data`` is a symbolic link to
the current one, replaced atomically; each item is a link ``<name> -> ..data/<name>``. An
update writes a new version, swaps ``..data``, and removes what the new version lacks, so a
reader sees the old items or the new ones, never a mixture.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
from collections.abc import Mapping
from pathlib import Path

__all__ = ["write_secret"]

_versions = itertools.count()


def write_secret(
    directory: str | os.PathLike[str],
    items: Mapping[str, bytes | str],
    *,
    mode: int = 0o400,
) -> Path:
    """Write ``items`` (name -> content) as the secret mounted at ``directory``; returns it.

    A directory already holding a secret gets the new version in place of the old, as a
    Kubernetes secret that changes does.

    :param mode: the mode of every item (a secret volume's ``defaultMode``).
    """
    root = Path(directory)
    root.mkdir(mode=0o755, parents=True, exist_ok=True)
    version = f"..{os.getpid()}_{next(_versions)}"
    new = root / version
    new.mkdir(mode=0o755)
    for name, content in items.items():
        path = new / name
        path.write_bytes(content.encode() if isinstance(content, str) else content)
        os.chmod(path, mode)
    data = root / "..data"
    old = os.readlink(data) if data.is_symlink() else None
    swap = root / "..data_tmp"
    os.symlink(version, swap)
    os.replace(swap, data)
    for name in items:
        link = root / name
        if not link.is_symlink():
            os.symlink(f"..data/{name}", link)
    for entry in root.iterdir():
        if not entry.name.startswith(".") and entry.name not in items and entry.is_symlink():
            entry.unlink()
    if old is not None:
        with contextlib.suppress(OSError):
            shutil.rmtree(root / old)
    return root
