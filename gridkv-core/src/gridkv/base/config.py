"""Loading :class:`~gridkv.base.options.Options` from JSON, YAML or TOML.

Whatever it is given, :func:`load_config` returns options or raises
:class:`~gridkv.base.errors.ConfigError`, and does so quickly: the text it reads is bounded in size,
the data parsed from it in nesting depth and in values (a YAML alias counts each time it is
used, so an alias "billion laughs" is refused instead of expanded), and the parsers' own
failures (recursion limits, integers too long to convert, impossible dates) become
ConfigErrors naming the source.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml

from gridkv.base._repr import shown
from gridkv.base.errors import ConfigError
from gridkv.base.options import Options
from gridkv.base.sections import Section

__all__ = [
    "ENV_PREFIX",
    "MAX_CONFIG_BYTES",
    "MAX_CONFIG_DEPTH",
    "MAX_CONFIG_VALUES",
    "OTHER_ENV",
    "env_overrides",
    "load_config",
    "merged",
]

#: Longest configuration read, file or text, in bytes (characters for text). A real one is a
#: few kilobytes; the bound keeps a wrong path (a log file, a disk image) from being read whole.
MAX_CONFIG_BYTES = 1 << 20
#: Deepest nesting of mappings and lists accepted. GridKV's own keys go three levels deep
#: (``network.ssl.enabled``); the bound stops hostile nesting before anything recurses on it.
MAX_CONFIG_DEPTH = 32
#: Values (mappings, lists and scalars) a configuration may hold, counting a YAML alias each
#: time it is used: an alias bomb parses into little memory but would expand beyond any bound.
MAX_CONFIG_VALUES = 100_000

_SUFFIXES = {".json": "json", ".yaml": "yaml", ".yml": "yaml", ".toml": "toml"}
_FORMAT_NAMES = {"json": "JSON", "toml": "TOML", "yaml": "YAML"}
# Characters that mark a one-line string as configuration text ("key: value", "key = value",
# JSON) rather than a path, when the string has no config suffix.
_TEXT_MARKS = (":", "=", "{")
_SEPARATORS = tuple(sep for sep in {"/", os.sep, os.altsep} if sep)
# A run of MAX_CONFIG_DEPTH dotted key parts (a.b.c..., quoted parts too).
_DEEP_TOML_KEY = re.compile(
    r"""(?:(?:[A-Za-z0-9_-]+|"[^"\n]*"|'[^'\n]*')[ \t]*\.[ \t]*)""" + f"{{{MAX_CONFIG_DEPTH}}}"
)


def load_config(source: str | os.PathLike[str]) -> Options:
    """Load node options from a file path or from the text of a configuration.

    ``source`` is a path when it is a :class:`os.PathLike`, or a string without line breaks
    that names an existing file, ends in ``.json``, ``.yaml``, ``.yml`` or ``.toml``, or
    contains a path separator and none of ``:``, ``=``, ``{`` (which mark configuration
    text). A path is read as the format its suffix names (other suffixes as text is); a path
    that does not exist is an error saying so, never parsed as text. Any other string is the
    configuration text itself: JSON when it starts with ``{``, else TOML, else YAML. The top
    level must be a mapping of :class:`Options` keys.

    :raises ConfigError: the file is missing or cannot be read, the text cannot be parsed or
        exceeds a bound (:data:`MAX_CONFIG_BYTES`, :data:`MAX_CONFIG_DEPTH`,
        :data:`MAX_CONFIG_VALUES`), a key is unknown or a value is bad.
    """
    text, fmt, origin = _read(source)
    data = _parse(text, fmt, origin)
    _check_shape(data, origin)
    if not isinstance(data, dict):
        hint = ""
        if origin == "config text" and "\n" not in text:
            hint = "; a one-line string is read as a path only when it looks like one"
        raise ConfigError(
            f"{origin}: the configuration must be a mapping of keys, got "
            f"{type(data).__name__} {shown(data)}{hint}"
        )
    return Options.from_mapping(data)


