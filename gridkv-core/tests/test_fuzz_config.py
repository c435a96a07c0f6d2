"""Fuzzing the config loader: whatever text, file or mapping it is given, ``load_config`` and
``Options.from_mapping`` return options or raise ConfigError, and nothing else.

Inputs: text (JSON-, YAML- and TOML-looking configurations, YAML and TOML oddities, pieces of
syntax, strings that look like paths), each with a few character edits; the same and arbitrary
bytes in files of every suffix; and nested mappings with known and unknown keys and values of
every type. Alias bombs, deep nesting and huge numbers are tried on purpose, and must end in a
ConfigError without hanging or a RecursionError.

Each hypothesis test draws a kind of input and one byte string, and builds the input from the
bytes through :class:`~gridkv.testing.fuzz.Entropy` (see there why). Example counts come from
``fuzz_examples`` (``GRIDKV_FUZZ_EXAMPLES``); ``nox -s fuzz`` runs them at 100,000.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import struct
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from datetime import date, datetime, timedelta
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest
import yaml
from gridkv import ConfigError, Options, load_config
from gridkv.base.options import NetworkOptions, SslOptions, StorageOptions
from gridkv.testing.fuzz import Entropy, fuzz_examples
from hypothesis import given, settings
from hypothesis import strategies as st

pytestmark = pytest.mark.fuzz

# A ConfigError must come quickly whatever the input: a hang is a failure too.
_SECONDS_PER_INPUT = 10.0


def _section_fields(cls: type) -> dict[str, type | None]:
    """Field names of an options section, each with its own section class or None."""
    sections: dict[str, type] = getattr(cls, "_sections", {})
    return {f.name: sections.get(f.name) for f in dataclasses.fields(cls)}


def _fields(cls: type) -> dict[str, dataclasses.Field[Any]]:
    return {f.name: f for f in dataclasses.fields(cls)}


def _assert_finite(data: Mapping[str, Any]) -> None:
    """Every number in built options is finite: a NaN timeout would reach the event loop."""
    for key, value in data.items():
        if isinstance(value, Mapping):
            _assert_finite(value)
        elif isinstance(value, float):
            assert math.isfinite(value), key


def loads_or_refuses(source: Any) -> Options | None:
    """The property of every input: options (with finite numbers), or a ConfigError, quickly;
    nothing else."""
    started = time.monotonic()
    try:
        options = load_config(source)
    except ConfigError:
        return None
    finally:
        assert time.monotonic() - started < _SECONDS_PER_INPUT
    _assert_finite(options.to_dict())
    return options


def builds_or_refuses(mapping: Mapping[Any, Any]) -> Options | None:
    """The same property for ``Options.from_mapping``."""
    started = time.monotonic()
    try:
        options = Options.from_mapping(mapping)
    except ConfigError:
        return None
    finally:
        assert time.monotonic() - started < _SECONDS_PER_INPUT
    _assert_finite(options.to_dict())
    return options


@contextlib.contextmanager
def _in_empty_directory() -> Iterator[Path]:
    """Run in an empty directory, so text that looks like a relative path names nothing."""
    with tempfile.TemporaryDirectory() as empty, contextlib.chdir(empty):
        yield Path(empty)


# -- values and mappings --------------------------------------------------------------------

EDGE_INTS = [0, 1, -1, 3, 17, 1024, 65535, 65536, 2**31, 2**63, 2**64, 10**40, 10**400]
DURATIONS = ["250ms", "5m", "1h30m", "1.5", "0", "-1s", "1e400s", "9" * 400 + "h", "nan", "inf"]
DURATIONS += ["", " ", "5x", "1h 30m", "\u00b5s", "1\u00b5s", ".5s", "5.s", "1e3", "0x10"]
ADDRESSES = [
    "127.0.0.1:7946",
    "10.0.0.2:7946",
    "[::1]:0",
    ":0",
    "h:99999",
    "h:-1",
    "h:+1",
    "h: 1",
    "h:0",
]
# Digits that str.isdigit() accepts but int() may not (superscripts), or reads (Arabic-Indic).
ADDRESSES += ["h:\u00b2", "h:\u0661\u0662\u0663", "h:\uff11", "h:1\u00b2", "h:", "h", ""]
FLOATS = [math.nan, math.inf, -math.inf, 0.0, -0.0, 0.5, 1e308, 5e-324, 1e-9]
NUMERIC_TEXT = ["1.5", "1e400", "-0", "0x10", "1_000", ".5", "5.", "+1", "NaN", "\u0661"]
_MAX_VALUE_DEPTH = 3

# The byte strings the generators read their choices from.
entropy_bytes = st.binary(max_size=200)


def _int(e: Entropy) -> int:
    """An edge integer or any integer of up to 64 bits, either sign."""
    if not e.one_in(3):
        return e.pick(EDGE_INTS)
    value = int.from_bytes(e.take(1 + e.below(8)), "big")
    return -value if e.one_in(2) else value


def _text(e: Entropy) -> str:
    """A short string without lone surrogates: Latin-1 from bytes, or any code points."""
    if e.one_in(3):
        text = "".join(chr(e.below(0x110000)) for _ in range(e.below(9)))
        return text.encode("utf-8", "replace").decode("utf-8")
    return e.blob(16).decode("latin-1")


def _scalar(e: Entropy) -> Any:
    """None, a boolean, a number, or a string shaped like a duration, an address or a number."""
    kind = e.below(9)
    if kind == 0:
        return e.pick([None, True, False])
    if kind in (1, 2):
        return _int(e)
    if kind == 3:
        return e.pick(FLOATS) if e.one_in(2) else struct.unpack(">d", e.take(8))[0]
    if kind == 4:
        return e.pick(DURATIONS)
    if kind == 5:
        return e.pick(ADDRESSES)
    if kind == 6:
        return e.pick(NUMERIC_TEXT)
    return _text(e)


def _plain(e: Entropy, depth: int = 0) -> Any:
    """What a parser gives: scalars, lists and string-keyed mappings of them."""
    kind = e.below(4 if depth < _MAX_VALUE_DEPTH else 2)
    if kind < 2:
        return _scalar(e)
    if kind == 2:
        return [_plain(e, depth + 1) for _ in range(e.below(5))]
    return {_text(e): _plain(e, depth + 1) for _ in range(e.below(4))}


def _python(e: Entropy, depth: int = 0) -> Any:
    """What a caller of ``Options.from_mapping`` may pass beyond what a parser gives."""
    kind = e.below(16)
    if kind < 4:
        return _plain(e, depth)
    makers: list[Callable[[], Any]] = [
        lambda: e.blob(8),
        lambda: bytearray(e.blob(8)),
        lambda: (_text(e), _text(e)),
        lambda: frozenset(_text(e) for _ in range(e.below(4))),
        lambda: {_int(e) for _ in range(e.below(4))},
        lambda: date(1 + e.below(9999), 1 + e.below(12), 1 + e.below(28)),
        lambda: datetime(1 + e.below(9999), 1 + e.below(12), 1 + e.below(28), e.below(24)),
        lambda: (
            e.pick([timedelta.max, timedelta.min, timedelta(seconds=-1)])
            if e.one_in(2)
            else timedelta(seconds=_int(e) % 10**14)
        ),
        lambda: e.pick([Decimal("NaN"), Decimal("Infinity"), Decimal("1e400"), Decimal(_int(e))]),
        lambda: Fraction(_int(e), 1 + e.below(100)),
        lambda: complex(_scalar(e) if e.one_in(2) else 0, 1),
        lambda: e.pick([object(), NetworkOptions(), SslOptions(), StorageOptions()]),
        lambda: MappingProxyType({_text(e): _scalar(e) for _ in range(e.below(3))}),
    ]
    try:
        return makers[e.below(len(makers))]()
    except (TypeError, ValueError, OverflowError):  # complex() of a string, say: any value
        return None


_PLAUSIBLE_DURATIONS = ["0", "250ms", "1s", "5m", "1h30m", "100us", 0.5, 3]


def _plausible(e: Entropy, f: dataclasses.Field[Any]) -> Any:
    """A value of the field's kind, in or just out of its range: random values mostly fail
    the first check, and the later ones (cross-field checks, addresses) need good values."""
    spec = f.metadata
    kind = spec["kind"]
    if kind in ("int", "float"):
        low = int(spec.get("min", 0))
        high = int(spec.get("max", low + 2**20))
        edges = [low, high, low - 1, high + 1]
        value = e.pick(edges) if e.one_in(3) else e.between(low, high)
        return float(value) if kind == "float" or e.one_in(4) else value
    if kind == "duration":
        return e.pick(_PLAUSIBLE_DURATIONS)
    if kind == "bool":
        return e.pick([False, True])
    if kind == "str_list":
        return [e.pick(ADDRESSES) for _ in range(e.below(4))]
    if "addr" in f.name:
        return e.pick(ADDRESSES)
    if "choices" in spec:
        return e.pick(list(spec["choices"]))
    if kind == "optional_str":
        return e.pick([None, "memory", "tcp"])
    return _text(e)


def _mapping(
    e: Entropy, values: Callable[[Entropy, int], Any], section: type = Options, depth: int = 0
) -> dict[Any, Any]:
    """A mapping of one options section: known keys (sections nested), their values plausible
    or anything, and now and then an unknown key."""
    fields = _fields(section)
    sections = _section_fields(section)
    names = sorted(fields)
    out: dict[Any, Any] = {}
    for _ in range(e.below(7)):
        name = e.pick(names)
        sub = sections[name]
        if sub is not None and depth < _MAX_VALUE_DEPTH and not e.one_in(4):
            out[name] = _mapping(e, values, sub, depth + 1)
        elif sub is None and not e.one_in(3):
            out[name] = _plausible(e, fields[name])
        else:
            out[name] = values(e, depth + 1)
    if e.one_in(8):
        out[e.pick([_text(e), _int(e), None])] = values(e, depth + 1)
    return out


@settings(max_examples=fuzz_examples(300))
@given(entropy_bytes)
def test_options_from_any_mapping_are_built_or_refused_with_config_error(entropy: bytes) -> None:
    builds_or_refuses(_mapping(Entropy(entropy), _python))


# -- text -----------------------------------------------------------------------------------


def _toml_value(value: Any) -> str:
    """``value`` written as TOML (close enough: some outputs are invalid, which is fine)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        pairs = (f"{json.dumps(str(k))} = {_toml_value(v)}" for k, v in value.items())
        return "{" + ", ".join(pairs) + "}"
    return json.dumps(str(value))


