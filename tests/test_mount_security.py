"""On a shared host: through an `allow_other` mount, a user can do exactly what it could directly.

Each test runs the same operation as `nobody` directly on the backing tree and through
the mount, and expects the same outcome (POSIX ACLs included); then it checks that a
hostile user can neither take what is root's nor starve the others.
"""

from __future__ import annotations

import os
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from store import Store, Timestamp
from tests.conftest import Mount
from tests.users import NOBODY, as_nobody, as_user, command, fds_in, reachable

T0 = Timestamp.parse("2024-01-02T03:04:05Z")


def setfacl(*args: str) -> None:
    subprocess.run(["setfacl", *args], check=True)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A depth-2 tree: root's namespace `default` (0755) and nobody's namespace `users`."""
    root = tmp_path / "containers"
    Store(root / "default" / "open", create=True).update(started_at=T0)
    Store(root / "users" / "mine", create=True).update(started_at=T0)
    for directory in (root, root / "default", root / "users"):
        os.chmod(directory, 0o755)
    for path in (
        root / "users",
        root / "users" / "mine",
        root / "users" / "mine" / "lifecycle.json",
    ):
        os.chown(path, NOBODY, NOBODY)
    return root


@pytest.fixture
def both(tree: Path, mount: Callable[..., Mount]) -> Iterator[tuple[str, str]]:
    """The backing tree and an allow_other mount of it, both reachable by nobody."""
    live = mount(tree, "--depth", "2", "-o", "allow_other")
    with reachable(tree, live.path) as paths:
        yield paths[0], paths[1]


def outcome(script: str, root: str, paths: tuple[str, str]) -> tuple[int, str]:
    """Exit status and output of `script` run as nobody with $1 = `root`."""
    result = as_nobody(script, [root, *paths])
    return result.returncode, result.stdout


def same_as_direct(both: tuple[str, str], script: str) -> tuple[int, str]:
    """Run `script` ($1: the tree) as nobody directly and through the mount: same outcome."""
    direct = outcome(script, both[0], both)
    mounted = outcome(script, both[1], both)
    assert mounted == direct, f"direct {direct}, through the mount {mounted}: {script}"
    return mounted


READ_RECORD = 'cat "$1"/default/open/{file} >/dev/null 2>&1 && echo read || echo denied'


def test_a_record_acl_that_denies_a_user_denies_it_through_the_mount(
    tree: Path, both: tuple[str, str]
) -> None:
    record = tree / "default" / "open" / "lifecycle.json"
    os.chmod(tree / "default" / "open", 0o755)
    os.chmod(record, 0o644)
    assert same_as_direct(both, READ_RECORD.format(file="lifecycle.json")) == (0, "read\n")
    setfacl("-m", f"u:{NOBODY}:---", str(record))
    assert same_as_direct(both, READ_RECORD.format(file="lifecycle.json")) == (0, "denied\n")
    # The value files are views of the record: its ACL guards them too.
    assert outcome(READ_RECORD.format(file="started_at"), both[1], both) == (0, "denied\n")


def test_a_directory_acl_that_denies_a_user_denies_it_through_the_mount(
    tree: Path, both: tuple[str, str]
) -> None:
    os.chmod(tree / "default" / "open", 0o755)
    os.chmod(tree / "default" / "open" / "lifecycle.json", 0o644)
    list_it = 'ls "$1"/default/open >/dev/null 2>&1 && echo listed || echo denied'
    assert same_as_direct(both, list_it) == (0, "listed\n")
    setfacl("-m", f"u:{NOBODY}:---", str(tree / "default" / "open"))
    assert same_as_direct(both, list_it) == (0, "denied\n")
    assert outcome(READ_RECORD.format(file="started_at"), both[1], both) == (0, "denied\n")


def test_an_acl_that_grants_a_user_grants_it_through_the_mount(
    tree: Path, both: tuple[str, str]
) -> None:
    directory, record = tree / "default" / "open", tree / "default" / "open" / "lifecycle.json"
    os.chmod(directory, 0o700)
    os.chmod(record, 0o600)
    assert same_as_direct(both, READ_RECORD.format(file="lifecycle.json")) == (0, "denied\n")
    setfacl("-m", f"u:{NOBODY}:rx", str(directory))
    setfacl("-m", f"u:{NOBODY}:rw", str(record))
    assert same_as_direct(both, READ_RECORD.format(file="lifecycle.json")) == (0, "read\n")
    written = as_nobody('echo true > "$1"/default/open/create_error', [both[1]])
    assert written.returncode == 0, written.stderr
    assert Store(directory).load().create_error is True
    acl = subprocess.run(
        ["getfacl", "-c", "-n", "-p", str(record)], capture_output=True, text=True, check=True
    )
    assert f"user:{NOBODY}:rw-" in acl.stdout, "the rewritten record lost its ACL"


def test_getfacl_through_the_mount_shows_the_backing_acl(
    tree: Path, mount: Callable[..., Mount]
) -> None:
    record = tree / "default" / "open" / "lifecycle.json"
    setfacl("-m", f"u:{NOBODY}:r", str(record))
    setfacl("-d", "-m", f"u:{NOBODY}:rx", str(tree / "default"))
    mnt = mount(tree, "--depth", "2").path

    def acl(path: Path, *options: str) -> str:
        result = subprocess.run(
            ["getfacl", "-c", *options, str(path)], capture_output=True, text=True, check=True
        )
        return result.stdout

    assert acl(mnt / "default" / "open" / "started_at") == acl(record)
    assert acl(mnt / "default", "-d") == acl(tree / "default", "-d")
    assert acl(mnt / "default" / "open") == acl(tree / "default" / "open")


def test_chmod_chown_and_setfacl_reach_the_backing_files_as_directly(
    tree: Path, both: tuple[str, str]
) -> None:
    mine, record = tree / "users" / "mine", tree / "users" / "mine" / "lifecycle.json"
    # nobody may change its own record and directory, and not root's: the same both ways.
    assert same_as_direct(both, 'chmod 640 "$1"/default/open 2>/dev/null; echo $?') == (0, "1\n")
    changed = as_nobody(
        'chmod 640 "$1"/users/mine/started_at && chmod 750 "$1"/users/mine'
        f' && setfacl -m u:{os.getuid()}:r "$1"/users/mine/create_error',
        [both[1]],
    )
    assert changed.returncode == 0, changed.stderr
    assert (mine.stat().st_mode & 0o777, record.stat().st_mode & 0o777) == (0o750, 0o640)
    acl = subprocess.run(
        ["getfacl", "-c", "-n", str(record)], capture_output=True, text=True, check=True
    )
    assert f"user:{os.getuid()}:r--" in acl.stdout
    # What the record keeps, it keeps through the next write.
    as_nobody('echo true > "$1"/users/mine/create_error', [both[1]])
    assert record.stat().st_mode & 0o777 == 0o640
    assert Store(mine).load().create_error is True


def test_root_gives_a_record_away_through_the_mount(
    tree: Path, mount: Callable[..., Mount]
) -> None:
    mnt = mount(tree, "--depth", "2").path
    os.chown(mnt / "default" / "open" / "started_at", NOBODY, NOBODY)
    record = (tree / "default" / "open" / "lifecycle.json").stat()
    assert (record.st_uid, record.st_gid) == (NOBODY, NOBODY)
    assert (mnt / "default" / "open" / "create_error").stat().st_uid == NOBODY


def test_mkdir_gives_a_new_directory_to_its_caller_only(tree: Path, both: tuple[str, str]) -> None:
    made = as_nobody('mkdir "$1"/users/new && mkdir "$1"/default/theirs', [both[1]])
    assert made.returncode != 0
    assert "Permission denied" in made.stderr
    new = (tree / "users" / "new").stat()
    assert (new.st_uid, new.st_gid, new.st_mode & 0o777) == (NOBODY, NOBODY, 0o700)
    assert not (tree / "default" / "theirs").exists()


def test_mkdir_counts_the_callers_supplementary_groups(
    tree: Path, mount: Callable[..., Mount]
) -> None:
    """A namespace writable by a group: its members may mkdir there, as directly."""
    team = 4242
    os.chown(tree / "default", 0, team)
    os.chmod(tree / "default", 0o770)
    live = mount(tree, "--depth", "2", "-o", "allow_other")
    with reachable(tree, live.path) as (direct, mounted):
        for root, name in ((direct, "made-directly"), (mounted, "made-through-the-mount")):
            made = as_user(NOBODY, f'mkdir "$1"/default/{name}', [root], groups=(team,))
            assert made.returncode == 0, f"{name}: {made.stderr}"
        alone = as_user(NOBODY, 'mkdir "$1"/default/not-a-member', [mounted])
        assert alone.returncode != 0, "a user outside the group made a directory"
    new = (tree / "default" / "made-through-the-mount").stat()
    assert (new.st_uid, new.st_gid, new.st_mode & 0o777) == (NOBODY, NOBODY, 0o700)


def test_mkdir_never_hands_a_swapped_in_directory_to_its_caller(
    tree: Path, both: tuple[str, str]
) -> None:
    """A user who may rename entries of its namespace swaps root's directory in, in a loop."""
    victim = tree / "users" / "roots"
    victim.mkdir(mode=0o700)
    (victim / "keep").write_text("root's; the directory cannot be removed, only moved\n")
    script = """
        cd "$1"/users || exit 9
        ( i=0; while [ $i -lt 3000 ]; do
            mv -T roots x 2>/dev/null; mv -T x roots 2>/dev/null; i=$((i+1))
        done ) &
        i=0; while [ $i -lt 300 ]; do
            mkdir "$2"/users/x 2>/dev/null; rmdir x 2>/dev/null; i=$((i+1))
        done
        wait
    """
    as_nobody(script, [both[0], both[1]], timeout=120)
    (marker,) = (tree / "users").glob("*/keep")  # wherever the last swap left it
    owner = marker.parent.stat()
    assert (owner.st_uid, owner.st_gid) == (0, 0), "root's directory was given away"