def _read(source: str | os.PathLike[str]) -> tuple[str, str | None, str]:
    """The text to parse, its format when a suffix names it, and where it came from."""
    if isinstance(source, os.PathLike) or (isinstance(source, str) and _is_path(source)):
        return _read_file(Path(source))
    if not isinstance(source, str):
        raise ConfigError(f"load_config takes a path or configuration text, got {shown(source)}")
    if len(source) > MAX_CONFIG_BYTES:
        raise ConfigError(
            f"config text of {len(source)} characters is longer than the limit of "
            f"{MAX_CONFIG_BYTES}"
        )
    return source, None, "config text"


def _is_path(text: str) -> bool:
    """Whether a string names a file rather than holding configuration text.

    The rule of :func:`load_config`; only a string that passes no other test costs a look at
    the file system.
    """
    if "\n" in text or "\r" in text:
        return False
    if text.lower().endswith(tuple(_SUFFIXES)):
        return True
    if any(sep in text for sep in _SEPARATORS) and not any(m in text for m in _TEXT_MARKS):
        return True
    try:
        return Path(text).is_file()
    except (OSError, ValueError):
        return False


def _read_file(path: Path) -> tuple[str, str | None, str]:
    try:
        name = repr(str(path.absolute()))
    except OSError:  # the working directory is gone
        name = repr(str(path))
    try:
        if not path.is_file():
            if path.exists():
                raise ConfigError(f"config file {name} is not a regular file")
            raise ConfigError(f"config file {name} does not exist")
        # is_file() before open(): reading a FIFO or a device could block or never end.
        with path.open("rb") as handle:
            raw = handle.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read config file {name}: {exc.strerror or exc}") from None
    except ValueError as exc:  # a NUL byte or a character the file system cannot encode
        raise ConfigError(f"cannot read config file {name}: {exc}") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(
            f"config file {name} is larger than the limit of {MAX_CONFIG_BYTES} bytes"
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"config file {name} is not UTF-8 text") from None
    return text, _SUFFIXES.get(path.suffix.lower()), f"config file {name}"


def _load_toml(text: str) -> Any:
    # tomllib takes time quadratic in the parts of a dotted key (a.a.a... = 1): a megabyte of
    # them would parse for hours. No configuration key has that many parts.
    deep = _DEEP_TOML_KEY.search(text)
    if deep is not None:
        raise ValueError(
            f"a dotted key of more than {MAX_CONFIG_DEPTH} parts: {shown(deep.group())}"
        )
    return tomllib.loads(text)


_PARSERS: dict[str, Callable[[str], Any]] = {
    "json": json.loads,
    "toml": _load_toml,
    "yaml": yaml.safe_load,
}


def _parse(text: str, fmt: str | None, origin: str) -> Any:
    if fmt is not None:
        formats = [fmt]
    elif not text.strip():
        raise ConfigError(f"{origin} is empty")
    elif text.lstrip().startswith("{"):
        formats = ["json"]
    else:
        formats = ["toml", "yaml"]
    for name in formats:
        try:
            return _PARSERS[name](text)
        except RecursionError:
            # The parsers recurse once per level of nesting; the configuration nests deeper
            # than Python's recursion limit allows, far deeper than MAX_CONFIG_DEPTH.
            raise ConfigError(f"{origin} nests more than {MAX_CONFIG_DEPTH} levels deep") from None
        except Exception as exc:
            # Not only the parsers' own errors: converting what they read raises ValueError
            # (an integer of over 4300 digits, a date in year 0), and PyYAML's constructors
            # raise IndexError ("a: !!int") or AttributeError ("a: !!timestamp") on hostile
            # text. Whatever it is, the text cannot be parsed.
            if name != formats[-1]:
                continue  # text that is not TOML may be YAML
            kinds = " or ".join(_FORMAT_NAMES[f] for f in formats)
            raise ConfigError(f"{origin} is not valid {kinds}: {exc}") from None
    raise AssertionError("unreachable: the last format raises or returns")  # pragma: no cover


