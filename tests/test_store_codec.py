"""lifecycle.json as nerdctl v2.0.3 writes and reads it (PROTOCOL.md's table)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from store import Lifecycle, RawJSON, RecordCorruptError, Store, Timestamp, codec
from store.codec import decode, encode
from tests.conftest import GOLDEN
from tests.workers import bump

GOLDEN_FILES = sorted(GOLDEN.glob("*.json"))
A = TypeVar("A")
R = TypeVar("R")
T0 = "2024-01-02T03:04:05.123456789Z"


def write_record(state_dir: Path, data: bytes) -> Path:
    path = state_dir / "lifecycle.json"
    path.write_bytes(data)
    return path


def test_golden_samples_are_present() -> None:
    assert len(GOLDEN_FILES) == 7


@pytest.mark.parametrize("golden", GOLDEN_FILES, ids=lambda path: path.stem)
def test_golden_record_written_back_byte_identical(state_dir: Path, golden: Path) -> None:
    original = golden.read_bytes()
    path = write_record(state_dir, original)
    path.unlink()
    path.write_bytes(original)

    Store(state_dir).transform(lambda record: None)

    assert path.read_bytes() == original


@pytest.mark.parametrize("golden", GOLDEN_FILES, ids=lambda path: path.stem)
def test_golden_record_reencodes_from_its_fields(golden: Path) -> None:
    original = golden.read_bytes()
    record = decode(original)
    rebuilt = Lifecycle(
        started_at=Timestamp.parse(record.started_at.format()),
        create_error=record.create_error,
    )
    assert encode(rebuilt) == original


def test_golden_values_are_what_nerdctl_stored() -> None:
    assert decode((GOLDEN / "01_zero_after_noop_transform.json").read_bytes()) == Lifecycle()
    offset = decode((GOLDEN / "03_offset_plus0100_parsed.json").read_bytes()).started_at
    assert offset.offset == 3600
    assert offset.unix_ns == Timestamp.parse(T0).unix_ns
    assert decode((GOLDEN / "05_create_error_true.json").read_bytes()).create_error is True
    bumped = decode((GOLDEN / "09_bump_10_from_empty.json").read_bytes()).started_at
    assert bumped == Timestamp(0).shifted(seconds=10)


def test_bumping_ten_times_from_the_epoch_writes_nerdctls_bytes(state_dir: Path) -> None:
    store = Store(state_dir)
    store.update(started_at=Timestamp(0))
    for _ in range(10):
        store.transform(bump)
    expected = (GOLDEN / "09_bump_10_from_empty.json").read_bytes()
    assert (state_dir / "lifecycle.json").read_bytes() == expected


def test_unset_record_is_written_as_nerdctl_writes_it() -> None:
    expected = (GOLDEN / "01_zero_after_noop_transform.json").read_bytes()
    assert encode(Lifecycle()) == expected
    assert not expected.endswith(b"\n")


ACCEPTED = {
    "null": (b"null", Lifecycle()),
    "empty object": (b"{}", Lifecycle()),
    "null values": (b'{"started_at":null,"create_error":null}', Lifecycle()),
    "missing key": (b'{"create_error":true}', Lifecycle(create_error=True)),
    "key in another case": (
        b'{"STARTED_AT":"' + T0.encode() + b'","Create_Error":true}',
        Lifecycle(Timestamp.parse(T0), True),
    ),
    "key folded as Go folds it (long s)": (
        '{"\u017ftarted_at":"2024-01-02T03:04:05Z"}'.encode(),
        Lifecycle(Timestamp.parse("2024-01-02T03:04:05Z")),
    ),
    "duplicate keys, last wins": (
        b'{"create_error":true,"create_error":false}',
        Lifecycle(create_error=False),
    ),
    "null after a value keeps the value": (
        b'{"create_error":true,"create_error":null}',
        Lifecycle(create_error=True),
    ),
    "pretty-printed with trailing newline": (
        b'{\n  "started_at": "' + T0.encode() + b'",\n  "create_error": true\n}\n',
        Lifecycle(Timestamp.parse(T0), True),
    ),
    "comma before the fraction": (
        b'{"started_at":"2024-01-02T03:04:05,5Z"}',
        Lifecycle(Timestamp.parse("2024-01-02T03:04:05.5Z")),
    ),
    "more than nine fraction digits are cut": (
        b'{"started_at":"2024-01-02T03:04:05.1234567899999Z"}',
        Lifecycle(Timestamp.parse("2024-01-02T03:04:05.123456789Z")),
    ),
    "-00:00 is UTC": (
        b'{"started_at":"2024-01-02T03:04:05-00:00"}',
        Lifecycle(Timestamp.parse("2024-01-02T03:04:05Z")),
    ),
    "offset +24:00 loads": (
        b'{"started_at":"2024-01-02T03:04:05+24:00"}',
        Lifecycle(Timestamp(Timestamp.parse("2024-01-01T03:04:05Z").unix_ns, 86_400)),
    ),
    "one-digit hour (Go's parser takes it)": (
        b'{"started_at":"2024-01-02T3:04:05Z"}',
        Lifecycle(Timestamp.parse("2024-01-02T03:04:05Z")),
    ),
}


@pytest.mark.parametrize(("data", "expected"), ACCEPTED.values(), ids=ACCEPTED.keys())
def test_reader_accepts_what_nerdctl_accepts(data: bytes, expected: Lifecycle) -> None:
    assert decode(data) == expected


REJECTED = {
    "empty file": b"",
    "only whitespace": b" \n",
    "trailing garbage": b'{"create_error":true}x',
    "two objects": b"{}{}",
    "UTF-8 BOM": b"\xef\xbb\xbf{}",
    "truncated": b'{"started_at":"2024-01-02T03:04:05Z","create_err',
    "create_error as 1": b'{"create_error":1}',
    'create_error as "true"': b'{"create_error":"true"}',
    "started_at as a number": b'{"started_at":1704164645}',
    "started_at as an object": b'{"started_at":{}}',
    "lowercase z": b'{"started_at":"2024-01-02T03:04:05z"}',
    "lowercase t": b'{"started_at":"2024-01-02t03:04:05Z"}',
    "space separator": b'{"started_at":"2024-01-02 03:04:05Z"}',
    "no offset": b'{"started_at":"2024-01-02T03:04:05"}',
    "offset without colon": b'{"started_at":"2024-01-02T03:04:05+0100"}',
    "leap second": b'{"started_at":"2016-12-31T23:59:60Z"}',
    "offset hour 25": b'{"started_at":"2024-01-02T03:04:05+25:00"}',
    "day that does not exist": b'{"started_at":"2023-02-29T03:04:05Z"}',
    "escaped digits in started_at": b'{"started_at":"\\u0032024-01-02T03:04:05Z"}',
    "a JSON array": b"[]",
    "a JSON string": b'"x"',
    "NaN": b'{"x":NaN}',
}


@pytest.mark.parametrize("data", REJECTED.values(), ids=REJECTED.keys())
def test_reader_rejects_what_nerdctl_rejects(data: bytes) -> None:
    with pytest.raises(ValueError, match=r"\S"):
        decode(data)


def test_corrupt_record_error_names_the_file_and_the_problem(state_dir: Path) -> None:
    path = write_record(state_dir, b"")
    with pytest.raises(RecordCorruptError, match="empty") as caught:
        Store(state_dir).load()
    assert str(path) in str(caught.value)
    assert caught.value.path == str(path)


def test_corrupt_record_is_never_overwritten_by_a_transform(state_dir: Path) -> None:
    path = write_record(state_dir, b'{"started_at":"2024-01-02T03:04:05Z","create_err')
    with pytest.raises(RecordCorruptError):
        Store(state_dir).update(create_error=True)
    assert path.read_bytes() == b'{"started_at":"2024-01-02T03:04:05Z","create_err'
    assert os.listdir(state_dir) == ["lifecycle.json"]


def test_unknown_keys_survive_a_transform(state_dir: Path) -> None:
    path = write_record(
        state_dir,
        b'{"started_at":"' + T0.encode() + b'","x-extra":{"n":1.50,"s":"\xc3\xa9"},'
        b'"create_error":false,"later":[1,null,true]}',
    )
    Store(state_dir).update(create_error=True)
    assert path.read_bytes() == (
        b'{"started_at":"' + T0.encode() + b'","create_error":true,'
        b'"x-extra":{"n":1.5,"s":"\\u00e9"},"later":[1,null,true]}'
    )
    reread = decode(path.read_bytes())
    assert reread.create_error is True
    assert dict(reread.extra) == {"x-extra": {"n": 1.5, "s": "é"}, "later": [1, None, True]}


def test_keys_in_another_case_are_written_back_canonical(state_dir: Path) -> None:
    path = write_record(state_dir, b'{"Started_At":"' + T0.encode() + b'"}')
    Store(state_dir).transform(lambda record: None)
    assert path.read_bytes() == b'{"started_at":"' + T0.encode() + b'","create_error":false}'


timestamps = st.builds(
    Timestamp,
    st.integers(
        Timestamp.parse("0000-01-02T00:00:00Z").unix_ns,
        Timestamp.parse("9999-12-30T00:00:00Z").unix_ns,
    ),
    st.integers(-23 * 60 - 59, 23 * 60 + 59).map(lambda minutes: minutes * 60),
)


@given(started_at=timestamps, create_error=st.booleans())
def test_every_record_round_trips_through_its_bytes(
    started_at: Timestamp, create_error: bool
) -> None:
    record = Lifecycle(started_at, create_error)
    data = encode(record)
    assert decode(data) == record
    assert encode(decode(data)) == data


# Keys nerdctl does not know: kept, and never a reason to fail (nerdctl just skips them).

UNKNOWN_VALUES = {
    "a number beyond float range": b"1e999",
    "a negative one": b"-1e999",
    "a number that underflows": b"1e-999",
    "a 5000-digit integer": b"9" * 5000,
    "a 700-digit integer": b"-" + b"1" * 699,
    "nested 5000 deep": b"[" * 5000 + b"]" * 5000,
    "nested 990 deep": b"[" * 990 + b"]" * 990,
    "objects nested 200 deep": b'{"a":' * 200 + b"1" + b"}" * 200,
    "an escaped string": b'"\\u00e9\\n\\"x\\""',
    "a lone surrogate": b'"\\ud800"',
}


@pytest.mark.parametrize("value", UNKNOWN_VALUES.values(), ids=UNKNOWN_VALUES.keys())
def test_an_unknown_key_loads_and_is_written_back_as_it_was(state_dir: Path, value: bytes) -> None:
    head = b'{"started_at":"' + T0.encode() + b'","create_error":false,"x":'
    path = write_record(state_dir, head + value + b"}")
    assert decode(path.read_bytes()).started_at == Timestamp.parse(T0)
    Store(state_dir).update(create_error=True)
    written = path.read_bytes()
    assert written.startswith(b'{"started_at":"' + T0.encode() + b'","create_error":true,"x":')
    extra = decode(head + value + b"}").extra
    assert decode(written) == Lifecycle(Timestamp.parse(T0), True, extra)
    if not value.startswith(b'"'):  # numbers and arrays come back exactly as written
        assert written.endswith(b',"x":' + value + b"}")


def test_numbers_python_cannot_hold_are_raw_json_not_inf() -> None:
    extra = dict(decode(b'{"a":1e999,"b":' + b"7" * 5000 + b',"c":1.50,"d":-0.0}').extra)
    assert extra["a"] == RawJSON("1e999")
    assert extra["b"] == RawJSON("7" * 5000)
    assert extra["c"] == 1.5
    assert extra["d"] == 0.0
    assert encode(Lifecycle(extra=(("a", extra["a"]),))).endswith(b',"a":1e999}')


def test_values_nested_deeper_than_128_levels_are_kept_as_raw_json() -> None:
    """Python's parser would recurse that deep: such a value stays the JSON it was."""
    deep = b"[" * 129 + b"]" * 129
    shallow = b"[" * 128 + b"]" * 128
    (_, kept), (_, parsed) = decode(b'{"deep":' + deep + b',"shallow":' + shallow + b"}").extra
    assert kept == RawJSON(deep.decode())
    assert isinstance(parsed, list)


