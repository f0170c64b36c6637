"""File stable storage: append-only segment files, group commit, fsync, torn tails cut on reopen.

Layout: one directory per stream under ``root``; inside, segment files ``<first offset>.seg`` and
an optional ``base`` file (the truncation point, replaced atomically). Every record is one frame::

    "VKSR" | u32 length | u64 offset | payload (length bytes) | u32 CRC32C of everything before it

A :meth:`~StableStorage.sync` writes all queued frames of a stream with one ``write`` and then
``fdatasync``s the segment (and the directory when a segment was created): the records are
acknowledged only after that returns, so a crash of the writer -- even ``SIGKILL`` in the middle of
a write -- loses nothing acknowledged. Opening a directory scans every segment; a frame that is
short, has a bad magic or CRC, or breaks the offset sequence is a torn tail: the file is cut there
(and later segments dropped), and the storage continues from the last good record.

The epoch is a u64 in the file ``epoch`` under ``root``, and that file is also the fence across the
processes of one host: a commit holds a shared ``flock`` on it from the epoch check to the end of
its ``fdatasync`` (and writes nothing if the epoch moved above its own: :data:`~.base.FENCED`); a
fence takes it exclusively -- so it waits for a commit in flight to finish -- raises the epoch in
place, then rescans the segments for what the other writers made stable.
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct
import time
from pathlib import Path

from ..._core import crc32c
from .base import FENCED, OK, TIMEOUT, UNAVAILABLE, StableStorage, StorageUnavailable, check_offset, check_stream

__all__ = ["FileStorage", "MAGIC"]

MAGIC = b"VKSR"
_HEAD = struct.Struct("<4sIQ")
_CRC = struct.Struct("<I")
_MAX_RECORD = 1 << 31
_EPOCH = struct.Struct("<Q")


def encode_frame(offset: int, payload: bytes) -> bytes:
    if len(payload) >= _MAX_RECORD:
        raise ValueError(f"record: at most {_MAX_RECORD - 1} bytes, got {len(payload)}")
    head = _HEAD.pack(MAGIC, len(payload), offset)
    crc = crc32c(payload, crc32c(head))
    return head + payload + _CRC.pack(crc)


def scan_frames(data: bytes, expect_first: int | None = None) -> tuple[list[tuple[int, bytes]], int]:
    """Good frames at the start of `data` and the byte length they cover (the rest is a torn tail)."""
    out: list[tuple[int, bytes]] = []
    pos = 0
    expect = expect_first
    mv = memoryview(data)
    while pos + _HEAD.size + _CRC.size <= len(data):
        magic, n, off = _HEAD.unpack_from(data, pos)
        end = pos + _HEAD.size + n
        if magic != MAGIC or end + _CRC.size > len(data):
            break
        (crc,) = _CRC.unpack_from(data, end)
        if crc32c(mv[pos:end]) != crc or (expect is not None and off != expect):
            break
        out.append((off, bytes(mv[pos + _HEAD.size:end])))
        expect = off + 1
        pos = end + _CRC.size
    return out, pos


class FileStorage(StableStorage):
    """Stable storage in segment files under `root` (see the module docstring).

    Args:
        root: directory (created if missing); an existing one is reopened and its torn tails cut.
        fsync: call fdatasync on every sync (turn off only for benchmarks of the framing itself).
    """

    kind = "file"

    def __init__(self, root: str | os.PathLike[str], *, fsync: bool = True) -> None:
        super().__init__()
        if not isinstance(fsync, bool):
            raise TypeError(f"fsync: expected a bool, got {type(fsync).__name__}")
        self.root = Path(root)
        self.fsync = fsync
        self.root.mkdir(parents=True, exist_ok=True)
        self._fds: dict[str, tuple[int, Path]] = {}  # stream -> (fd, path) of the segment being written
        self._base: dict[str, int] = {}
        #: torn tails cut on open: stream -> bytes dropped
        self.repaired: dict[str, int] = {}
        self._epoch_fd = os.open(self.root / "epoch", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            if not self._lock(fcntl.LOCK_SH, 10.0):
                raise StorageUnavailable(f"file storage {self.root}: the epoch file stayed locked for 10 s", TIMEOUT)
            try:
                self._epoch = self._stored_epoch()
            finally:
                fcntl.flock(self._epoch_fd, fcntl.LOCK_UN)
            for d in sorted(p for p in self.root.iterdir() if p.is_dir()):
                self._recover(d.name)
        except BaseException:
            os.close(self._epoch_fd)
            raise

    # ---- epoch
    def _lock(self, how: int, timeout_s: float) -> bool:
        """flock the epoch file (`how`: LOCK_SH or LOCK_EX) within `timeout_s`; False if it stayed
        locked that long."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(self._epoch_fd, how | fcntl.LOCK_NB)
                return True
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN) or time.monotonic() >= deadline:
                    if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                        return False
                    raise
            time.sleep(0.0005)

    def _stored_epoch(self) -> int:
        raw = os.pread(self._epoch_fd, _EPOCH.size, 0)
        return _EPOCH.unpack(raw)[0] if len(raw) == _EPOCH.size else 0

    def _fence(self, timeout_s: float) -> int:
        if not self._lock(fcntl.LOCK_EX, timeout_s):
            raise StorageUnavailable(f"file storage {self.root}: a commit held the epoch file for {timeout_s} s; "
                                     f"the fence did not take", TIMEOUT)
        try:
            epoch = max(self._stored_epoch(), self._epoch or 0) + 1
            os.pwrite(self._epoch_fd, _EPOCH.pack(epoch), 0)
            if self.fsync:
                os.fsync(self._epoch_fd)
        finally:
            fcntl.flock(self._epoch_fd, fcntl.LOCK_UN)
        # No older writer can add a record now: rescan for what the others made stable before it.
        for fd, _ in self._fds.values():
            os.close(fd)
        self._fds.clear()
        for d in sorted(p for p in self.root.iterdir() if p.is_dir()):
            queued_next = self._next.get(d.name, 0)
            self._recover(d.name)
            if d.name in self._next:
                self._next[d.name] = max(self._next[d.name], queued_next)
        return epoch

    # ---- open / recover
    def _segments(self, stream: str) -> list[tuple[int, Path]]:
        d = self.root / stream
        if not d.is_dir():
            return []
        segs = []
        for p in d.glob("*.seg"):
            try:
                segs.append((int(p.stem), p))
            except ValueError:
                continue
        return sorted(segs)

    def _recover(self, stream: str) -> None:
        try:
            check_stream(stream)
        except ValueError:
            return  # not ours
        base_file = self.root / stream / "base"
        base = int(base_file.read_text()) if base_file.exists() else 0
        expect: int | None = None
        last = None
        cut = 0
        segs = self._segments(stream)
        for i, (first, path) in enumerate(segs):
            data = path.read_bytes()
            frames, good = scan_frames(data, expect if expect is not None else first)
            if good < len(data):
                cut += len(data) - good
                with open(path, "r+b") as f:
                    f.truncate(good)
                    os.fsync(f.fileno())
            if frames:
                expect = frames[-1][0] + 1
                last = expect
            elif expect is None:
                expect = first
            if good < len(data):  # everything after a torn frame is unreliable
                for _, later in segs[i + 1:]:
                    cut += later.stat().st_size
                    later.unlink()
                break
        end = max(last if last is not None else 0, base)
        self._acked[stream] = end
        self._next[stream] = end
        self._base[stream] = base
        if cut:
            self.repaired[stream] = cut
            self._fsync_dir(self.root / stream)

    def _fsync_dir(self, d: Path) -> None:
        if not self.fsync:
            return
        fd = os.open(d, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    # ---- writing
    def _segment_fd(self, stream: str, first: int) -> int:
        cur = self._fds.get(stream)
        if cur is not None:
            return cur[0]
        d = self.root / stream
        new_dir = not d.exists()
        d.mkdir(exist_ok=True)
        path = d / f"{first:020d}.seg"  # a new segment per open (after reopen, truncate or an error)
        created = not path.exists()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self._fds[stream] = (fd, path)
        if created:
            self._fsync_dir(d)
        if new_dir:
            self._fsync_dir(self.root)
        return fd

    def _commit(self, queued: dict[str, list[tuple[int, bytes]]], timeout_s: float) -> tuple[str, str]:
        if not self._lock(fcntl.LOCK_SH, timeout_s):
            return TIMEOUT, f"file storage {self.root}: a fence held the epoch file for {timeout_s} s"
        try:
            cur = self._stored_epoch()
            if self._epoch is not None and self._epoch < cur:
                return FENCED, f"file storage {self.root}: storage epoch is {cur}, this writer's is {self._epoch}"
            if self._epoch is None:
                self._epoch = cur
            return self._write(queued)
        finally:
            fcntl.flock(self._epoch_fd, fcntl.LOCK_UN)

    def _write(self, queued: dict[str, list[tuple[int, bytes]]]) -> tuple[str, str]:
        for s, q in queued.items():
            fd = self._segment_fd(s, q[0][0])
            blob = b"".join(encode_frame(off, rec) for off, rec in q)
            try:
                view = memoryview(blob)
                while view:
                    n = os.write(fd, view)
                    view = view[n:]
                if self.fsync:
                    os.fdatasync(fd)
            except OSError as exc:
                # The frames written may be partial: reopen the segment so the next sync rewrites
                # from a clean cut (the reader stops at the first torn frame anyway).
                self._reset_segment(s, q[0][0])
                return TIMEOUT if exc.errno in (11, 110) else UNAVAILABLE, f"{s}: {exc}"
        return OK, ""

    def _reset_segment(self, stream: str, unacked: int) -> None:
        """After a failed write: cut the open segment back to its acknowledged records (frames at
        offset >= `unacked` were never acknowledged and will be written again)."""
        cur = self._fds.pop(stream, None)
        if cur is None:
            return
        fd, path = cur
        os.close(fd)
        data = path.read_bytes()
        frames, good = scan_frames(data)
        keep = 0
        for off, rec in frames:
            if off >= unacked:
                break
            keep += _HEAD.size + len(rec) + _CRC.size
        if keep < len(data):
            with open(path, "r+b") as f:
                f.truncate(keep)

    # ---- reading
    def read(self, stream: str, start: int = 0) -> list[tuple[int, bytes]]:
        self._check_open()
        stream = check_stream(stream)
        start = max(check_offset(start, "start"), self._base.get(stream, 0))
        acked = self._acked.get(stream, 0)
        out: list[tuple[int, bytes]] = []
        for first, path in self._segments(stream):
            frames, _ = scan_frames(path.read_bytes(), first)
            out.extend(f for f in frames if start <= f[0] < acked)
        return out

    def streams(self) -> list[str]:
        return sorted(s for s in self._acked if self._acked[s] > self._base.get(s, 0))

    def truncate(self, stream: str, before: int) -> None:
        self._check_open()
        stream = check_stream(stream)
        before = min(check_offset(before, "before"), self._acked.get(stream, 0))
        if before <= self._base.get(stream, 0):
            return
        d = self.root / stream
        tmp = d / "base.tmp"
        tmp.write_text(str(before))
        if self.fsync:
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
        os.replace(tmp, d / "base")
        self._base[stream] = before
        # Start a fresh segment, then drop every older segment that holds only records < before.
        cur = self._fds.pop(stream, None)
        if cur is not None:
            os.close(cur[0])
        segs = self._segments(stream)
        for (first, path), nxt in zip(segs, segs[1:] + [(self._acked[stream], None)]):
            if nxt[0] <= before and path is not None:
                path.unlink()
        self._fsync_dir(d)

    def close(self) -> None:
        for fd, _ in self._fds.values():
            os.close(fd)
        self._fds.clear()
        if not self._closed:
            os.close(self._epoch_fd)
        super().close()


