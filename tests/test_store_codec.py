"""lifecycle.json as nerdctl v2.0.3 writes and reads it (PROTOCOL.md's table)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from store import Lifecycle, RecordCorruptError, Store, Timestamp
from store.codec import decode, encode
from tests.conftest import GOLDEN
from tests.workers import bump

GOLDEN_FILES = sorted(GOLDEN.glob("*.json"))
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
