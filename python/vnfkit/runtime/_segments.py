"""Shared-memory segments of the process backend: files in /dev/shm, mapped MAP_SHARED.

Names are ``vnfkit-<parent pid>-<random>-<tag>``. The parent creates a segment, the workers map it
by path, and the parent unlinks the file as soon as every worker has mapped it (the mappings stay
valid), so a parent killed with SIGKILL once its workers are up leaves nothing behind in /dev/shm.
``close()`` unlinks again (idempotent) for the paths that never got that far. A parent killed by a
signal it does not handle (SIGKILL, or SIGTERM with Python's default action) *while its workers
start* (a few hundred milliseconds) leaves its ``vnfkit-<pid>-*`` files behind: nothing of it
runs to unlink them.

With ``populate`` the mapping is made with MAP_POPULATE: the creator's pages are allocated and every
mapper's page tables filled before the first packet, so no slab pays page faults in the packet path.
"""

from __future__ import annotations

import mmap
import os
import secrets

__all__ = ["SHM_DIR", "Segment", "attach"]

SHM_DIR = "/dev/shm"
_POPULATE = getattr(mmap, "MAP_POPULATE", 0)  # Linux; elsewhere pages fault in lazily


class Segment:
    """A new shared-memory file of `size` bytes, mapped read-write (pre-faulted with `populate`)."""

    def __init__(self, tag: str, size: int, *, populate: bool = False) -> None:
        if size < 1:
            raise ValueError(f"size: must be >= 1, got {size}")
        self.path = os.path.join(SHM_DIR, f"vnfkit-{os.getpid()}-{secrets.token_hex(4)}-{tag}")
        fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
        try:
            os.ftruncate(fd, size)
            flags = mmap.MAP_SHARED | (_POPULATE if populate else 0)
            self.map = mmap.mmap(fd, size, flags, mmap.PROT_READ | mmap.PROT_WRITE)
        except BaseException:
            os.close(fd)
            self.unlink()
            raise
        os.close(fd)
        self.size = size

    def unlink(self) -> None:
        """Remove the file (mappings stay valid); idempotent."""
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass

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