def _toml(mapping: dict[Any, Any]) -> str:
    """``mapping`` as TOML: scalars first, then one table per flat sub-mapping."""
    lines, tables = [], []
    for key, value in mapping.items():
        if (
            isinstance(value, dict)
            and value
            and not any(isinstance(v, dict) for v in value.values())
        ):
            tables.append((key, value))
        else:
            lines.append(f"{json.dumps(str(key))} = {_toml_value(value)}")
    for key, table in tables:
        lines.append(f"[{json.dumps(str(key))}]")
        lines += [f"{json.dumps(str(k))} = {_toml_value(v)}" for k, v in table.items()]
    return "\n".join(lines) + "\n"


# YAML constructs that load into something other than plain data, or fail oddly.
YAML_SPECIALS = [
    "ttl: !!binary aGVsbG8=\n",
    "ttl: !!binary not base64\n",
    "ttl: !!timestamp 2001-12-14t21:59:43.10-05:00\n",
    "ttl: 2001-13-45\n",
    "ttl: 2001-02-30 25:61:61\n",
    "ttl: !!int 12a\n",
    "ttl: !!float abc\n",
    "ttl: !!str\n",
    "seed_addrs: !!set {a: null}\n",
    "seed_addrs: !!omap [a: 1]\n",
    "seed_addrs: !!pairs [a: 1, a: 2]\n",
    "network: !!python/object:os.system {}\n",
    "network: &n {type: memory}\nstorage: *n\n",
    "base: &b {replica_count: 2}\n<<: *b\n",
    "<<: [1, 2]\n",
    "? [a, b]\n: 1\n",
    "? {a: 1}\n: 1\n",
    "a: *undefined\n",
    "a: &a [*a]\n",
    "%YAML 1.1\n---\nttl: 1\n",
    "ttl: 1\n---\nttl: 2\n",
    "ttl: 0o17\nreplica_count: 0x10\nvirtual_nodes: 1_000\n",
    "ttl: .nan\nmembership: {suspicion_max_mult: .inf}\n",
    "\ufeffttl: 1\n",
]
TOML_SPECIALS = [
    "ttl = 1979-05-27T07:32:00Z\n",
    "ttl = 07:32:00\n",
    "ttl = 1979-05-27\n",
    "ttl = nan\n[membership]\nsuspicion_max_mult = inf\n",
    "a.b.c = 1\n",
    "[[network]]\ntype = 'memory'\n",
    "network = {ssl = {enabled = true}}\n",
    'seed_addrs = """\na:1,\nb:2"""\n',
    "replica_count = 0b11\n",
]
SYNTAX = ["{", "}", "[", "]", ":", "=", ",", "\n", "  ", "&a ", "*a", "!!", "'", '"', "#"]
SYNTAX += ["<<: ", "---\n", "? ", "- ", "\\", "\t", "\x00", "\ud800", "\u2028", "\ufeff", "."]
PATH_ENDS = [".yaml", ".yml", ".json", ".toml", ".YAML", "/", "/x", "\\x", ""]


