"""lifecyclefs's backend: nerdctl's per-container `lifecycle.json`, read and written in Python.

    from store import Store
    store = Store("/var/lib/nerdctl/1935db59/containers/default/r1")
    store.transform(lambda record: setattr(record, "create_error", False))

Same files, same lock and same bytes as nerdctl v2.0.3's `pkg/ocihook/state`, so both
can work on one state directory at once. Importing this package needs neither trio nor
pyfuse3, and takes under two milliseconds: `json`, `re`, `datetime`, `ctypes` and trio are
imported only by what needs them, when it runs.
"""

from store.codec import Lifecycle
from store.errors import (
    LifecycleStoreError,
    LockTimeoutError,
    RecordCorruptError,
    RecordTooLargeError,
)
from store.rawjson import RawJSON
from store.record import MAX_RECORD_BYTES, RECORD_NAME, Store, read_record
from store.timestamp import Timestamp

__all__ = [
    "MAX_RECORD_BYTES",
    "RECORD_NAME",
    "Lifecycle",
    "LifecycleStoreError",
    "LockTimeoutError",
    "RawJSON",
    "RecordCorruptError",
    "RecordTooLargeError",
    "Store",
    "Timestamp",
    "read_record",
]