def test_values_nested_deeper_than_go_allows_are_refused() -> None:
    depth = 10_000 - 1  # the record's object is one level
    decode(b'{"x":' + b"[" * depth + b"]" * depth + b"}")
    with pytest.raises(ValueError, match="max depth"):
        decode(b'{"x":' + b"[" * (depth + 1) + b"]" * (depth + 1) + b"}")


@pytest.mark.parametrize(
    "data",
    [
        b'{"started_at":"2024-01-02T03:04:05Z","started_at":"\\u0032024-01-02T03:04:05Z"}',
        b'{"started_at":"\\u0032024-01-02T03:04:05Z","started_at":"2024-01-02T03:04:05Z"}',
        b'{"x":"\\n","STARTED_AT":"2024-01-02T03:04:05\\u005a"}',
        b'{"started_at":"2024-01-02T03:04:05Z","create_error":false,"Started_At":"\\/"}',
        b'{"x":"' + b"[" * 200 + b'","started_at":"2024\\u002d01-02T03:04:05Z"}',
    ],
)
def test_any_started_at_written_with_escapes_is_refused(data: bytes) -> None:
    with pytest.raises(ValueError, match="escapes"):
        decode(data)


@pytest.mark.parametrize(
    "data",
    [
        b'{"started_at":"2024-01-02T03:04:05Z","create_error":false,}',
        b'{"started_at":"2024-01-02T03:04:05Z","create_error":false, }',
        b'{"started_at":"2024-01-02T03:04:05Z","create_error":false,"x"}',
        b'{"started_at":"2024-01-02T03:04:05Z","create_error":false,"x":Infinity}',
        b'{"started_at":"2024-01-02T03:04:05Z","create_error":false,"x":-Infinity}',
        b'{"started_at":"2024-01-02T03:04:05Z","create_error":false,"x":1}}',
        b'{"started_at":"2024-01-02T03:04:05Z","create_error":false,"x":[1,]}',
        b'{"started_at":"2024-01-02T03:04:05Z","create_error":false,"x":01}',
        b'{"started_at":"2024-01-02T03:04:05Z","create_error":false,"x":"\x01"}',
        b'{"x":' + b"[" * 300 + b"1," + b"]" * 300 + b"}",
        b'{"x":' + b"[" * 300 + b"]" * 299 + b"}",
        b'{"x":' + b"[" * 300 + b"\xff" + b"]" * 300 + b"}",
    ],
)
def test_what_is_not_json_after_nerdctls_keys_is_refused(data: bytes) -> None:
    with pytest.raises(ValueError, match="not valid JSON"):
        decode(data)