def _garbage(e: Entropy) -> str:
    """Pieces of syntax, words and numbers in any order."""
    pieces = []
    for _ in range(e.below(16)):
        kind = e.below(4)
        if kind == 0:
            pieces.append(e.pick(SYNTAX))
        elif kind == 1:
            pieces.append(e.pick(sorted(_section_fields(Options))))
        elif kind == 2:
            pieces.append(str(_int(e)))
        else:
            pieces.append(_text(e))
    return "".join(pieces)


TEXT_MAKERS: dict[str, Callable[[Entropy], str]] = {
    "json": lambda e: json.dumps(_mapping(e, _plain)),
    "yaml": lambda e: yaml.safe_dump(_mapping(e, _plain), default_flow_style=e.pick([None, True])),
    "toml": lambda e: _toml(_mapping(e, _plain)),
    "special": lambda e: e.pick(YAML_SPECIALS + TOML_SPECIALS),
    "garbage": _garbage,
    "path": lambda e: _text(e) + e.pick(PATH_ENDS),
}


def _mutate_text(text: str, e: Entropy) -> str:
    """Zero to three character-level edits: a piece of syntax inserted, a slice deleted or
    repeated."""
    for _ in range(e.below(4)):
        at = e.below(len(text) + 1)
        op = e.below(3)
        if op == 0:
            text = text[:at] + (e.pick(SYNTAX) if e.one_in(2) else _text(e)) + text[at:]
        elif op == 1:
            text = text[:at] + text[at + 1 + e.below(8) :]
        else:
            text = text[:at] + text[at : at + 1 + e.below(16)] + text[at:]
    return text


