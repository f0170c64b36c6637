"""Packet sources and sinks: where batches come from and where forwarded packets go.

- ``PcapSource(path, chunk=65536)``: iterate a pcap or pcapng file as PacketBatch chunks (memory
  mapped, one link type per chunk), with the progress (``position`` / ``file_size``), snapped and
  cut-off-record accounting a command line needs.
- ``PcapSink(path, linktype=1, nanosecond=False)``: write batches to a classic pcap file.
- ``LINKTYPES``: names of the link types the parser handles; ``check_parsable(linktype)``
  raises a one-line ValueError for any other.
- ``same_file(a, b)``: True if two paths name one file (also through a symlink or a hard link),
  so a command can refuse to overwrite its own input.
"""

from __future__ import annotations

from ._pcap import LINKTYPES, PcapSink, PcapSource, check_parsable, same_file

__all__ = ["LINKTYPES", "PcapSink", "PcapSource", "check_parsable", "same_file"]

for _obj in (PcapSink, PcapSource, check_parsable, same_file):
    _obj.__module__ = __name__  # documented (and shown in reprs) as vnfkit.io.X
del _obj
