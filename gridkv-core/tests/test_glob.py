"""Redis globs (KEYS, SCAN MATCH, CONFIG GET): the matcher agrees with a plain recursive
reading of Redis's rules, and no pattern makes it take exponential time."""

from __future__ import annotations

import subprocess
import sys

import pytest
from gridkv.cluster.keyspace import glob
from gridkv.testing.fuzz import fuzz_examples
from hypothesis import given, settings
from hypothesis import strategies as st


def reference(pattern: bytes, key: bytes) -> bool:
    """Redis's ``stringmatchlen``, recursively (exponential, for small inputs only)."""
    if not pattern:
        return not key
    c = pattern[:1]
    if c == b"*":
        return any(reference(pattern[1:], key[i:]) for i in range(len(key) + 1))
    if not key:
        return False
    if c == b"?":
        return reference(pattern[1:], key[1:])
    if c == b"\\" and len(pattern) > 1:
        return key[:1] == pattern[1:2] and reference(pattern[2:], key[1:])
    if c == b"[":
        i = 1
        negate = pattern[i : i + 1] == b"^"
        if negate:
            i += 1
        hit = False
        while i < len(pattern) and pattern[i : i + 1] != b"]":
            if pattern[i : i + 1] == b"\\" and i + 1 < len(pattern):
                hit |= key[0] == pattern[i + 1]
                i += 2
            elif pattern[i + 1 : i + 2] == b"-" and i + 2 < len(pattern):
                low, high = sorted((pattern[i], pattern[i + 2]))
                hit |= low <= key[0] <= high
                i += 3
            else:
                hit |= key[0] == pattern[i]
                i += 1
        return hit != negate and reference(pattern[i + 1 :], key[1:])
    return key[:1] == c and reference(pattern[1:], key[1:])


@pytest.mark.parametrize(
    ("pattern", "key", "expected"),
    [
        (b"h?llo", b"hello", True),
        (b"h?llo", b"hllo", False),
        (b"h*llo", b"heeeello", True),
        (b"h[ae]llo", b"hallo", True),
        (b"h[^e]llo", b"hello", False),
        (b"h[a-b]llo", b"hbllo", True),
        (b"h[b-a]llo", b"hallo", True),
        (b"*", b"", True),
        (b"a*", b"a", True),
        (b"*a*b*", b"xxaxxbxx", True),
        (b"*a*b", b"xxaxxbx", False),
        (b"\\*", b"*", True),
        (b"\\*", b"a", False),
        (b"[\\]]", b"]", True),
    ],
)
def test_documented_patterns(pattern: bytes, key: bytes, expected: bool) -> None:
    assert glob(pattern).matches(key) is expected


@pytest.mark.fuzz
@settings(max_examples=fuzz_examples(), deadline=None)
@given(
    pattern=st.lists(st.sampled_from([b"*", b"?", b"a", b"b", b"[ab]", b"[^a]", b"[a-b]", b"\\*"]),
                     max_size=6).map(b"".join),
    key=st.binary(max_size=8).map(lambda b: bytes(98 if x % 3 == 0 else 97 if x % 3 == 1 else x
                                                  for x in b)),
)  # fmt: skip
def test_the_matcher_agrees_with_redis_rules(pattern: bytes, key: bytes) -> None:
    assert glob(pattern).matches(key) is reference(pattern, key)


def test_no_pattern_takes_exponential_time() -> None:
    # A regular expression with ".*" for each star backtracks exponentially here (the RESP
    # door froze for minutes on KEYS *a*a*a*b over one long key).
    code = (
        "from gridkv.cluster.keyspace import glob\n"
        "key = b'a' * 5000\n"
        "assert not glob(b'*a*a*a*a*a*a*a*b').matches(key)\n"
        "assert glob(b'*a*a*a*a*a*a*a*a').matches(key)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
