"""Message classes declare each field once; the registry refuses a doubtful declaration."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Annotated

import pytest
from gridkv.wire import fields as wire
from gridkv.wire.messages import MESSAGE_TYPES, HandoffDone, Message, Ping, message


def test_fields_follow_the_dataclass_declaration() -> None:
    for cls in MESSAGE_TYPES.values():
        names = [spec.name for spec in dataclasses.fields(cls)]  # type: ignore[arg-type]
        assert [name for name, _ in cls.FIELDS] == names, cls.__name__
    # A field named like its validator still finds the validator, not the slot descriptor.
    declared = HandoffDone.FIELDS
    assert declared == (("sender", wire.node_id), ("partitions", wire.partitions))


def test_a_taken_type_number_fails_at_declaration() -> None:
    with pytest.raises(TypeError, match="message type 1 is taken by Ping"):

        @message(Ping.TYPE)
        @dataclass(frozen=True, slots=True)
        class Another(Message):
            seq: Annotated[int, wire.u64]

    assert MESSAGE_TYPES[1] is Ping


def test_a_field_without_a_validator_fails_at_declaration() -> None:
    with pytest.raises(TypeError, match=r"Bare\.seq needs Annotated"):

        @message(250)
        @dataclass(frozen=True, slots=True)
        class Bare(Message):
            seq: int

    assert 250 not in MESSAGE_TYPES