def test_a_user_holding_locks_stalls_nobody_else(
    tree: Path, mount: Callable[..., Mount], tmp_path: Path
) -> None:
    """nobody flocks 60 of its containers and writes each through the mount: others go on."""
    held = [tree / "users" / f"held{index}" for index in range(60)]
    for directory in held:
        Store(directory, create=True)
        os.chown(directory, NOBODY, NOBODY)
    live = mount(tree, "--depth", "2", "-o", "allow_other,lock_timeout=0")
    holder = subprocess.Popen(
        ["flock", str(held[0]), "sh", "-c", " ".join(f"flock {d} " for d in held[1:]) + " cat"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    writers: list[subprocess.Popen[bytes]] = []
    try:
        # Wait until every lock is held: flock(1) nests, so the innermost runs cat.
        for directory in held:
            probe = subprocess.run(["flock", "--nonblock", str(directory), "true"], check=False)
            while probe.returncode == 0:
                probe = subprocess.run(["flock", "--nonblock", str(directory), "true"], check=False)
        with reachable(live.path) as paths:
            writers = [
                subprocess.Popen(
                    command(NOBODY, f'echo true > "$1"/users/held{index}/create_error', paths),
                    pass_fds=fds_in(paths),
                )
                for index in range(len(held))
            ]
            listing = subprocess.run(
                ["ls", "-l", str(live.path / "default")],
                capture_output=True,
                timeout=10,
                check=True,
            )
            assert b"open" in listing.stdout
            (live.path / "default" / "open" / "create_error").write_text("true\n")
            assert Store(tree / "default" / "open").load().create_error is True
            assert all(writer.poll() is None for writer in writers), (
                "a held lock was not waited for"
            )
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=30)
        for writer in writers:
            writer.wait(timeout=30)
    assert all(Store(directory).load().create_error for directory in held)


def open_descriptors(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def test_open_files_hold_no_descriptor_of_the_daemon(
    tree: Path, mount: Callable[..., Mount]
) -> None:
    live = mount(tree, "--depth", "2")
    value = live.path / "default" / "open" / "started_at"
    value.read_text()
    before = open_descriptors(live.pid)
    for second in range(100):  # each change makes the next cat read the record again
        Store(tree / "default" / "open").update(started_at=Timestamp(second * 10**9))
        assert value.read_text() == Timestamp(second * 10**9).format() + "\n"
    assert open_descriptors(live.pid) == before, "a cat left a descriptor open"
    held = [os.open(value, os.O_RDONLY) for _ in range(1000)]
    try:
        assert open_descriptors(live.pid) <= before + 2
        assert (live.path / "default" / "open" / "create_error").read_text() == "false\n"
    finally:
        for fd in held:
            os.close(fd)


def daemon_rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def test_big_records_do_not_grow_the_daemon(tree: Path, mount: Callable[..., Mount]) -> None:
    """200 distinct records of ~60 KiB each (a huge fraction, an extra key): read, stat, list."""
    users = tree / "users"
    for index in range(200):
        directory = users / f"big{index:03d}"
        directory.mkdir()
        fraction = str(index).rjust(30_000, "1")
        (directory / "lifecycle.json").write_text(
            f'{{"started_at":"2024-01-02T03:04:05.{fraction}Z","create_error":false,'
            f'"x":"{"y" * 30_000}"}}'
        )
    live = mount(tree, "--depth", "2")
    for directory in sorted((live.path / "users").iterdir()):
        if directory.name.startswith("big"):
            assert (directory / "started_at").read_text().startswith("2024-01-02T03:04:05.1")
            assert len((directory / "lifecycle.json").read_bytes()) > 30_000
    subprocess.run(["ls", "-lR", str(live.path)], capture_output=True, check=True, timeout=60)
    assert daemon_rss_mib(live.pid) < 64


def test_threads_and_descriptors_stay_bounded_under_a_flood_of_reads(
    tree: Path, mount: Callable[..., Mount]
) -> None:
    live = mount(tree, "--depth", "2", "-o", "allow_other")
    before = open_descriptors(live.pid)
    errors: list[BaseException] = []

    def read_many() -> None:
        try:
            for _ in range(200):
                (live.path / "users" / "mine" / "started_at").read_text()
                os.listdir(live.path / "users")
        except BaseException as error:
            errors.append(error)

    readers = [threading.Thread(target=read_many) for _ in range(8)]
    for reader in readers:
        reader.start()
    for reader in readers:
        reader.join(timeout=60)
    assert errors == []
    assert open_descriptors(live.pid) <= before + 2
