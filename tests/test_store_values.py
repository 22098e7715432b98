"""The text of a value file: what `cat` shows and what `echo ... >` or `set` may write."""

from __future__ import annotations

from functools import partial

import pytest
from hypothesis import given
from hypothesis import strategies as st

from store import Lifecycle, Timestamp
from store.values import FIELDS, decode_value, parse_create_error, parse_started_at
from tests.outcomes import outcome

T0 = Timestamp.parse("2024-01-02T04:04:05.5+01:00")


def applied(text: str, field: str) -> Lifecycle:
    record = Lifecycle(T0, True)
    FIELDS[field].parse(text)(record)
    return record


@pytest.mark.parametrize(
    ("text", "expected"),
    [("true", True), ("1", True), ("false", False), ("0", False), ("0\n", False)],
)
def test_create_error_takes_true_false_1_0(text: str, expected: bool) -> None:
    assert applied(text, "create_error").create_error is expected


@pytest.mark.parametrize("text", ["maybe", "True", "yes", "", "\n", " 1", "1 ", "1\n\n", "01"])
def test_create_error_refuses_anything_else(text: str) -> None:
    with pytest.raises(ValueError, match="expected true, false, 1 or 0"):
        parse_create_error(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", Timestamp.UNSET),
        ("\n", Timestamp.UNSET),
        ("2024-01-02T04:04:05.5+01:00\n", T0),
        ("2024-01-02T03:04:05.5Z", Timestamp(T0.unix_ns)),
    ],
)
def test_started_at_takes_rfc3339_or_empty(text: str, expected: Timestamp) -> None:
    assert applied(text, "started_at").started_at == expected


@pytest.mark.parametrize("text", ["2024-01-02T03:04:05+24:00", "2024-01-02T03:04:05-24:30"])
def test_started_at_refuses_offsets_nerdctl_cannot_write(text: str) -> None:
    with pytest.raises(ValueError, match="24 hours"):
        parse_started_at(text)


def test_rendering_never_fails_whatever_the_year() -> None:
    far = Lifecycle(Timestamp.parse("9999-12-31T23:59:59Z").shifted(seconds=1))
    assert FIELDS["started_at"].render(far) == "10000-01-01T00:00:00Z\n"
    assert FIELDS["started_at"].render(Lifecycle()) == ""
    assert FIELDS["create_error"].render(far) == "false\n"


@given(text=st.text(max_size=40))
def test_any_text_is_a_change_or_a_value_error(text: str) -> None:
    for field in FIELDS.values():
        update = outcome(partial(field.parse, text), ValueError)
        if isinstance(update, ValueError):
            assert str(update)
            continue
        record = Lifecycle(T0, True)
        update(record)
        assert isinstance(record.started_at, Timestamp)
        assert isinstance(record.create_error, bool)
        assert field.render(record)[-1:] in ("", "\n")


@given(data=st.binary(max_size=40))
def test_any_bytes_are_text_or_a_value_error(data: bytes) -> None:
    try:
        text = decode_value(data)
    except ValueError as error:
        assert "UTF-8" in str(error)  # noqa: PT017 - the message is the promise
        return
    assert text.encode() == data
