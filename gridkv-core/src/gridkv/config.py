"""Loading :class:`~gridkv.options.Options` from JSON, YAML or TOML."""

from __future__ import annotations

import json
import os
import tomllib
from pathlib import Path
from typing import Any

import yaml

from gridkv.errors import ConfigError
from gridkv.options import Options

__all__ = ["load_config"]

_SUFFIXES = {".json": "json", ".yaml": "yaml", ".yml": "yaml", ".toml": "toml"}


def load_config(source: str | os.PathLike[str]) -> Options:
    """Load node options from a file path or from the text of a configuration.

    ``source`` is a path when it is a :class:`os.PathLike` or a string naming an existing
    file; the format then follows the suffix (``.json``, ``.yaml``/``.yml``, ``.toml``).
    Otherwise ``source`` is the configuration text itself: JSON when it starts with ``{``,
    else TOML, else YAML. The top level must be a mapping of :class:`Options` keys.

    :raises ConfigError: the file cannot be read or parsed, a key is unknown or a value is bad.
    """
    text, fmt, origin = _read(source)
    data = _parse(text, fmt, origin)
    if not isinstance(data, dict):
        raise ConfigError(f"{origin}: the configuration must be a mapping of keys, got {data!r}")
    return Options.from_mapping(data)


def _read(source: str | os.PathLike[str]) -> tuple[str, str | None, str]:
    if isinstance(source, os.PathLike) or (
        isinstance(source, str) and "\n" not in source and _is_file(source)
    ):
        path = Path(source)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read config file {str(path)!r}: {exc.strerror}") from None
        except UnicodeDecodeError:
            raise ConfigError(f"config file {str(path)!r} is not UTF-8 text") from None
        return text, _SUFFIXES.get(path.suffix.lower()), f"config file {str(path)!r}"
    if not isinstance(source, str):
        raise ConfigError(f"load_config takes a path or configuration text, got {source!r}")
    return source, None, "config text"


def _is_file(text: str) -> bool:
    try:
        return Path(text).is_file()
    except (OSError, ValueError):
        return False


def _parse(text: str, fmt: str | None, origin: str) -> Any:
    if fmt is None:
        if not text.strip():
            raise ConfigError(f"{origin} is empty")
        fmt = "json" if text.lstrip().startswith("{") else None
    if fmt == "json":
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{origin} is not valid JSON: {exc}") from None
    if fmt == "toml":
        try:
            return tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{origin} is not valid TOML: {exc}") from None
    if fmt is None:
        try:
            return tomllib.loads(text)
        except tomllib.TOMLDecodeError:
            pass
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        kinds = "YAML" if fmt == "yaml" else "JSON, TOML or YAML"
        raise ConfigError(f"{origin} is not valid {kinds}: {exc}") from None
