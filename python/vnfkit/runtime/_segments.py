"""Shared-memory segments of the process backend: files in /dev/shm, mapped MAP_SHARED.

Names are ``vnfkit-<parent pid>-<random>-<tag>``. The parent creates a segment, the workers map it
by path, and the parent unlinks the file as soon as every worker has mapped it (the mappings stay
valid), so a parent killed with SIGKILL once its workers are up leaves nothing behind in /dev/shm.
``close()`` unlinks again (idempotent) for the paths that never got that far.

A parent killed by a signal it does not handle (SIGKILL, or SIGTERM with Python's default action)
*while its workers start* leaves its segments behind, and one killed at any time leaves the
directories it made with :func:`owned_dir` (the recovery master's image files): nothing of it runs
to remove them. Such leftovers are removed by the next process that starts a runner
(:func:`sweep_stale`), the way DPDK clears the hugepage files of dead processes: every such name
carries its creator's pid, and the creator holds a shared ``flock`` on the file or directory for as
long as the name exists. An entry is removed only when both say its owner is gone: its pid is not
a live process here, *and* nobody holds its lock (a live owner in another pid namespace that shares
this /dev/shm still holds it). Only the caller's own uid's entries are touched.

With ``populate`` the mapping is made with MAP_POPULATE: the creator's pages are allocated and every
mapper's page tables filled before the first packet, so no slab pays page faults in the packet path.
"""

from __future__ import annotations

import fcntl
import logging
import mmap
import os
import re
import secrets
import shutil
import stat
import tempfile
import weakref

__all__ = ["SHM_DIR", "Claim", "OwnedDir", "Segment", "attach", "owned_dir", "sweep_stale"]

SHM_DIR = "/dev/shm"
_POPULATE = getattr(mmap, "MAP_POPULATE", 0)  # Linux; elsewhere pages fault in lazily
#: the exact names this module and runtime._shared make (group 1: the creator's pid); anything else,
#: such as a user's own ``vnfkit-2024-results``, never matches
_SEGMENT_NAME = re.compile(r"vnfkit-([0-9]+)-(?:[0-9a-f]{8}-(?:life|q[0-9]+)|state-[0-9]+)")
_DIR_NAME = re.compile(r"vnfkit-([0-9]+)-(?:ftckpt|pause|ckpt|redis|ovs)-[A-Za-z0-9_]{8}")
#: a file every OwnedDir holds from its creation: a directory without it is not ours to remove
_MARKER = ".vnfkit-owned"
_log = logging.getLogger("vnfkit")


class Claim:
    """A shared ``flock`` on `path` (a file or a directory), held until :meth:`release`: it tells
    :func:`sweep_stale` that the entry's owner is alive. Inherited by a fork, never by a spawn."""

    def __init__(self, path: str) -> None:
        self._fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_SH)
        except BaseException:
            os.close(self._fd)
            raise

    def release(self) -> None:
        """Let go of the lock; idempotent."""
        fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)


class Segment:
    """A new shared-memory file of `size` bytes, mapped read-write (pre-faulted with `populate`)."""

    def __init__(self, tag: str, size: int, *, populate: bool = False) -> None:
        if size < 1:
            raise ValueError(f"size: must be >= 1, got {size}")
        self.path = os.path.join(SHM_DIR, f"vnfkit-{os.getpid()}-{secrets.token_hex(4)}-{tag}")
        self._fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_RDWR | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_SH)  # held while the name exists (see sweep_stale)
            os.ftruncate(self._fd, size)
            flags = mmap.MAP_SHARED | (_POPULATE if populate else 0)
            self.map = mmap.mmap(self._fd, size, flags, mmap.PROT_READ | mmap.PROT_WRITE)
        except BaseException:
            self.unlink()
            raise
        self.size = size

    def unlink(self) -> None:
        """Remove the file (mappings stay valid) and let go of its lock; idempotent."""
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)

    def close(self) -> None:
        """Unlink and unmap. The unmap waits for the garbage collector if a ring or a batch view still
        exports the mapping (mmap then refuses to close; the memory goes with the last reference)."""
        self.unlink()
        try:
            self.map.close()
        except BufferError:
            pass


