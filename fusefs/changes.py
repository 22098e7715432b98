"""Every change the mount makes to the backing tree, made one way.

A value is committed by one locked, atomic `Store.atransform`; a record's owner, mode or
ACL change under the same lock, through a descriptor; a directory's through a
descriptor; a new state directory is made as its caller. Each change first checks that
SOURCE is still where it was mounted from (a change into a moved or unmounted tree
would be lost), counts as a waiting request of its caller's (see `budgets`), and is then
told to `freshness`, so that the kernel drops what it cached.
"""

from __future__ import annotations

import errno
import functools
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from fusefs.budgets import Budgets
from fusefs.errors import fail, shown
from fusefs.files import ContainerFile
from fusefs.freshness import Freshness
from fusefs.identity import caller_groups
from fusefs.view import Parts, View
from store import Store
from store.values import MAX_VALUE_BYTES, decode_value

log = logging.getLogger("lifecyclefs")

_STORES_KEPT: Final = 4096


@dataclass(frozen=True, slots=True)
class MountOptions:
    """How the mount behaves: read-only, durable writes, how long a write waits."""

    read_only: bool = False
    durable: bool = True
    lock_timeout: float | None = 10.0


class Changes:
    """The backing tree's changes, for one mount."""

    def __init__(
        self, view: View, options: MountOptions, budgets: Budgets, freshness: Freshness
    ) -> None:
        self._view = view
        self._options = options
        self._budgets = budgets
        self._freshness = freshness
        self._stores: dict[Parts, Store] = {}
        self._source_gone_logged = False

    def _store(self, container: Parts) -> Store:
        store = self._stores.get(container)
        if store is None:
            if len(self._stores) >= _STORES_KEPT:
                self._stores.clear()
            store = self._stores[container] = Store(
                self._view.display_path(container),
                open_dir=functools.partial(self._view.open_dir, container),
                durable=self._options.durable,
                lock_timeout=self._options.lock_timeout,
            )
        return store

    def _allowed(self) -> None:
        """EROFS on a read-only mount; ESTALE (one log line) once SOURCE has gone."""
        if self._options.read_only:
            raise fail(errno.EROFS)
        if self._view.source_in_place():
            return
        if not self._source_gone_logged:
            self._source_gone_logged = True
            log.error(
                "%s was moved, removed or unmounted: refusing every change from now on",
                self._view.given_source,
            )
        raise fail(errno.ESTALE)

    async def commit(
        self,
        container: Parts,
        file: ContainerFile,
        data: bytes,
        uid: int,
        written: int | None = None,
    ) -> None:
        """Commit `data` as `file`'s new value: EFBIG, EINVAL, ESTALE, EBUSY or the store's.

        `written` is the inode written through, if the value came by a write.
        """
        if len(data) > MAX_VALUE_BYTES:
            raise fail(errno.EFBIG)
        assert file.parse is not None, "only value files take values"
        try:
            update = file.parse(decode_value(data))
        except ValueError as error:
            log.debug(
                "refused %s for %s: %s",
                shown(data),
                self._view.display_path(container),
                shown(str(error)),
            )
            raise fail(errno.EINVAL) from None
        self._allowed()
        with self._budgets.waiting(uid) as threads:
            record = await self._store(container).atransform(update, limiter=threads)
        self._freshness.record_changed(container, record, written=written)

    async def change_record(
        self, container: Parts, change: Callable[[int], None], uid: int
    ) -> None:
        """Apply `change` (fchmod, fchown, an ACL) to `container`'s record, under its lock."""
        self._allowed()
        with self._budgets.waiting(uid) as threads:
            await self._store(container).achange_record_file(change, limiter=threads)
        self._freshness.attributes_changed(container, directory=False)

    def change_directory(self, parts: Parts, change: Callable[[int], None]) -> None:
        """Apply `change` (fchmod, fchown, an ACL) to the backing directory `parts`."""
        self._allowed()
        fd = self._view.open_dir(parts)
        try:
            change(fd)
        finally:
            os.close(fd)
        self._freshness.attributes_changed(parts, directory=True)

    def make_directory(self, parts: Parts, uid: int, gid: int, pid: int) -> os.stat_result:
        """A new state directory `parts`, its caller's (`uid`, `gid`, `pid`'s groups)."""
        self._allowed()
        return self._view.make_dir(parts, uid, gid, caller_groups(pid))