@settings(max_examples=fuzz_examples(300))
@given(st.sampled_from(sorted(TEXT_MAKERS)), entropy_bytes)
def _fuzz_load_config_text(kind: str, entropy: bytes) -> None:
    e = Entropy(entropy)
    loads_or_refuses(_mutate_text(TEXT_MAKERS[kind](e), e))


def test_load_config_of_any_text_returns_options_or_raises_config_error() -> None:
    with _in_empty_directory():
        _fuzz_load_config_text()


SUFFIXES = [".json", ".yaml", ".yml", ".toml", ".conf", ""]


@settings(max_examples=fuzz_examples(300))
@given(st.sampled_from(SUFFIXES), st.sampled_from([*sorted(TEXT_MAKERS), "bytes"]), entropy_bytes)
def _fuzz_load_config_file(directory: Path, suffix: str, kind: str, entropy: bytes) -> None:
    e = Entropy(entropy)
    if kind == "bytes":
        content = e.blob(200)
    else:
        content = _mutate_text(TEXT_MAKERS[kind](e), e).encode("utf-8", "surrogatepass")
    path = directory / f"node{suffix}"
    path.write_bytes(content)
    loads_or_refuses(path)
    loads_or_refuses(str(path))


def test_load_config_of_any_file_returns_options_or_raises_config_error() -> None:
    with _in_empty_directory() as directory:
        _fuzz_load_config_file(directory)


# -- bombs, deep nesting, huge numbers --------------------------------------------------------


def _laughs(levels: int = 9, width: int = 9) -> str:
    """The "billion laughs": each level an alias list of the level before, width**levels."""
    lines = ["l0: &l0 [" + ", ".join(["lol"] * width) + "]"]
    for i in range(1, levels + 1):
        lines.append(f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * width) + "]")
    return "\n".join(lines) + "\n"