def _check_shape(data: Any, origin: str) -> None:
    """Refuse data nested too deeply or holding too many values.

    The bounds are :data:`MAX_CONFIG_DEPTH` and :data:`MAX_CONFIG_VALUES`, each use of a YAML
    alias counted. The walk does not recurse, and stops before it expands more values than
    the bound.
    """
    seen = 0
    stack: list[tuple[Any, int]] = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        seen += 1
        if seen > MAX_CONFIG_VALUES:
            raise ConfigError(
                f"{origin} holds more than {MAX_CONFIG_VALUES} values (each use of a YAML "
                "alias counts)"
            )
        if depth > MAX_CONFIG_DEPTH:
            raise ConfigError(f"{origin} nests more than {MAX_CONFIG_DEPTH} levels deep")
        if isinstance(value, dict):
            stack.extend((item, depth + 1) for pair in value.items() for item in pair)
        elif isinstance(value, list | tuple | set | frozenset):
            stack.extend((item, depth + 1) for item in value)


#: Environment variables GridKV reads that are not configuration keys.
OTHER_ENV = frozenset(
    {"GRIDKV_NO_UVLOOP", "GRIDKV_TEST_TRANSPORT", "GRIDKV_FUZZ_EXAMPLES", "GRIDKV_FAULT_CYCLES"}
)
#: The prefix of the environment variables that set configuration keys.
ENV_PREFIX = "GRIDKV_"


def env_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    """The configuration keys ``GRIDKV_*`` environment variables set, as a nested mapping.

    ``GRIDKV_<KEY>`` sets a top-level key and ``GRIDKV_<SECTION>__<KEY>`` a key of a section
    (``GRIDKV_NETWORK__SSL__CERT_FILE`` is ``network.ssl.cert_file``), upper case for lower.
    A value is read as a YAML scalar or flow list: ``3`` is a number, ``true`` a boolean,
    ``[a:1, b:2]`` a list, and anything else the string itself.

    :raises ConfigError: a ``GRIDKV_`` variable names no configuration key (the variables
        of :data:`OTHER_ENV` excepted), or its value cannot be read.
    """
    found: dict[str, Any] = {}
    for name in sorted(environ):
        if not name.startswith(ENV_PREFIX) or name in OTHER_ENV:
            continue
        path = name[len(ENV_PREFIX) :].lower().split("__")
        section: type[Section] = Options
        kind = ""
        for i, part in enumerate(path):
            fields = {f.name: f for f in dataclasses.fields(section)}  # type: ignore[arg-type]
            if part not in fields:
                dotted = ".".join(path[: i + 1])
                raise ConfigError(
                    f"environment variable {name}: no config key {dotted!r} (see "
                    "docs/configuration.md for the keys, and GRIDKV_SECTION__KEY for a key of a "
                    "section)"
                )
            inner = section._sections.get(part)
            kind = str(fields[part].metadata.get("kind", ""))
            if inner is None:
                if i != len(path) - 1:
                    raise ConfigError(
                        f"environment variable {name}: {'.'.join(path[: i + 1])!r} is a key, "
                        "not a section"
                    )
                break
            section = inner
        else:
            raise ConfigError(
                f"environment variable {name}: {'.'.join(path)!r} is a section; set its keys "
                f"({name}__KEY)"
            )
        raw = environ[name]
        value: Any = raw
        if kind not in ("str", "optional_str"):  # a string key takes the text as it is
            try:
                value = yaml.safe_load(raw) if raw.strip() else ""
            except yaml.YAMLError:
                value = raw
            if isinstance(value, dict) or value is None:  # "a: b" or "~": the text itself
                value = raw
        target = found
        for part in path[:-1]:
            target = target.setdefault(part, {})
        target[path[-1]] = value
    return found


def merged(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``overrides`` on top, sections merged key by key."""
    out = dict(base)
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merged(out[key], value)
        else:
            out[key] = value
    return out