def test_a_known_key_after_nerdctls_layout_still_wins() -> None:
    data = b'{"started_at":"2024-01-02T03:04:05Z","create_error":false,"x":1,"Create_Error":true}'
    assert decode(data) == Lifecycle(Timestamp.parse("2024-01-02T03:04:05Z"), True, (("x", 1),))


def test_mutable_extra_values_are_never_shared_between_loads() -> None:
    data = b'{"started_at":"2024-01-02T03:04:05Z","create_error":false,"x":{"n":[1]}}'
    first = decode(data)
    value = dict(first.extra)["x"]
    assert isinstance(value, dict)
    value["n"].append(2)
    assert dict(decode(data).extra)["x"] == {"n": [1]}


def test_only_small_records_are_cached() -> None:
    small = b'{"started_at":"2024-01-02T03:04:05.5Z","create_error":true}'
    big = small[:-1] + b',"pad":"' + b"x" * 300 + b'"}'
    decode(small)
    decode(big)
    assert small in codec._records
    assert big not in codec._records
    assert all(len(key) <= 256 for key in codec._records)
    assert all(len(key) <= 256 for key in codec._tails)


# Property tests: whatever the bytes, a record or a ValueError, and what decodes re-encodes.

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8)
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=4), children, max_size=3)
    ),
    max_leaves=8,
)
key_names = st.sampled_from(
    ["started_at", "create_error", "STARTED_AT", "Create_Error", "\u017ftarted_at", "x", ""]
) | st.text(max_size=6)
time_texts = st.sampled_from(
    [T0, "2024-01-02T3:04:05,5+24:00", "2024-02-30T00:00:00Z", "", "\\u0032024", "now"]
) | st.text(max_size=30)


