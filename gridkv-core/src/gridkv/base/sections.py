"""How an option section is declared and checked: the machinery under :mod:`gridkv.base.options`.

A section is a frozen dataclass deriving from :class:`Section`, each field declared with
:func:`option` (its default, its kind and its rules). Building a section checks and converts
every field (:func:`coerce`) and builds nested sections from mappings; an unknown key or a
bad value raises :class:`~gridkv.base.errors.ConfigError` naming the key, with the closest
known key when one is close.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import field
from typing import Any, ClassVar, Self

from gridkv.base._repr import shown
from gridkv.base.durations import parse_duration
from gridkv.base.errors import ConfigError

__all__ = [
    "Section",
    "option",
    "coerce",
    "check_address",
    "DNS_SEED_PREFIX",
    "dns_seed",
    "closest",
]


def _spec(kind: str, **rules: Any) -> dict[str, Any]:
    return {"kind": kind, **rules}


def option(default: Any, kind: str, **rules: Any) -> Any:
    """A dataclass field of ``kind`` with ``default``, checked by ``rules`` when built.

    Kinds: ``duration``, ``int``, ``float``, ``bool``, ``str``, ``optional_str``,
    ``str_list``. Rules: ``choices``, ``min``, ``max``, ``nonempty``, ``max_len``.
    """
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=_spec(kind, **rules))
    return field(default=default, metadata=_spec(kind, **rules))


def coerce(path: str, value: Any, spec: Mapping[str, Any]) -> Any:
    """Check and convert one field's value; raise ConfigError naming ``path`` when it is bad."""
    kind = spec["kind"]

    def bad(why: str) -> ConfigError:
        return ConfigError(f"config key {path!r}: {why} (got {shown(value)})")

    if kind == "duration":
        try:
            out: Any = parse_duration(value)
        except ValueError as exc:
            raise bad(str(exc)) from None
    elif kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            else:
                raise bad("expected an integer")
        out = value
    elif kind == "float":
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise bad("expected a number")
        try:
            out = float(value)
        except OverflowError:  # an int beyond the float range
            raise bad("expected a finite number") from None
        if not math.isfinite(out):
            raise bad("expected a finite number")
    elif kind == "bool":
        if not isinstance(value, bool):
            raise bad("expected true or false")
        out = value
    elif kind == "str":
        if not isinstance(value, str):
            raise bad("expected a string")
        out = value
    elif kind == "optional_str":
        if value is not None and not isinstance(value, str):
            raise bad("expected a string or null")
        out = value
    elif kind == "str_list":
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
            raise bad("expected a list of strings")
        out = list(value)
    else:  # pragma: no cover - a programming error in this module
        raise AssertionError(f"unknown option kind {kind!r}")
    if "choices" in spec and out not in spec["choices"]:
        raise bad(f"expected one of {', '.join(repr(c) for c in spec['choices'])}")
    if "min" in spec and out < spec["min"]:
        raise bad(f"must be at least {spec['min']}")
    if "max" in spec and out > spec["max"]:
        raise bad(f"must be at most {spec['max']}")
    if spec.get("nonempty") and not out:
        raise bad("must not be empty")
    if "max_len" in spec and len(out) > spec["max_len"]:
        raise bad(f"must be at most {spec['max_len']} characters")
    return out


class Section:
    """The base of every option dataclass: each field checked when built, loading, dumping."""

    _path: ClassVar[str] = ""
    _sections: ClassVar[dict[str, type[Section]]] = {}

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            path = f"{self._path}{f.name}"
            section = self._sections.get(f.name)
            if section is not None:
                if isinstance(value, Mapping):
                    value = section.from_mapping(value)
                elif value is None:
                    value = section()
                elif not isinstance(value, section):
                    raise ConfigError(
                        f"config key {path!r}: expected a mapping of options (got {shown(value)})"
                    )
            else:
                value = coerce(path, value, f.metadata)
            object.__setattr__(self, f.name, value)
        self._check()

    def _check(self) -> None:
        """Cross-field checks; subclasses extend."""

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> Self:
        """Build the section from a mapping with its configuration keys.

        :raises ConfigError: a key is unknown or a value is bad; the message names the key.
        """
        if not isinstance(data, Mapping):
            raise ConfigError(
                f"config section {cls._path.rstrip('.') or '<root>'!r}: expected a mapping, "
                f"got {shown(data)}"
            )
        names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        for key in data:
            if key not in names:
                # shown(), not str(): a key may be any value, an int too long to print too.
                name = key if isinstance(key, str) else shown(key)
                hint = closest(name, names)
                raise ConfigError(
                    f"unknown config key {cls._path + name!r}"
                    + (f"; did you mean {cls._path + hint!r}?" if hint else "")
                )
        return cls(**dict(data))

    def to_dict(self) -> dict[str, Any]:
        """Return the section as plain data with configuration keys (durations in seconds)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            out[f.name] = value.to_dict() if isinstance(value, Section) else value
        return out


def check_address(key: str, address: str, *, listening: bool) -> None:
    """Raise unless ``address`` is ``host:port`` (``[v6]:port``); port 0 only where listening.

    Every transport addresses nodes this way (the memory transport takes any host name), so a
    seed without a port is caught when the options are built, not at the first dial.
    """
    host, sep, port = address.rpartition(":")
    low = 0 if listening else 1
    # isascii(): str.isdigit() also accepts digits int() refuses (superscripts) or reads
    # (Arabic-Indic), which no resolver takes as a port.
    if not sep or not (port.isascii() and port.isdigit()) or not low <= int(port) <= 65535:
        raise ConfigError(
            f"config key {key!r}: expected host:port with a port from {low} to 65535 "
            f"(got {address!r})"
        )
    if not host and not listening:
        raise ConfigError(
            f"config key {key!r}: expected host:port, the host is missing (got {address!r})"
        )


#: The prefix of a ``seed_addrs`` entry that names a DNS name: ``dns:HOST:PORT`` stands for
#: every A and AAAA record of HOST, each a seed at PORT.
DNS_SEED_PREFIX = "dns:"
#: The longest DNS name (RFC 1035), in characters.
_MAX_DNS_NAME = 253


def dns_seed(key: str, entry: str) -> tuple[str, int] | None:
    """``(HOST, PORT)`` of a ``dns:HOST:PORT`` seed entry; ``None`` for any other entry.

    The one reading of such entries: options check them with it, membership resolves what
    it returns.

    :raises ConfigError: a ``dns:`` entry without a host name, or without a port from 1 to
        65535 (``key`` names the entry).
    """
    if not entry.startswith(DNS_SEED_PREFIX):
        return None
    host, sep, port = entry[len(DNS_SEED_PREFIX) :].rpartition(":")
    if not sep or not (port.isascii() and port.isdigit()) or not 1 <= int(port) <= 65535:
        raise ConfigError(
            f"config key {key!r}: expected dns:HOST:PORT with a port from 1 to 65535 "
            f"(got {entry!r})"
        )
    if (
        not host
        or len(host) > _MAX_DNS_NAME
        or any(c.isspace() or not c.isprintable() or c in ":[]/@" for c in host)
        or host.startswith(".")
    ):
        raise ConfigError(
            f"config key {key!r}: expected dns:HOST:PORT with a DNS name for HOST, such as "
            f"dns:gridkv-headless.default.svc.cluster.local:7946 (got {entry!r})"
        )
    return host, int(port)


def closest(key: str, names: set[str]) -> str | None:
    """The name among ``names`` closest to a misspelled ``key``, if one is close."""
    import difflib

    found = difflib.get_close_matches(key, sorted(names), n=1, cutoff=0.75)
    return found[0] if found else None
