"""pcap / pcapng file sources and sinks over the native reader and writer."""

from __future__ import annotations

import os
from collections.abc import Iterator
from types import TracebackType

import numpy as np

from .. import _core

#: Link types (pcap LINKTYPE_ values) whose packets ``PacketBatch.parse`` understands.
LINKTYPES: dict[int, str] = {
    1: "Ethernet",
    101: "raw IP",
    113: "Linux cooked (SLL)",
    228: "raw IPv4",
    229: "raw IPv6",
    276: "Linux cooked v2 (SLL2)",
}


def check_parsable(linktype: int, what: str = "input") -> None:
    """Raise ValueError (one line, naming ``what``) if the parser does not handle ``linktype``."""
    if linktype not in LINKTYPES:
        known = ", ".join(f"{name} ({lt})" for lt, name in LINKTYPES.items())
        raise ValueError(f"{what}: link type {linktype} is not supported (supported: {known})")


def same_file(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> bool:
    """True if ``a`` and ``b`` are one file: the same path, a symlink to it or a hard link."""
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist (yet): compare what the paths resolve to
        return os.path.realpath(a) == os.path.realpath(b)


def _chunk_size(chunk: object) -> int:
    if isinstance(chunk, bool) or not isinstance(chunk, (int, np.integer)):
        raise TypeError(f"chunk: expected an int, got {type(chunk).__name__}")
    if chunk < 1:
        raise ValueError("chunk: must be >= 1")
    return int(chunk)


class PcapSource:
    """The packets of a pcap / pcapng file as PacketBatch chunks of at most ``chunk`` packets.

    Opening reads the file header (FileNotFoundError for a missing file, PcapError naming the byte
    offset for a bad one). Iterating yields chunks; ``packet_id`` counts from 0 over the file, and
    each chunk's ``linktype`` is that of its packets. A final record cut off by the end of the file
    ends the iteration after the last whole packet; ``truncated_offset`` then says where it began.
    """

    def __init__(self, path: str | os.PathLike[str], chunk: int = 65536) -> None:
        self.path = os.fspath(path)
        self.chunk = _chunk_size(chunk)
        self._reader = _core.PcapReader(self.path)

    @property
    def linktype(self) -> int:
        """The file's link type (pcapng: that of its first interface)."""
        return int(self._reader.linktype)

    @property
    def pcapng(self) -> bool:
        return bool(self._reader.pcapng)

    @property
    def file_size(self) -> int:
        """Size in bytes (0 if not a regular file, e.g. a pipe)."""
        return int(self._reader.file_size)

    @property
    def position(self) -> int:
        """Bytes of the file consumed so far."""
        return int(self._reader.position)

    @property
    def packets_read(self) -> int:
        return int(self._reader.packets_read)

    @property
    def snapped(self) -> int:
        """Packets stored shorter than they were on the wire (caplen < len)."""
        return int(self._reader.snapped)

    @property
    def truncated_offset(self) -> int | None:
        """Byte offset of a cut-off final record (not read), or None if the file ends cleanly."""
        off = self._reader.truncated_offset
        return None if off is None else int(off)

    @property
    def truncated_bytes(self) -> int:
        return int(self._reader.truncated_bytes)

    def truncation_warning(self) -> str | None:
        """A one-line description of a cut-off final record, or None."""
        off = self.truncated_offset
        if off is None:
            return None
        return (f"{self.path}: the last record is cut off at byte offset {off} ({self.truncated_bytes} bytes "
                f"ignored); read the {self.packets_read} whole packets before it")

    def check_parsable(self) -> None:
        """Raise ValueError if the parser does not handle this file's link type."""
        check_parsable(self.linktype, self.path)

    def read(self, max_packets: int | None = None) -> _core.PacketBatch | None:
        """The next chunk (at most ``max_packets``, default ``chunk``), or None at the end."""
        return self._reader.read(self.chunk if max_packets is None else _chunk_size(max_packets))

    def __iter__(self) -> Iterator[_core.PacketBatch]:
        while True:
            b = self._reader.read(self.chunk)
            if b is None:
                return
            yield b


class PcapSink:
    """A classic pcap file being written; every batch written must have the sink's ``linktype``.

    Creating it truncates ``path``. Records are built natively into a 4 MiB buffer written with one
    write(2) each; a regular file has disk blocks reserved ahead of the data as it grows (its size is
    always that of the records written, so a killed writer leaves a readable file), and closing it
    gives back the reserved blocks not used. Use it as a context manager, or call ``close()``, which
    reports any write error (OSError).
    """

    def __init__(self, path: str | os.PathLike[str], linktype: int = 1, nanosecond: bool = False) -> None:
        self.path = os.fspath(path)
        self._writer = _core.PcapWriter(self.path, bool(nanosecond), linktype)

    @property
    def linktype(self) -> int:
        return int(self._writer.linktype)

    @property
    def packets_written(self) -> int:
        return int(self._writer.packets_written)

    def write(self, batch: _core.PacketBatch) -> None:
        self._writer.write(batch)

    def close(self) -> None:
        self._writer.close()

    def __enter__(self) -> PcapSink:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