@st.composite
def records(draw: st.DrawFn) -> bytes:
    """Bytes near what nerdctl writes: its layout, JSON objects, then random damage."""
    kind = draw(st.sampled_from(["layout", "object", "bytes"]))
    if kind == "bytes":
        return draw(st.binary(max_size=80))
    if kind == "layout":
        text = (
            '{"started_at":"'
            + draw(time_texts)
            + '","create_error":'
            + draw(st.sampled_from(["true", "false", "null", "1"]))
            + "".join(
                "," + json.dumps(key) + ":" + json.dumps(value)
                for key, value in draw(st.lists(st.tuples(key_names, json_values), max_size=3))
            )
            + "}"
        )
    else:
        members = draw(
            st.lists(
                st.tuples(key_names, st.one_of(json_values, time_texts, st.booleans())),
                max_size=4,
            )
        )
        separator = draw(st.sampled_from([",", ", ", ",\n  "]))
        text = "{" + separator.join(json.dumps(k) + ":" + json.dumps(v) for k, v in members) + "}"
    data = text.encode("utf-8", "surrogatepass")
    if draw(st.booleans()):
        position = draw(st.integers(0, len(data)))
        data = data[:position] + draw(st.binary(max_size=3)) + data[position + 1 :]
    return data


def outcome(function: Callable[[A], R], argument: A) -> R | ValueError:
    """What `function(argument)` returns, or the ValueError it raises."""
    try:
        return function(argument)
    except ValueError as error:
        return error