def attach(path: str, *, populate: bool = False) -> mmap.mmap:
    """Map an existing segment read-write (a worker's side; page tables pre-filled with `populate`)."""
    fd = os.open(path, os.O_RDWR)
    try:
        flags = mmap.MAP_SHARED | (_POPULATE if populate else 0)
        return mmap.mmap(fd, os.fstat(fd).st_size, flags, mmap.PROT_READ | mmap.PROT_WRITE)
    finally:
        os.close(fd)


class OwnedDir:
    """A new directory ``<dir>/vnfkit-<pid>-<tag>-<random>``, claimed for :func:`sweep_stale`.
    ``cleanup()`` (or the garbage collector) removes it with its contents; idempotent."""

    def __init__(self, tag: str, dir: str | None = None) -> None:
        if not _DIR_NAME.fullmatch(f"vnfkit-{os.getpid()}-{tag}-abcdefgh"):
            raise ValueError(f"tag: not one of the directories sweep_stale knows, got {tag!r}")
        self.name = tempfile.mkdtemp(prefix=f"vnfkit-{os.getpid()}-{tag}-", dir=dir)
        try:
            with open(os.path.join(self.name, _MARKER), "x"):
                pass
            claim = Claim(self.name)
        except BaseException:
            shutil.rmtree(self.name, ignore_errors=True)
            raise
        self._finalizer = weakref.finalize(self, _remove_dir, self.name, claim)

    def cleanup(self) -> None:
        self._finalizer()


def _remove_dir(path: str, claim: Claim) -> None:
    shutil.rmtree(path, ignore_errors=True)
    claim.release()


def owned_dir(tag: str, *, tmpfs: bool = False) -> OwnedDir:
    """An :class:`OwnedDir` in /dev/shm when `tmpfs` and /dev/shm is writable, else in the system's
    temporary directory."""
    shm = SHM_DIR if tmpfs and os.path.isdir(SHM_DIR) and os.access(SHM_DIR, os.W_OK) else None
    return OwnedDir(tag, shm)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def sweep_stale(dirs: tuple[str, ...] | None = None) -> list[str]:
    """Remove the segments and directories that dead processes left in `dirs` (default /dev/shm and
    the system's temporary directory); returns their paths. An entry goes only if its name is exactly
    one this module makes (``vnfkit-<pid>-...``; a directory must also hold the marker file every
    :class:`OwnedDir` writes first), it belongs to this uid, `pid` is not a live process and nobody holds its
    lock (see the module's docstring). Never raises for an entry it cannot read or remove."""
    if dirs is None:
        dirs = (SHM_DIR, tempfile.gettempdir())
    removed: list[str] = []
    me, uid = os.getpid(), os.geteuid()
    for d in dict.fromkeys(dirs):  # each directory once
        try:
            entries = list(os.scandir(d))
        except OSError:
            continue
        for e in entries:
            m = _SEGMENT_NAME.fullmatch(e.name) or _DIR_NAME.fullmatch(e.name)
            if m is None or int(m[1]) == me or _alive(int(m[1])):
                continue
            try:
                fd = os.open(e.path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK)
            except OSError:  # gone meanwhile, a symlink, or not ours to read
                continue
            try:
                st = os.fstat(fd)
                if st.st_uid != uid:
                    continue
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:  # held: its owner lives (in another pid namespace)
                    continue
                if stat.S_ISDIR(st.st_mode):
                    if not _DIR_NAME.fullmatch(e.name) or not os.path.isfile(os.path.join(e.path, _MARKER)):
                        continue  # not a directory an OwnedDir made
                    shutil.rmtree(e.path, ignore_errors=True)
                elif stat.S_ISREG(st.st_mode) and _SEGMENT_NAME.fullmatch(e.name):
                    os.unlink(e.path)
                else:
                    continue
                removed.append(e.path)
            except OSError:
                continue
            finally:
                os.close(fd)
    if removed:
        _log.info("removed %d entries left by dead vnfkit processes: %s", len(removed), ", ".join(removed))
    return removed