HOSTILE = {
    "yaml alias bomb": _laughs(),
    "yaml alias bomb as seeds": _laughs() + "seed_addrs: *l9\n",
    "yaml alias bomb as a duration": _laughs() + "ttl: *l9\n",
    "yaml alias bomb as a section": _laughs() + "network: *l9\n",
    "yaml recursive alias": "seed_addrs: &a [*a]\n",
    "yaml recursive mapping": "network: &a {ssl: *a}\n",
    "json nested 50": '{"seed_addrs": ' + "[" * 50 + "]" * 50 + "}",
    "json nested 1000": '{"seed_addrs": ' + "[" * 1000 + "]" * 1000 + "}",
    "json nested 100000": '{"seed_addrs": ' + "[" * 100_000 + "]" * 100_000 + "}",
    "json objects nested 100000": '{"a":' * 100_000 + "1" + "}" * 100_000,
    "yaml flow nested 1000": "seed_addrs: " + "[" * 1000 + "]" * 1000 + "\n",
    "yaml flow nested 100000": "seed_addrs: " + "[" * 100_000 + "]" * 100_000 + "\n",
    "yaml block nested 300": "".join("  " * i + "a:\n" for i in range(300)) + "  " * 300 + "1\n",
    "toml arrays nested 1000": "seed_addrs = " + "[" * 1000 + "]" * 1000 + "\n",
    "toml tables nested 1000": "network = " + "{a = " * 1000 + "1" + "}" * 1000 + "\n",
    "toml dotted key 100000": "a" + ".a" * 100_000 + " = 1\n",
    "toml table header 100000": "[a" + ".a" * 100_000 + "]\n",
    "json int of 400 digits as a duration": '{"ttl": 1' + "0" * 400 + "}",
    "json int of 400 digits as a float": '{"membership": {"suspicion_max_mult": 1'
    + "0" * 400
    + "}}",
    "json int of 5000 digits": '{"replica_count": 1' + "0" * 5000 + "}",
    "yaml int of 5000 digits": "replica_count: 1" + "0" * 5000 + "\n",
    "toml int of 5000 digits": "replica_count = 1" + "0" * 5000 + "\n",
    "yaml impossible date": "ttl: 2001-13-45\n",
    # Found by the fuzz tests: PyYAML raised ValueError, IndexError or AttributeError.
    "yaml date in year 0": "0: 0000-00-00",
    "yaml !!int of garbage": "0: !!int ;",
    "yaml empty !!int": "0: !!int",
    "yaml empty !!float": "0: !!float",
    "yaml empty !!timestamp": "x: !!timestamp",
    "superscript port": "local_address: 'h:\u00b2'\n",
    "text over the size limit": "# padding\n" * 200_000 + "ttl: 1\n",
}


@pytest.mark.parametrize("text", list(HOSTILE.values()), ids=list(HOSTILE))
def test_hostile_config_text_is_refused_with_config_error(text: str) -> None:
    with _in_empty_directory(), pytest.raises(ConfigError):
        load_config(text)


def _python_bomb(levels: int = 30, width: int = 10) -> list[Any]:
    """A list whose repr would take width**levels steps: the in-memory twin of a YAML bomb."""
    bomb: list[Any] = ["x"] * width
    for _ in range(levels):
        bomb = [bomb] * width
    return bomb


def _deep(levels: int) -> list[Any]:
    nested: list[Any] = []
    for _ in range(levels):
        nested = [nested]
    return nested


HOSTILE_MAPPINGS: dict[str, dict[Any, Any]] = {
    "alias bomb as seeds": {"seed_addrs": _python_bomb()},
    "alias bomb as a duration": {"ttl": _python_bomb()},
    "alias bomb as an int": {"replica_count": _python_bomb()},
    "alias bomb as a section": {"network": _python_bomb()},
    "alias bomb as a subsection": {"network": {"ssl": _python_bomb()}},
    "nested 100000 as seeds": {"seed_addrs": _deep(100_000)},
    "nested 100000 as a duration": {"ttl": _deep(100_000)},
    "int of 400 digits as a duration": {"ttl": 10**400},
    "int of 5000 digits": {"replica_count": 10**5000},
    "int of 400 digits as a float": {"membership": {"suspicion_max_mult": 10**400}},
    "int of 5000 digits as a key": {10**5000: 1},
    "superscript port": {"local_address": "h:\u00b2"},
    "superscript seed port": {"seed_addrs": ["h:\u00b2"]},
    "superscript bind port": {"network": {"bind_addr": "h:\u00b9\u00b2"}},
    "nan as a float": {"membership": {"suspicion_max_mult": math.nan}},
    "infinity as a float": {"membership": {"suspicion_max_mult": math.inf}},
}


@pytest.mark.parametrize("mapping", list(HOSTILE_MAPPINGS.values()), ids=list(HOSTILE_MAPPINGS))
def test_hostile_mappings_are_refused_with_config_error(mapping: dict[Any, Any]) -> None:
    started = time.monotonic()
    with pytest.raises(ConfigError):
        Options.from_mapping(mapping)
    assert time.monotonic() - started < _SECONDS_PER_INPUT