@settings(max_examples=500)
@given(data=records())
def test_any_bytes_decode_to_a_record_or_a_value_error(data: bytes) -> None:
    record = outcome(decode, data)
    if isinstance(record, ValueError):
        assert str(record)
        return
    assert isinstance(record.started_at, Timestamp)
    assert isinstance(record.create_error, bool)
    written = outcome(encode, record)
    if isinstance(written, ValueError):  # only a year nerdctl could not write either
        assert "year" in str(written)
        return
    assert decode(written) == record
    assert encode(decode(written)) == written


@settings(max_examples=300)
@given(
    members=st.lists(st.tuples(key_names, json_values), max_size=4),
    create_error=st.booleans(),
)
def test_nerdctls_layout_with_more_keys_reads_as_any_other_layout(
    members: list[tuple[str, object]], create_error: bool
) -> None:
    head = '{"started_at":"' + T0 + '","create_error":' + json.dumps(create_error)
    tail = "".join("," + json.dumps(k) + ":" + json.dumps(v) for k, v in members) + "}"
    spaced = '{ "started_at": "' + T0 + '", "create_error": ' + json.dumps(create_error) + tail
    try:
        expected = decode(spaced.encode())
    except ValueError:
        with pytest.raises(ValueError, match=r"\S"):
            decode((head + tail).encode())
        return
    assert decode((head + tail).encode()) == expected
    assert decode((head + tail).encode()) == expected  # and again, from the caches
