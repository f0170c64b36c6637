"""Adversarial robustness of the public API: bad input gets a clear error naming the argument or
field (TypeError / ValueError or the documented specific exception), never a crash or a silent
corruption; legitimately odd input (empty arrays, full tables) behaves correctly.

* an inventory test fails when a public callable of vnfkit._core has no hostile case here;
* a table of hostile calls, one per case, each with the exception type and the field it must name;
* regression tests for the bugs this audit fixed;
* a hypothesis fuzz: random garbage written into the writable columns of a parsed batch, then
  parse / verify_checksums / fix_checksums / rewrite / classify / FlowTable.lookup_or_insert /
  steer, checked against invariants (bounds, partition, table size, untouched bytes outside a
  packet's own frame).
"""

from __future__ import annotations

import inspect
from typing import Any, Callable

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import vnfkit
from vnfkit import _core
from vnfkit.classify import MultiQueueClassifier, Reta, Toeplitz
from vnfkit.nfs.adaptive_lb import AdaptiveLB
from vnfkit.nfs.monitor import Monitor
from vnfkit.nfs.qos import QoS, dscp_of
from vnfkit.nfs.simplenat import SimpleNAT
from vnfkit.state import DETERMINANT_DTYPE, DivergenceError, OutputCommit, Replayer, SharedState
from vnfkit.tables import ExceptionTable, FlowTable, RangeTable, SnapshotError, TableFullError, make_keys, steer
from vnfkit.vnf import Context as VnfContext

KD = vnfkit.FLOW_KEY_DTYPE
U8, U16, U32, U64 = np.uint8, np.uint16, np.uint32, np.uint64


# ------------------------------------------------------------------------------------------ fixtures


def _frames() -> list[bytes]:
    """TCP, UDP, ICMP echo over IPv4 and TCP over IPv6, with valid checksums (built by the engine)."""
    keys = np.zeros(4, KD)
    keys["src"][:3, :4] = [10, 0, 0, 1]
    keys["dst"][:3, :4] = [10, 0, 0, 2]
    keys["src"][3, 15] = 1
    keys["dst"][3, 15] = 2
    keys["sport"] = [1000, 1001, 7, 1003]
    keys["dport"] = [80, 53, 7, 443]
    keys["proto"] = [6, 17, 1, 6]
    keys["family"] = [4, 4, 4, 6]
    b = _core.build_packets(keys, np.full(4, 90, U16), np.arange(4, dtype=U64), np.full(4, 0x10, U8),
                            np.zeros(4, U32))
    return b.to_list()


FRAMES = _frames()


def parsed(frames: list[bytes] = FRAMES) -> _core.PacketBatch:
    b = _core.PacketBatch(frames, ts_ns=np.arange(len(frames), dtype=U64))
    b.parse()
    return b


def keys(n: int = 4) -> np.ndarray:
    return make_keys(np.arange(n) + 0x0A000001, 0x0A000002, np.arange(n) + 1000, 80)


def state_ctx() -> tuple[SharedState, Any]:
    s = SharedState()
    return s, s.context(0)


def pids(n: int) -> np.ndarray:
    return np.arange(n, dtype=U64)


# ------------------------------------------------------------------------------------------ inventory

# Public callables of vnfkit._core that are plain accessors (no arguments beyond self) and cannot
# receive hostile input; everything else must appear in CASES below.
NO_ARGUMENTS = {
    "StreamCommit.bound", "StreamCommit.stable", "StreamCommit.next_record", "StreamCommit.input_acked",
    "StreamCommit.held_packets", "StreamCommit.oldest_pending", "StreamCommit.release",
    "Context.log_capacity", "Context.log_full_events", "Context.log_in_shared_memory", "SharedBuffer.id",
    "SharedBuffer.name", "SharedBuffer.nbytes", "SharedBuffer.snapshot", "SharedState.__enter__",
    "SharedState.__exit__", "SharedState.arena_bytes", "SharedState.arena_used", "SharedState.close",
    "SharedState.closed", "SharedState.is_owner", "SharedState.max_workers", "SharedState.shm_name",
    "Context.drained_position", "Context.held", "Context.mode", "Context.position", "Context.replay_remaining",
    "Context.thread", "Context.drain_chunk", "Counters.full_events", "Counters.id", "Counters.items",
    "Counters.keyed", "Counters.name", "Counters.slots", "Counters.snapshot", "ExceptionTable.__len__",
    "ExceptionTable.capacity", "ExceptionTable.clear", "ExceptionTable.contents", "ExceptionTable.keys", "ExceptionTable.memory_bytes",
    "ExceptionTable.snapshot", "ExceptionTable.stats", "ExceptionTable.targets", "ExceptionTable.version", "FlowTable.__len__",
    "FlowTable.capacity", "FlowTable.clear", "FlowTable.close_timeout_ns", "FlowTable.idle_timeout_ns",
    "FlowTable.live_slots", "FlowTable.memory_bytes", "FlowTable.now_ns", "FlowTable.snapshot",
    "FlowTable.stats", "FlowTable.tick_ns", "FlowTable.timeout_classes", "FlowTable.class_of_proto", "FlowTable.value_size", "FlowTable.values_raw",
    "FlowTable.dirty_count", "FlowTable.take_delta", "FlowTable.clear_dirty", "FlowTableImage.snapshot",
    "FlowTableImage.__len__", "FlowTableImage.deltas", "FlowTableImage.clear_delta", "FlowTableImage.pending_intervals",
    "MultiQueueClassifier.key", "MultiQueueClassifier.num_queues", "MultiQueueClassifier.reta",
    "MultiQueueClassifier.symmetric", "MultiQueueClassifier.use_ports", "OutputCommit.queues",
    "OutputCommit.threads", "PacketBatch.__len__", "PacketBatch.data", "PacketBatch.drop_counts",
    "PacketBatch.fix_checksums", "PacketBatch.parse", "PacketBatch.to_list", "PacketBatch.validate",
    "PacketBatch.verify_checksums", "PacketBatch.drop", "PacketBatch.flags", "PacketBatch.flow_id",
    "PacketBatch.hash", "PacketBatch.key", "PacketBatch.l3_offset", "PacketBatch.l4_len",
    "PacketBatch.l4_offset", "PacketBatch.packet_id", "PacketBatch.port", "PacketBatch.queue",
    "PacketBatch.tcp_flags", "PacketBatch.ts_ns", "PcapReader.linktype", "PcapReader.packets_read",
    "PcapReader.pcapng", "PcapReader.snapped", "PcapReader.file_size", "PcapReader.position",
    "PcapReader.truncated_bytes", "PcapReader.truncated_offset", "PcapWriter.linktype", "PcapWriter.__enter__", "PcapWriter.__exit__",
    "PcapWriter.close", "PcapWriter.packets_written", "PortPool.allocated_count", "PortPool.exhausted_events",
    "PortPool.hi", "PortPool.id", "PortPool.lo", "PortPool.name", "PortPool.snapshot", "PortPool.subpools",
    "RangeTable.__len__", "RangeTable.ranges", "RangeTable.snapshot", "RangeTable.version", "Registers.id", "Registers.name",
    "Registers.slots", "Registers.snapshot", "Replayer.finished", "Replayer.threads", "Reta.__len__",
    "Reta.fill_round_robin", "Reta.num_queues", "Reta.size", "Reta.table", "SharedState.__init__",
    "SharedState.__len__", "SharedState.positions", "SharedState.snapshot", "Toeplitz.key", "Toeplitz.simd",
    "Toeplitz.simd_supported", "TokenBuckets.buckets", "TokenBuckets.id", "TokenBuckets.name",
    "TokenBuckets.ns_per_token", "TokenBuckets.snapshot", "Context.__init__", "Counters.__init__",
    "PortPool.__init__", "NatFastPath.batch_capacity", "Registers.__init__", "TokenBuckets.__init__", "determinant_dtype", "flow_key_dtype",
    "SlabRing.can_fill", "SlabRing.data_capacity", "SlabRing.in_flight", "SlabRing.input_ready",
    "SlabRing.max_packets", "SlabRing.notify_worker", "SlabRing.open_packets", "SlabRing.open_since_ns",
    "SlabRing.outputs_ready", "SlabRing.request_stop", "SlabRing.slab_bytes", "SlabRing.slots",
    "SlabRing.stopped", "SlabRing.user_word", "now_ns", "retain_heap",
    "LifeLines.__len__", "DeathWatch.first_dead", "DeathWatch.lines", "DeathWatch.close",
    "Dispatcher.busy", "Dispatcher.clear_counters", "Dispatcher.next_id", "Dispatcher.set_collect",
    "Dispatcher.take_outputs", "Dispatcher.queue_counts",
    "AfPacketSocket.__enter__", "AfPacketSocket.__exit__", "AfPacketSocket.batch", "AfPacketSocket.close",
    "AfPacketSocket.closed", "AfPacketSocket.fanout_group", "AfPacketSocket.ifindex", "AfPacketSocket.interface",
    "AfPacketSocket.mac", "AfPacketSocket.mtu", "AfPacketSocket.ring_blocks", "AfPacketSocket.snaplen", "AfPacketSocket.stats",
}


def public_core_callables() -> set[str]:
    names: set[str] = set()
    for name, obj in vars(_core).items():
        if name.startswith("__"):
            continue
        if inspect.isclass(obj):
            if issubclass(obj, BaseException) or hasattr(obj, "__members__"):
                continue  # exception types and enums
            for attr in vars(obj):
                if not attr.startswith("_") or attr in ("__init__", "__len__", "__getitem__", "__setitem__",
                                                        "__enter__", "__exit__"):
                    names.add(f"{name}.{attr}")
        elif callable(obj):
            names.add(name)
    return names


# ------------------------------------------------------------------------------------------ hostile calls

# (id, covers, call, expected exception, regex the message must match: the offending field)
Case = tuple[str, str, Callable[[], Any], type[BaseException], str]
CASES: list[Case] = []


def case(covers: str, exc: type[BaseException], match: str) -> Callable[[Callable[[], Any]], Callable[[], Any]]:
    def deco(f: Callable[[], Any]) -> Callable[[], Any]:
        CASES.append((f.__name__, covers, f, exc, match))
        return f
    return deco


# ---- live (AF_PACKET on the loopback interface: needs root or CAP_NET_RAW)
def _lo_socket() -> Any:
    try:
        return _core.AfPacketSocket("lo")
    except PermissionError:
        pytest.skip("AF_PACKET needs root / CAP_NET_RAW")
@case("AfPacketSocket.__init__", ValueError, "interface: no interface named 'vknosuch0'")
def af_packet_unknown_interface(): _core.AfPacketSocket("vknosuch0")
@case("AfPacketSocket.__init__", ValueError, "snaplen: must be in 64..65535")
def af_packet_snaplen(): _core.AfPacketSocket("lo", snaplen=1)
@case("AfPacketSocket.__init__", ValueError, "ring_blocks: must be 0")
def af_packet_ring_blocks(): _core.AfPacketSocket("lo", ring_blocks=5000)
@case("AfPacketSocket.recv", ValueError, "timeout_ms")
def af_packet_recv_timeout(): _lo_socket().recv(-5)
@case("AfPacketSocket.recv", ValueError, "is closed")
def af_packet_recv_closed():
    s = _lo_socket()
    s.close()
    s.recv(0)
@case("AfPacketSocket.send", TypeError, "indices.*uint32")
def af_packet_send_int64(): _lo_socket().send(_core.PacketBatch(FRAMES), np.array([0]))
@case("AfPacketSocket.send", IndexError, "indices: index 9 is out of range")
def af_packet_send_out_of_range(): _lo_socket().send(_core.PacketBatch(FRAMES), np.array([9], U32))
@case("AfPacketSocket.fileno", ValueError, "is closed")
def af_packet_fileno_closed():
    s = _lo_socket()
    s.close()
    s.fileno()
@case("set_ethernet_addresses", ValueError, "dst: must be 6 bytes")
def set_macs_short(): _core.set_ethernet_addresses(_core.PacketBatch(FRAMES), np.array([0], U32), b"ab", b"abcdef")
@case("set_ethernet_addresses", IndexError, "indices: index 4 is out of range")
def set_macs_out_of_range():
    _core.set_ethernet_addresses(_core.PacketBatch(FRAMES), np.array([4], U32), b"abcdef", b"abcdef")


# ---- packet
@case("PacketBatch.__init__", TypeError, "every packet must be bytes")
def batch_of_str(): _core.PacketBatch(["abc"])
@case("PacketBatch.__init__", TypeError, "incompatible constructor")
def batch_of_none(): _core.PacketBatch(None)
@case("PacketBatch.__init__", TypeError, "ts_ns.*uint64")
def batch_ts_int64(): _core.PacketBatch([b"a"], ts_ns=np.array([1]))
@case("PacketBatch.__init__", ValueError, "ts_ns: length")
def batch_ts_length(): _core.PacketBatch([b"a"], ts_ns=np.zeros(2, U64))
@case("PacketBatch.from_arrays", ValueError, r"offsets: offsets\[-1\]")
def from_arrays_past_end(): _core.PacketBatch.from_arrays(np.zeros(3, U8), np.array([0, 5], U32))
@case("PacketBatch.from_arrays", ValueError, "offsets: must be non-decreasing")
def from_arrays_decreasing(): _core.PacketBatch.from_arrays(np.zeros(3, U8), np.array([0, 3, 1, 3], U32))
@case("PacketBatch.from_arrays", ValueError, "offsets: needs")
def from_arrays_no_offsets(): _core.PacketBatch.from_arrays(np.zeros(0, U8), np.zeros(0, U32))
@case("PacketBatch.from_arrays", TypeError, "offsets.*uint32")
def from_arrays_int64(): _core.PacketBatch.from_arrays(np.zeros(3, U8), np.array([0, 3]))
@case("PacketBatch.from_arrays", TypeError, "data: array must be C-contiguous")
def from_arrays_strided(): _core.PacketBatch.from_arrays(np.zeros(6, U8)[::2], np.array([0, 3], U32))
@case("PacketBatch.linktype", ValueError, "linktype")
def linktype_out_of_range():
    b = parsed()
    b.linktype = 1 << 20
@case("PacketBatch.from_pcap", IsADirectoryError, "Is a directory")
def pcap_directory(): _core.PacketBatch.from_pcap("/")
@case("PacketBatch.from_pcap", FileNotFoundError, "x.pcap")
def pcap_missing(): _core.PacketBatch.from_pcap("/nonexistent/x.pcap")
@case("PacketBatch.to_pcap", IsADirectoryError, "Is a directory")
def to_pcap_directory(): parsed().to_pcap("/")
@case("PacketBatch.select", ValueError, "indices: index 4 out of range")
def select_out_of_range(): parsed().select(np.array([0, 4], U32))
@case("PacketBatch.select", TypeError, "indices.*uint32.*int64")
def select_int64(): parsed().select(np.array([0]))
@case("PacketBatch.select", TypeError, "indices: expected a 1-D")
def select_2d(): parsed().select(np.zeros((1, 1), U32))
@case("PacketBatch.select", TypeError, "indices: array must be C-contiguous")
def select_strided(): parsed().select(np.zeros(4, U32)[::2])
@case("PacketBatch.rewrite_source", ValueError, "indices: index 9 out of range")
def rewrite_out_of_range(): parsed().rewrite_source(np.array([9], U32), np.zeros(1, U32), np.zeros(1, U16))
@case("PacketBatch.rewrite_destination", ValueError, "addr: length")
def rewrite_length_mismatch(): parsed().rewrite_destination(np.array([0], U32), np.zeros(2, U32), np.zeros(1, U16))
@case("PacketBatch.rewrite_destination", TypeError, "port.*uint16.*float64")
def rewrite_float_port(): parsed().rewrite_destination(np.array([0], U32), np.zeros(1, U32), np.zeros(1))
@case("PacketBatch.packet", IndexError, "packet index out of range")
def packet_out_of_range(): parsed().packet(4)
@case("PacketBatch.offsets", ValueError, "read-only")
def write_offsets():
    parsed().offsets[1] = 10**9  # regression: this used to crash parse / to_list / select
@case("PcapReader.__init__", IsADirectoryError, "Is a directory")
def reader_directory(): _core.PcapReader("/")
@case("PcapReader.read", ValueError, "max_packets")
def reader_zero(tmp: str = "") -> None:
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        parsed().to_pcap(f"{d}/t.pcap")
        _core.PcapReader(f"{d}/t.pcap").read(0)
@case("PcapWriter.__init__", IsADirectoryError, "Is a directory")
def writer_directory(): _core.PcapWriter("/")
@case("PcapWriter.write", ValueError, "write after close")
def writer_after_close():
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        w = _core.PcapWriter(f"{d}/w.pcap")
        w.close()
        w.write(parsed())
@case("drop_reason_name", ValueError, "code: unknown drop reason code 99")
def drop_reason_unknown(): _core.drop_reason_name(99)
@case("encode_input_record", TypeError, "incompatible function arguments")
def input_record_not_a_batch(): _core.encode_input_record(b"VKIB")
@case("encode_input_record", TypeError, "incompatible function arguments")
def input_record_negative_id(): _core.encode_input_record(parsed(), -1)
@case("encode_input_record", ValueError, "first_id: .* overflows a 64-bit packet id")
def input_record_id_overflow(): _core.encode_input_record(parsed(), 2**64 - 1)  # the ids would wrap
@case("build_packets", ValueError, "keys: unsupported family/proto 7/0")
def build_bad_family():
    k = np.zeros(1, KD)
    k["family"] = 7
    _core.build_packets(k, np.full(1, 60, U16), np.zeros(1, U64), np.zeros(1, U8), np.zeros(1, U32))
@case("build_packets", ValueError, "sizes: length")
def build_length_mismatch(): _core.build_packets(keys(2), np.full(3, 60, U16), np.zeros(2, U64), np.zeros(2, U8), np.zeros(2, U32))
@case("build_packets", TypeError, "keys.*FLOW_KEY_DTYPE")
def build_wrong_keys(): _core.build_packets(np.zeros(2, U64), np.full(2, 60, U16), np.zeros(2, U64), np.zeros(2, U8), np.zeros(2, U32))


# ---- classify
@case("Toeplitz.__init__", ValueError, "key: an RSS key must be 40..64 bytes")
def toeplitz_short_key(): Toeplitz(b"abc")
@case("Toeplitz.__init__", TypeError, "key: expected bytes")
def toeplitz_str_key(): _core.Toeplitz("k" * 40)
@case("Toeplitz.hash", ValueError, "input: at most 36 bytes")
def toeplitz_long_input(): Toeplitz().hash(b"a" * 37)
@case("Toeplitz.hash_v4", ValueError, "src, dst, sport, dport: arrays must have the same length")
def toeplitz_v4_mismatch(): Toeplitz().hash_v4(np.zeros(2, U32), np.zeros(3, U32), np.zeros(2, U16), np.zeros(2, U16))
@case("Toeplitz.hash_v4", TypeError, "src: expected a 1-D")
def toeplitz_v4_2d(): Toeplitz().hash_v4(np.zeros((2, 1), U32), np.zeros(2, U32), np.zeros(2, U16), np.zeros(2, U16))
@case("Toeplitz.hash_keys", TypeError, "keys:.*FLOW_KEY_DTYPE")
def toeplitz_keys_wrong(): Toeplitz().hash_keys(np.zeros(3, U64))
@case("toeplitz_hash", ValueError, "key: a Toeplitz key must be at least")
def toeplitz_hash_short_key(): _core.toeplitz_hash(b"a" * 40, b"k" * 10)
@case("toeplitz_hash", TypeError, "data: expected bytes")
def toeplitz_hash_str(): _core.toeplitz_hash("abc")
@case("_toeplitz_hash_v4_bitserial", TypeError, "src.*uint32.*int64")
def bitserial_int64(): _core._toeplitz_hash_v4_bitserial(np.zeros(2, np.int64), np.zeros(2, U32), np.zeros(2, U16), np.zeros(2, U16))
@case("Reta.__init__", ValueError, "reta_size: must be a power of two")
def reta_not_pow2(): Reta(100, num_queues=2)
@case("Reta.__init__", ValueError, "num_queues: must be in 1..1024")
def reta_no_queues(): Reta(8, num_queues=0)
@case("Reta.__setitem__", ValueError, r"queue 2 must be < num_queues \(2\)")
def reta_entry_too_big():
    r = Reta(8, num_queues=2)
    r[0] = 2
@case("Reta.__getitem__", IndexError, "reta index out of range")
def reta_index(): Reta(8, num_queues=2)[8]
@case("Reta.set", ValueError, "reta index")
def reta_set_negative(): _core.Reta(8, num_queues=2).set(-1, 0)
@case("Reta.update", ValueError, "expected 8 entries, got 2")
def reta_update_short(): Reta(8, num_queues=2).update([0, 1])
@case("Reta.update", TypeError, "table: entries must be int")
def reta_update_float(): Reta(8, num_queues=2).update([0.5] * 8)
@case("Reta.update", ValueError, r"queue 5 must be < num_queues")
def reta_update_big(): Reta(8, num_queues=2).update(np.full(8, 5, U16))
@case("Reta.lookup", TypeError, "incompatible function arguments")
def reta_lookup_negative(): _core.Reta(8, num_queues=2).lookup(-1)
@case("MultiQueueClassifier.__init__", ValueError, "num_queues: must be in 1..1024, got 5000")
def mqc_many_queues(): MultiQueueClassifier(5000)
@case("MultiQueueClassifier.__init__", ValueError, "reta_size")
def mqc_reta_size(): MultiQueueClassifier(2, reta_size=100)
@case("MultiQueueClassifier.classify", TypeError, "incompatible function arguments")
def mqc_classify_none(): _core.MultiQueueClassifier(2).classify(None)
@case("MultiQueueClassifier.split", TypeError, "batch: must be a PacketBatch")
def mqc_split_not_batch(): _core.MultiQueueClassifier(2).split(b"x")
@case("MultiQueueClassifier.ports_for_queue", ValueError, "queue: 7 must be < num_queues")
def mqc_ports_queue(): _core.MultiQueueClassifier(2).ports_for_queue("1.2.3.4", "5.6.7.8", 80, 7)
@case("MultiQueueClassifier.ports_for_queue", ValueError, "address families differ")
def mqc_ports_families(): _core.MultiQueueClassifier(2).ports_for_queue("1.2.3.4", "::1", 80, 0)
@case("MultiQueueClassifier.ports_for_queue", ValueError, "remote_addr: not an IP address")
def mqc_ports_bad_addr(): _core.MultiQueueClassifier(2).ports_for_queue("1.2.3", "5.6.7.8", 80, 0)


# ---- flow tables
@case("FlowTable.__init__", ValueError, "idle_timeout_s: .*finite")
def ft_inf_timeout(): FlowTable(8, idle_timeout_s=float("inf"))  # regression: was OverflowError
@case("FlowTable.__init__", ValueError, "tcp_close_timeout_s: .*finite")
def ft_huge_timeout(): FlowTable(8, tcp_close_timeout_s=1e300)  # regression: was OverflowError
@case("FlowTable.__init__", ValueError, "tick_s: .*finite")
def ft_inf_tick(): FlowTable(8, tick_s=float("inf"))
@case("FlowTable.__init__", ValueError, "idle_timeout_s: must be > 0")
def ft_nan_timeout(): FlowTable(8, idle_timeout_s=float("nan"))
@case("FlowTable.__init__", TypeError, "idle_timeout_s: expected a number")
def ft_str_timeout(): FlowTable(8, idle_timeout_s="30")
@case("FlowTable.__init__", TypeError, "capacity: expected an int, got str")
def ft_str_capacity(): FlowTable("8")  # regression: was a bare '<=' TypeError
@case("FlowTable.__init__", TypeError, "capacity: expected an int, got bool")
def ft_bool_capacity(): FlowTable(True)  # regression: was a 1-slot table
@case("FlowTable.__init__", ValueError, "capacity: must be between 1 and 2\\*\\*30")
def ft_zero_capacity(): FlowTable(0)
@case("FlowTable.__init__", TypeError, "value_dtype: must not contain Python objects")
def ft_object_dtype(): FlowTable(8, object)
@case("FlowTable.__init__", ValueError, "value_size")
def ft_core_zero_value(): _core.FlowTable(8, 0)
@case("FlowTable.lookup", TypeError, "keys: expected a numpy array of vnfkit.FLOW_KEY_DTYPE")
def ft_lookup_u64(): FlowTable(8).lookup(np.zeros(4, U64))
@case("FlowTable.lookup", TypeError, "keys: array must be C-contiguous")
def ft_lookup_strided(): FlowTable(8).lookup(keys(8)[::2])
@case("FlowTable.lookup_or_insert", ValueError, "flow_ids: length 3 differs")
def ft_loi_mismatch(): FlowTable(8).lookup_or_insert(keys(4), flow_ids=np.zeros(3, U32))
@case("FlowTable.lookup_or_insert", ValueError, "ts_ns: -1 is out of range")
def ft_loi_negative_ts(): FlowTable(8).lookup_or_insert(keys(4), ts_ns=-1)  # regression: was OverflowError
@case("FlowTable.lookup_or_insert", ValueError, "tcp_flags: length 2 differs")
def ft_loi_flags(): FlowTable(8).lookup_or_insert(keys(4), tcp_flags=np.zeros(2, U8))
@case("FlowTable.lookup", ValueError, "indices: 4 is out of range \\(4 rows\\)")
def ft_lookup_rows_range(): _core.FlowTable(8, 8).lookup(keys(4), np.array([0, 4], U32))
@case("FlowTable.lookup", TypeError, "indices.*uint32")
def ft_lookup_rows_dtype(): _core.FlowTable(8, 8).lookup(keys(4), np.array([0, 1], np.int64))
@case("FlowTable.lookup", TypeError, "indices")
def ft_lookup_rows_strided(): _core.FlowTable(8, 8).lookup(keys(4), np.arange(4, dtype=U32)[::2])
@case("FlowTable.lookup_or_insert", ValueError, "indices: 9 is out of range \\(4 rows\\)")
def ft_loi_rows_range(): _core.FlowTable(8, 8).lookup_or_insert(keys(4), np.zeros(4, U32), np.zeros(4, U64), None, np.array([9], U32))
@case("FlowTable.lookup_or_insert", TypeError, "indices.*uint32")
def ft_loi_rows_dtype(): _core.FlowTable(8, 8).lookup_or_insert(keys(4), np.zeros(4, U32), np.zeros(4, U64), None, np.zeros(2, U64))
@case("FlowTable.lookup_or_insert", ValueError, "ts_ns: length 2 differs")
def ft_loi_rows_short_column(): _core.FlowTable(8, 8).lookup_or_insert(keys(4), np.zeros(4, U32), np.zeros(2, U64), None, np.array([0], U32))
@case("FlowTable.remove", TypeError, "keys: expected a PacketBatch or a numpy array")
def ft_remove_none(): FlowTable(8).remove(None)
@case("FlowTable.remove_slots", TypeError, "slots.*uint32.*int64")
def ft_remove_slots_int64(): FlowTable(8).remove_slots(np.array([0]))
@case("FlowTable.touch", ValueError, "slots: 5 is not a live slot")
def ft_touch_dead(): FlowTable(8).touch(np.array([5], U32), np.zeros(1, U64))
@case("FlowTable.touch", TypeError, "slots.*uint32")
def ft_touch_int64(): FlowTable(8).touch(np.array([0]), np.zeros(1, U64))
@case("FlowTable.touch", ValueError, "indices: 3 is out of range \\(1 rows\\)")
def ft_touch_rows(): _core.FlowTable(8, 8).touch(np.array([0], U32), np.zeros(1, U64), None, np.array([3], U32))
@case("FlowTable.set_class", ValueError, "timeout_class: 2 is not a class \\(2 classes\\)")
def ft_set_class_bad(): _core.FlowTable(8, 8).set_class(np.zeros(0, U32), 2)
@case("FlowTable.set_class", ValueError, "timeout_class: no class named 'x'")
def ft_set_class_name(): FlowTable(8).set_timeout_class(np.zeros(0, U32), "x")
@case("FlowTable.__init__", ValueError, "class_of_proto: 256 entries")
def ft_core_class_of_proto(): _core.FlowTable(8, 8, None, None, 0, [None], [255], [0])
@case("FlowTable.__init__", ValueError, "on_close: one entry per timeout class")
def ft_core_on_close(): _core.FlowTable(8, 8, None, None, 0, [None], [255, 0])
@case("FlowTable.__init__", ValueError, "timeout_classes: class 0 closes into class 3")
def ft_core_close_target(): _core.FlowTable(8, 8, None, None, 0, [None], [3])
@case("FlowTable.deadline", ValueError, "deadline: slot is not live")
def ft_deadline_out_of_range(): FlowTable(8).deadline(100)
@case("FlowTable.expire", ValueError, "now_ns: -1 is out of range")
def ft_expire_negative(): FlowTable(8).expire(-1)
@case("FlowTable.expire", TypeError, "now_ns: expected an int, got float")
def ft_expire_float(): FlowTable(8).expire(1.5)  # regression: silently truncated
@case("FlowTable.active_in_range", ValueError, "lo must be <= hi")
def ft_active_reversed(): FlowTable(8).active_in_range(5, 1)
@case("FlowTable.restore", SnapshotError, "snapshot truncated")
def ft_restore_truncated(): FlowTable.restore(FlowTable(8).snapshot()[:-3])
@case("FlowTable.restore", SnapshotError, "kind 'range_table', expected 'flow_table'")
def ft_restore_other_kind(): FlowTable.restore(RangeTable([(0, 2**32 - 1, 1)]).snapshot())
@case("FlowTable.restore", TypeError, "image: expected bytes, got NoneType")
def ft_restore_none(): FlowTable.restore(None)
@case("FlowTable.restore_in_place", SnapshotError, "capacity 16 / value size 8 differ")
def ft_restore_in_place_other_shape(): FlowTable(8).restore_in_place(FlowTable(16).snapshot())
@case("FlowTable.restore_in_place", SnapshotError, "snapshot truncated")
def ft_restore_in_place_truncated(): FlowTable(8).restore_in_place(FlowTable(8).snapshot()[:-3])
@case("FlowTable.mark_dirty", TypeError, "slots: expected a numpy array of dtype uint32, got int64")
def ft_mark_dirty_int64(): _core.FlowTable(8, 8).mark_dirty(np.array([0]))
@case("FlowTable.mark_dirty", ValueError, "slots: 99 is out of range \\(capacity 8\\)")
def ft_mark_dirty_range(): _core.FlowTable(8, 8).mark_dirty(np.array([99], U32))
@case("FlowTableImage.__init__", SnapshotError, "snapshot truncated")
def ft_image_junk(): _core.FlowTableImage(b"junk")
@case("FlowTableImage.__init__", TypeError, "incompatible constructor arguments")
def ft_image_none(): _core.FlowTableImage(None)
@case("FlowTableImage.apply", SnapshotError, "snapshot truncated")
def ft_image_apply_junk(): _core.FlowTableImage(_core.FlowTable(8, 8).snapshot()).apply(b"junk")
@case("FlowTableImage.take_delta", ValueError, "no delta applied since the image was built")
def ft_image_take_none(): _core.FlowTableImage(_core.FlowTable(8, 8).snapshot()).take_delta()
@case("FlowTableImage.apply", SnapshotError, "capacity 16 / value size 8 differ from the image's 8 / 8")
def ft_image_apply_foreign(): _core.FlowTableImage(_core.FlowTable(8, 8).snapshot()).apply(_core.FlowTable(16, 8).take_delta())
@case("FlowTable.restore_in_place", TypeError, "image: expected bytes, got NoneType")
def ft_restore_in_place_none(): FlowTable(8).restore_in_place(None)
@case("crc32c", TypeError, "crc32c: data must be a contiguous bytes-like")
def crc32c_strided(): _core.crc32c(memoryview(bytes(8))[::2])
@case("FlowTable.user_meta", TypeError, "incompatible function arguments")
def ft_user_meta_str():
    _core.FlowTable(8, 8).user_meta = "x"
@case("FlowTable.entries_raw", ValueError, "read-only")
def ft_entries_write():
    FlowTable(8)._t.entries_raw()[0] = 1  # regression: writes corrupted the index / free list
@case("RangeTable.__init__", ValueError, r"ranges: range 1 \[5, 20\] overlaps range 0")
def rt_overlap(): RangeTable([(0, 10, 0), (5, 20, 1)])
@case("RangeTable.assign", ValueError, r"ranges: range 0 \[5, 1\] is empty")
def rt_assign_empty(): _core.RangeTable([]).assign([(5, 1, 0)])
@case("RangeTable.split", ValueError, "split: no range contains 99")
def rt_split(): RangeTable([(0, 10, 0)]).split(99, 1)
@case("RangeTable.merge", ValueError, "merge: 5 is not the boundary")
def rt_merge(): RangeTable([(0, 10, 0)]).merge(5)
@case("RangeTable.set_target", ValueError, "set_target: no range contains 50")
def rt_set_target_gap(): RangeTable([(0, 10, 0)]).set_target(50, 1)
@case("RangeTable.find", TypeError, "incompatible function arguments")
def rt_find_negative(): _core.RangeTable([]).find(-1)
@case("RangeTable.lookup", TypeError, "flow_ids.*uint32.*int64")
def rt_lookup_int64(): RangeTable([(0, 10, 0)]).lookup(np.array([1]))
@case("RangeTable.restore", SnapshotError, "kind 'exception_table', expected 'range_table'")
def rt_restore_other(): RangeTable.restore(ExceptionTable(4).snapshot())
@case("ExceptionTable.__init__", ValueError, "capacity: must be a positive number")
def et_negative(): ExceptionTable(-1)
@case("ExceptionTable.__init__", TypeError, "capacity: expected an int or None, got float")
def et_float(): ExceptionTable(2.5)
@case("ExceptionTable.insert", TableFullError, "ExceptionTable full: 0/2 entries, 4 new keys")
def et_full(): ExceptionTable(2).insert(keys(4), np.arange(4, dtype=U32))
@case("ExceptionTable.insert", ValueError, "targets: entry 0 is 0xFFFFFFFF")
def et_reserved_target(): ExceptionTable(4).insert(keys(1), np.array([0xFFFFFFFF], U32))
@case("ExceptionTable.insert", ValueError, "targets: length 1 differs")
def et_targets_mismatch(): ExceptionTable(4).insert(keys(2), np.array([1], U32))
@case("ExceptionTable.remove", TypeError, "keys: array must be C-contiguous")
def et_remove_strided(): ExceptionTable(4).remove(keys(4)[::2])
@case("ExceptionTable.lookup", TypeError, "keys: expected a 1-D")
def et_lookup_2d(): ExceptionTable(4).lookup(keys(4).reshape(2, 2))
@case("ExceptionTable.restore", SnapshotError, "checksum mismatch")
def et_restore_flipped():
    e = ExceptionTable(4)
    e.insert(keys(2), np.array([1, 2], U32))
    img = bytearray(e.snapshot())
    img[-1] ^= 0xFF
    ExceptionTable.restore(bytes(img))
@case("steer", ValueError, "flow_ids: length 3 differs")
def steer_mismatch(): steer(keys(2), np.zeros(3, U32), ranges=RangeTable([(0, 2**32 - 1, 0)]))
@case("steer", TypeError, "flow_ids: required")
def steer_no_ids(): steer(keys(2), ranges=RangeTable([(0, 2**32 - 1, 0)]))


# ---- shared state, logs, output commit, replay
def _ctr(slots: int = 4, keyed: bool = False) -> tuple[Any, Any]:
    s, c = state_ctx()
    return s.counters("a", slots, keyed=keyed), c


@case("SharedState.create_shm", ValueError, "name: a shared-memory state name must start with 'vnfkit-'")
def ss_create_bad_name(): SharedState.create_shm("../etc/x", 1 << 20)
@case("SharedState.attach_shm", ValueError, "name: no shared-memory state called")
def ss_attach_missing(): SharedState.attach_shm("vnfkit-no-such-segment-here")
@case("SharedState.buffer", ValueError, r"nbytes: must be in \[1, 2\^36\]")
def ss_buffer_zero(): state_ctx()[0].buffer("b", 0)
@case("SharedState.read_log", ValueError, "from_position: 5 is beyond the end")
def ss_read_log_beyond(): state_ctx()[0].read_log(0, 5)
@case("SharedState.log_chunk", ValueError, "thread: worker 7 has no determinant log")
def ss_log_chunk_none(): state_ctx()[0].log_chunk(7)
@case("SharedState.log_chunk_range", ValueError, "to_position: worker 0's log ends at 0")
def ss_log_chunk_range_short(): state_ctx()[0].log_chunk_range(0, 0, 3)
@case("SharedState.positions_into", TypeError, "out: expected a writable contiguous 1-D buffer of uint64")
def ss_positions_into_bytes(): state_ctx()[0].positions_into(bytearray(64), 0, 2)
@case("SharedState.positions_into", ValueError, r"offset/count: \[6, 6\+4\) is outside out's 8 words")
def ss_positions_into_outside(): state_ctx()[0].positions_into(np.zeros(8, np.uint64), 6, 4)
@case("SharedState.positions_into", ValueError, "count: 1 workers have log positions, only 0 words given")
def ss_positions_into_short(): state_ctx()[0].positions_into(np.zeros(8, np.uint64), 0, 0)
def _stream_commit() -> Any:
    words = np.zeros(2 * 10, dtype=np.uint64)
    return _core.StreamCommit(2, words, 10, 2, 4, 0)
@case("decode_input_record", ValueError, "input record: bad magic")
def dec_rec_short(): _core.decode_input_record(b"VKI")
@case("decode_input_record", ValueError, "input record: 13 bytes, expected 16")
def dec_rec_size(): _core.decode_input_record(b"VKIB" + bytes(9))
@case("decode_input_record", TypeError, "incompatible function arguments")
def dec_rec_str(): _core.decode_input_record("VKIB")
@case("StreamCommit.__init__", ValueError, "board: a line of 10 words cannot hold 2 head words and 5 rows")
def sc_init_rows(): _core.StreamCommit(2, np.zeros(20, np.uint64), 10, 2, 5, 0)
@case("StreamCommit.__init__", ValueError, "board: 19 words, 2 lines of 10 need 20")
def sc_init_short(): _core.StreamCommit(2, np.zeros(19, np.uint64), 10, 2, 4, 0)
@case("StreamCommit.__init__", TypeError, "board: expected a writable contiguous 1-D buffer of 8-byte words")
def sc_init_bytes(): _core.StreamCommit(2, bytearray(160), 10, 2, 4, 0)
@case("StreamCommit.__init__", ValueError, "workers: at least one")
def sc_init_zero(): _core.StreamCommit(0, np.zeros(20, np.uint64), 10, 2, 4, 0)
@case("StreamCommit.dispatched", ValueError, "counts: 3 queues, expected 2")
def sc_dispatched_counts(): _stream_commit().dispatched(0, 0, 1, [1, 0, 0])
@case("StreamCommit.dispatched", TypeError, "incompatible function arguments")
def sc_dispatched_negative(): _stream_commit().dispatched(-1, 0, 1, [1, 0])
@case("StreamCommit.take", ValueError, "board: worker 1 has not recorded slab 0")
def sc_take_unrecorded():
    c = _stream_commit()
    c.dispatched(0, 0, 1, [0, 1])
    c.take([(1, _core.PacketBatch([bytes(60)]))], 1)
@case("StreamCommit.take", ValueError, "outs: queue 0: a slab came back with none in flight")
def sc_take_none_in_flight():
    words = np.zeros(20, np.uint64)
    words[0] = 1
    _core.StreamCommit(2, words, 10, 2, 4, 0).take([(0, _core.PacketBatch([bytes(60)]))], 1)
@case("StreamCommit.take", TypeError, r"outs: each item must be a \(queue, PacketBatch\) pair")
def sc_take_not_a_batch(): _stream_commit().take([(0, "x")], 1)
@case("StreamCommit.cut_records", TypeError, "incompatible function arguments")
def sc_cut_not_state(): _stream_commit().cut_records(None)
@case("StreamCommit.acknowledged", TypeError, "incompatible function arguments")
def sc_acknowledged_negative(): _stream_commit().acknowledged(-1, 0)
@case("StreamCommit.in_flight", ValueError, "queue: 2 is not below 2")
def sc_in_flight_range(): _stream_commit().in_flight(2)
@case("StreamCommit.busy_since_ns", ValueError, "queue: 7 is not below 2")
def sc_busy_range(): _stream_commit().busy_since_ns(7)
@case("SharedState.log_range", ValueError, "thread: worker 9 has no determinant log")
def ss_log_range_none(): state_ctx()[0].log_range(9)
@case("SharedBuffer.restore", ValueError, "snapshot truncated")
def sb_restore_bad():
    b = state_ctx()[0].buffer("b", 8)
    b.restore(b"nonsense")
@case("SharedBuffer.__init__", TypeError, "No constructor defined")
def sb_init(): _core.SharedBuffer()
@case("SharedState.counters", ValueError, r"slots: must be in \[1, 2\^31\]")
def ss_counters_zero(): state_ctx()[0].counters("a", 0)
@case("SharedState.counters", ValueError, "name: a shared variable named 'a' already exists")
def ss_counters_twice():
    s, _ = state_ctx()
    s.counters("a", 4)
    s.registers("a", 4)
@case("SharedState.token_buckets", ValueError, "rate_per_s: must be in")
def ss_tb_nan(): state_ctx()[0].token_buckets("t", 4, float("nan"), 1)
@case("SharedState.token_buckets", ValueError, "burst: must be in")
def ss_tb_burst(): state_ctx()[0].token_buckets("t", 4, 100, 0)
@case("SharedState.port_pool", ValueError, "hi: must be >= lo")
def ss_pp_reversed(): state_ctx()[0].port_pool("p", 100, 50)
@case("SharedState.port_pool", ValueError, "lo: port 0 is reserved")
def ss_pp_zero(): state_ctx()[0].port_pool("p", 0, 10)
@case("SharedState.port_pool", ValueError, "subpool_of: needs one entry per port")
def ss_pp_subpools(): state_ctx()[0].port_pool("p", 100, 103, np.array([0, 1], U16))
@case("SharedState.registers", ValueError, "slots: must be in")
def ss_registers_zero(): state_ctx()[0].registers("r", 0)
@case("SharedState.context", ValueError, "thread: must be < 1024")
def ss_context_big(): SharedState().context(65535)
@case("SharedState.restore", ValueError, "snapshot is of kind 'flow_table', expected 'shared_state'")
def ss_restore_flow(): SharedState().restore(FlowTable(4).snapshot())
@case("SharedState.restore", ValueError, "counters 'a': snapshot has 4 slots, this object has 8")
def ss_restore_mismatch():
    s, _ = state_ctx()
    s.counters("a", 4)
    s2 = SharedState()
    s2.counters("a", 8)
    s2.restore(s.snapshot())
@case("Counters.add", ValueError, r"keys: key 4 out of range \[0, 4\)")
def ctr_add_range():
    x, c = _ctr()
    x.add(c, np.array([4], U64), np.ones(1, np.int64), pids(1))
@case("Counters.add", ValueError, "deltas: length must equal keys")
def ctr_add_mismatch():
    x, c = _ctr()
    x.add(c, np.array([0, 1], U64), np.ones(1, np.int64), pids(2))
@case("Counters.add", ValueError, "keys: 2\\^64-1 is reserved")
def ctr_add_reserved():
    x, c = _ctr(keyed=True)
    x.add(c, np.array([2**64 - 1], U64), np.ones(1, np.int64), pids(1))
@case("Counters.read", TypeError, "packet_ids.*uint64.*int64")
def ctr_read_int64():
    x, c = _ctr()
    x.read(c, np.array([0], U64), np.array([0]))
@case("Counters.get", ValueError, "key: out of range")
def ctr_get_range(): _ctr()[0].get(100)
@case("Counters.restore", ValueError, "snapshot is of kind 'registers', expected 'counters'")
def ctr_restore_other():
    s, _ = state_ctx()
    s.counters("a", 4).restore(s.registers("r", 4).snapshot())
@case("TokenBuckets.consume", ValueError, r"buckets: bucket 9 out of range \[0, 4\)")
def tb_consume_range():
    s, c = state_ctx()
    s.token_buckets("t", 4, 100, 1).consume(c, np.array([9], U64), np.zeros(1, U64), pids(1))
@case("TokenBuckets.consume", ValueError, "costs: length must equal buckets")
def tb_consume_costs():
    s, c = state_ctx()
    s.token_buckets("t", 4, 100, 1).consume(c, np.array([0], U64), np.zeros(1, U64), pids(1), np.ones(3, U32))
@case("TokenBuckets.tokens", ValueError, "bucket: out of range")
def tb_tokens_range(): state_ctx()[0].token_buckets("t", 4, 100, 1).tokens(99, 0)
@case("TokenBuckets.restore", ValueError, "snapshot truncated")
def tb_restore_truncated():
    t = state_ctx()[0].token_buckets("t", 4, 100, 1)
    t.restore(t.snapshot()[:-1])
@case("PortPool.allocate", ValueError, "subpool: sub-pool 5 does not exist")
def pp_allocate_subpool():
    s, c = state_ctx()
    s.port_pool("p", 100, 103, np.array([0, 1, 0, 1], U16)).allocate(c, pids(1), np.array([5], U16))
@case("PortPool.release", ValueError, r"ports: port 7 is outside the pool \[100, 103\]")
def pp_release_outside():
    s, c = state_ctx()
    s.port_pool("p", 100, 103).release(c, np.array([7], U16), pids(1))
@case("PortPool.free_count", ValueError, "subpool: does not exist")
def pp_free_count(): state_ctx()[0].port_pool("p", 100, 101).free_count(9)
@case("PortPool.is_allocated", ValueError, "port: outside the pool")
def pp_is_allocated(): state_ctx()[0].port_pool("p", 100, 101).is_allocated(5)
@case("PortPool.restore", ValueError, "snapshot is of kind 'counters'")
def pp_restore_other():
    s, _ = state_ctx()
    s.port_pool("p", 100, 101).restore(s.counters("c", 2).snapshot())
@case("Registers.load", ValueError, r"slots: slot 4 out of range \[0, 4\)")
def reg_load_range():
    s, c = state_ctx()
    s.registers("r", 4).load(c, np.array([4], U64), pids(1))
@case("Registers.store", TypeError, "values.*uint32.*int64")
def reg_store_int64():
    s, c = state_ctx()
    s.registers("r", 4).store(c, np.array([0], U64), np.array([1]), pids(1))
@case("Registers.exchange", ValueError, "values: length must equal slots")
def reg_exchange_mismatch():
    s, c = state_ctx()
    s.registers("r", 4).exchange(c, np.array([0], U64), np.zeros(2, U32), pids(1))
@case("Registers.fetch_add", ValueError, "packet_ids: length must equal slots")
def reg_fetch_add_mismatch():
    s, c = state_ctx()
    s.registers("r", 4).fetch_add(c, np.array([0], U64), np.zeros(1, U32), pids(2))
@case("Registers.compare_exchange", ValueError, "desired: length must equal slots")
def reg_cas_mismatch():
    s, c = state_ctx()
    s.registers("r", 4).compare_exchange(c, np.array([0], U64), np.zeros(1, U32), np.zeros(2, U32), pids(1))
@case("Registers.get", ValueError, "slot: out of range")
def reg_get(): state_ctx()[0].registers("r", 4).get(4)
@case("Registers.version", ValueError, "slot: out of range")
def reg_version(): state_ctx()[0].registers("r", 4).version(4)
@case("Registers.restore", TypeError, "incompatible function arguments")
def reg_restore_str(): state_ctx()[0].registers("r", 4).restore("x")
@case("Context.now_ns", TypeError, "packet_ids.*uint64.*int64")
def ctx_now_int64(): state_ctx()[1].now_ns(np.zeros(2, np.int64))
@case("Context.random_u64", TypeError, "packet_ids: expected a 1-D")
def ctx_random_2d(): state_ctx()[1].random_u64(np.zeros((2, 2), U64))
@case("Context.reset_log", TypeError, "incompatible function arguments")
def ctx_reset_negative(): state_ctx()[1].reset_log(-1)
@case("parse_log_chunks", DivergenceError, "bad magic")
def log_garbage(): _core.parse_log_chunks(b"garbage" * 10)
@case("parse_log_chunks", DivergenceError, "CRC32C mismatch")
def log_flipped():
    x, c = _ctr()
    x.add(c, np.array([0, 1], U64), np.ones(2, np.int64), pids(2))
    ch = bytearray(c.drain_chunk())
    ch[-3] ^= 1
    _core.parse_log_chunks(bytes(ch))
@case("parse_log_chunks", DivergenceError, "truncated")
def log_truncated():
    x, c = _ctr()
    x.add(c, np.array([0, 1], U64), np.ones(2, np.int64), pids(2))
    _core.parse_log_chunks(c.drain_chunk()[:-1])
@case("encode_log_chunk", TypeError, "records: expected a C-contiguous 1-D array of determinant_dtype")
def log_encode_wrong(): _core.encode_log_chunk(0, 0, np.zeros(2, U64))
@case("OutputCommit.__init__", ValueError, r"threads: must be in \[1, 4096\]")
def oc_no_threads(): OutputCommit(0)
@case("OutputCommit.__init__", ValueError, "queues: must be in")
def oc_no_queues(): OutputCommit(1, 0)
@case("OutputCommit.tag", ValueError, "queue: out of range")
def oc_tag_queue(): OutputCommit(1, 1).tag(5, pids(1), np.zeros(1, U64))
@case("OutputCommit.tag", ValueError, "positions: 3 entries, but only 2 threads")
def oc_tag_positions(): OutputCommit(2, 1).tag(0, pids(1), np.zeros(3, U64))
@case("OutputCommit.ack", ValueError, "thread: out of range")
def oc_ack_thread(): OutputCommit(2, 1).ack(9, 1)
@case("OutputCommit.ack_range", ValueError, "count: first \\+ count overflows")
def oc_ack_range_overflow(): OutputCommit(1, 1).ack_range(0, 2**64 - 1, 5)  # regression: wrapped silently
@case("OutputCommit.acked", ValueError, "thread: out of range")
def oc_acked(): OutputCommit(1, 1).acked(3)
@case("OutputCommit.release", ValueError, "queue: out of range")
def oc_release(): OutputCommit(1, 1).release(3)
@case("OutputCommit.pending", ValueError, "queue: out of range")
def oc_pending(): OutputCommit(1, 1).pending(3)
@case("OutputCommit.release_count", ValueError, "queue: out of range")
def oc_release_count(): OutputCommit(1, 1).release_count(3)
@case("Replayer.__init__", TypeError, "chunks: expected bytes or a list of bytes")
def rp_chunks_str(): Replayer(SharedState(), "abc")
@case("Replayer.__init__", TypeError, "start_positions: expected a dict")
def rp_starts_negative(): Replayer(SharedState(), [], {0: -1})  # regression: was a RuntimeError cast failure
@case("Replayer.finish", ValueError, "replayer: already finished")
def rp_double_finish():
    r = Replayer(SharedState(), [])
    r.finish()
    r.finish()
@case("Replayer.context", TypeError, "incompatible function arguments")
def rp_context_negative(): Replayer(SharedState(), []).context(-1)
@case("Replayer.finish", DivergenceError, "the log holds 3 record")
def rp_garbage_records():
    r = np.zeros(3, DETERMINANT_DTYPE)
    r["object"] = 999
    r["op"] = 77
    Replayer(SharedState(), [_core.encode_log_chunk(0, 0, r)]).finish()

# ---- runtime (shared-memory slab rings)
def _ring() -> Any:
    import mmap

    return _core.SlabRing(mmap.mmap(-1, 1 << 20), create=True, slots=2, slab_bytes=1 << 18, max_packets=64)


@case("SlabRing.__init__", ValueError, "slots: must be a power of two")
def ring_bad_slots(): _core.SlabRing(__import__("mmap").mmap(-1, 1 << 20), create=True, slots=3)
@case("SlabRing.__init__", ValueError, "not a vnfkit ring")
def ring_attach_junk(): _core.SlabRing(__import__("mmap").mmap(-1, 1 << 16), create=False)
@case("SlabRing.__init__", BufferError, "not writable")
def ring_readonly(): _core.SlabRing(b"\0" * 65536, create=True)
@case("SlabRing.required_bytes", ValueError, "slab_bytes")
def ring_required_bad(): _core.SlabRing.required_bytes(2, 100)
@case("SlabRing.append", TypeError, "indices.*uint32")
def ring_append_dtype(): _ring().append(_core.PacketBatch([b"x" * 60]), np.zeros(1, np.int64), 0, 1)
@case("SlabRing.append", IndexError, "indices: entry 0 out of range")
def ring_append_range(): _ring().append(_core.PacketBatch([b"x" * 60]), np.array([5], np.uint32), 0, 1)
@case("SlabRing.append", ValueError, "start, stop")
def ring_append_stop(): _ring().append(_core.PacketBatch([b"x" * 60]), np.zeros(1, np.uint32), 0, 2)
@case("SlabRing.append", ValueError, "arrival: needs one entry")
def ring_append_arrival(): _ring().append(_core.PacketBatch([b"x" * 60]), np.zeros(1, np.uint32), 0, 1, 0, np.zeros(3, np.uint64))
@case("SlabRing.commit", ValueError, "no open slab")
def ring_commit_full():
    r = _ring()
    r.commit()
    r.commit()
    r.commit()
@case("SlabRing.output", ValueError, "no output ready")
def ring_output_none(): _ring().output()
@case("SlabRing.output_arrival", ValueError, "no output ready")
def ring_arrival_none(): _ring().output_arrival()
@case("SlabRing.release", ValueError, "no output ready")
def ring_release_none(): _ring().release()
@case("SlabRing.input", ValueError, "no input ready")
def ring_input_none(): _ring().input()
@case("SlabRing.complete", ValueError, "no input in progress")
def ring_complete_none(): _ring().complete(_core.PacketBatch([b"x" * 60]))
@case("SlabRing.wait_input", ValueError, "timeout")
def ring_wait_input_bad(): _ring().wait_input(-1.0)
@case("SlabRing.wait_output", ValueError, "timeout")
def ring_wait_output_bad(): _ring().wait_output(float("nan"))



def _lines(n: int = 2) -> Any:
    import mmap

    return _core.LifeLines(mmap.mmap(-1, 4096), create=True, lines=n)


@case("LifeLines.__init__", ValueError, "lines: must be in")
def life_zero(): _core.LifeLines(__import__("mmap").mmap(-1, 4096), create=True, lines=0)
@case("LifeLines.__init__", ValueError, "too small for the lines")
def life_small(): _core.LifeLines(__import__("mmap").mmap(-1, 4096), create=True, lines=65)
@case("LifeLines.__init__", ValueError, "bad magic")
def life_attach_junk(): _core.LifeLines(__import__("mmap").mmap(-1, 4096), create=False)
@case("LifeLines.__init__", ValueError, "lines: given only with create=True")
def life_attach_count(): _core.LifeLines(__import__("mmap").mmap(-1, 4096), create=False, lines=2)
@case("LifeLines.__init__", BufferError, "not writable")
def life_readonly(): _core.LifeLines(b"\0" * 4096, create=True, lines=1)
@case("LifeLines.required_bytes", ValueError, "lines: must be in")
def life_required_huge(): _core.LifeLines.required_bytes(1 << 20)
@case("LifeLines.hold", IndexError, "line: 2 out of range")
def life_hold_range(): _lines().hold(2)
@case("LifeLines.let_go", ValueError, "not held by this process")
def life_let_go_unheld(): _lines().let_go(0)
@case("LifeLines.state", IndexError, "line: 5 out of range")
def life_state_range(): _lines().state(5)
@case("LifeLines.died_ns", IndexError, "line: 2 out of range")
def life_died_range(): _lines().died_ns(2)
@case("LifeLines.holder_pid", TypeError, "incompatible function arguments")
def life_pid_type(): _lines().holder_pid("0")
@case("DeathWatch.__init__", TypeError, "LifeLines")
def watch_not_lines(): _core.DeathWatch(object())


def _closed_watch() -> Any:
    w = _core.DeathWatch(_lines(1))
    w.close()
    return w


@case("DeathWatch.fileno", ValueError, "DeathWatch is closed")
def watch_fileno_closed(): _closed_watch().fileno()

def _disp() -> Any:
    from vnfkit.classify import MultiQueueClassifier

    return _core.Dispatcher([_ring()], MultiQueueClassifier(1), batch_size=64, flush_us=50)


@case("Dispatcher.__init__", TypeError, "rings: every entry must be a SlabRing")
def disp_bad_rings(): _core.Dispatcher([object()], _core.MultiQueueClassifier(1), batch_size=8, flush_us=50)
@case("Dispatcher.__init__", ValueError, "batch_size: 65 exceeds")
def disp_big_batch(): _core.Dispatcher([_ring()], _core.MultiQueueClassifier(1), batch_size=65, flush_us=50)
@case("Dispatcher.dispatch", TypeError, "batch: must be a PacketBatch")
def disp_not_batch(): _disp().dispatch(b"x", 0, 0.01)
@case("Dispatcher.dispatch", ValueError, "raise slab_bytes")
def disp_huge_packet(): _disp().dispatch(_core.PacketBatch([b"x" * 300_000]), 0, 0.01)
@case("Dispatcher.resume", ValueError, "timeout")
def disp_resume_bad(): _disp().resume(-1.0)
@case("Dispatcher.drain", ValueError, "timeout")
def disp_drain_bad(): _disp().drain(float("nan"))
@case("Dispatcher.pace", ValueError, "timeout")
def disp_pace_bad(): _disp().pace(-1.0)
@case("Dispatcher.begin_paced", ValueError, "period_ns: must be > 0")
def disp_paced_period(): _disp().begin_paced(_core.PacketBatch([b"x" * 60]), 0, 0.0, 8)
@case("Dispatcher.counters", IndexError, "queue: out of range")
def disp_counters_range(): _disp().counters(1)


# ---- nfs (gateway primitives)
REC = np.dtype([("deadline", U64), ("timeout", U64), ("other", U32)])


def records(n: int = 4) -> np.ndarray:
    return np.zeros(n, REC)


S0, T5 = np.array([0], U32), np.array([5], U64)
@case("split_gateway", TypeError, "incompatible function arguments")
def split_not_a_batch(): _core.split_gateway(np.zeros(4, U8), 0x0A000000, 0xFF000000, 1)
@case("split_gateway", TypeError, "incompatible function arguments")
def split_negative_net(): _core.split_gateway(parsed(), -1, 0xFF000000, 1)
@case("split_gateway", TypeError, "incompatible function arguments")
def split_port_too_big(): _core.split_gateway(parsed(), 0x0A000000, 0xFF000000, 1, out_port=65536)
def nat_args(**over: Any) -> dict[str, Any]:
    out, inb = _core.FlowTable(8, 32), _core.FlowTable(8, 4)
    a: dict[str, Any] = dict(batch=parsed(), out=out, inb=inb, oidx=np.array([0], U32), iidx=np.zeros(0, U32),
                             public_addr=1, close_timeout=1, fwd_rev=None, fwd_in=None, mark=np.zeros(8, U8),
                             out_idx=np.zeros(4, U32), out_slot=np.zeros(4, U32), out_new=np.zeros(4, U8),
                             in_idx=np.zeros(4, U32))
    a.update(over)
    return a
@case("nat_expired", ValueError, "out: values must be 32-byte NAT records, got 8 bytes")
def nat_expired_wrong_record(): _core.nat_expired(_core.FlowTable(8, 8), 5)
@case("nat_expired", TypeError, "incompatible function arguments")
def nat_expired_negative_now(): _core.nat_expired(_core.FlowTable(8, 32), -1)
@case("nat_fast_path", ValueError, "out: values must be 32-byte NAT records, got 8 bytes")
def nat_fast_wrong_record(): _core.nat_fast_path(**nat_args(out=_core.FlowTable(8, 8)))
@case("nat_fast_path", ValueError, "in: values must be uint32 slots")
def nat_fast_wrong_reply_value(): _core.nat_fast_path(**nat_args(inb=_core.FlowTable(8, 8)))
@case("nat_fast_path", ValueError, r"oidx: 99 is out of range")
def nat_fast_row_out_of_range(): _core.nat_fast_path(**nat_args(oidx=np.array([99], U32)))
@case("nat_fast_path", ValueError, "mark: needs at least 8 entries")
def nat_fast_short_mark(): _core.nat_fast_path(**nat_args(mark=np.zeros(2, U8)))
@case("nat_fast_path", ValueError, "out_idx: needs at least 1 entries")
def nat_fast_short_buffer(): _core.nat_fast_path(**nat_args(out_idx=np.zeros(0, U32)))
@case("nat_fast_path", TypeError, "oidx.*uint32.*int64")
def nat_fast_oidx_int64(): _core.nat_fast_path(**nat_args(oidx=np.array([0])))
@case("nat_fast_path", ValueError, "fwd_in: needs 65536 entries")
def nat_fast_short_flags(): _core.nat_fast_path(**nat_args(fwd_in=np.zeros(10, U8)))
def nat_object(**over: Any) -> Any:
    a: dict[str, Any] = dict(out=_core.FlowTable(8, 32), inb=_core.FlowTable(8, 4), inside_net=0, inside_mask=0,
                             public_addr=1, out_port=1, in_port=2, close_timeout=1, mark=np.zeros(8, U8),
                             out_idx=np.zeros(4, U32), out_slot=np.zeros(4, U32), out_new=np.zeros(4, U8),
                             in_idx=np.zeros(4, U32))
    a.update(over)
    return _core.NatFastPath(**a)
@case("NatFastPath.__init__", ValueError, "inb: values must be uint32 slots, got 8 bytes")
def nat_object_wrong_reply_value(): nat_object(inb=_core.FlowTable(8, 8))
@case("NatFastPath.__init__", ValueError, "mark: needs exactly 8 entries, has 2")
def nat_object_short_mark(): nat_object(mark=np.zeros(2, U8))
@case("NatFastPath.__init__", TypeError, "out_idx.*uint32.*int64")
def nat_object_buffer_int64(): nat_object(out_idx=np.zeros(4, np.int64))
@case("NatFastPath.run", ValueError, "batch: 5 packets, more than the buffers' 4")
def nat_object_batch_too_big(): nat_object().run(parsed(FRAMES + FRAMES[:1]), None, None, 0)
@case("NatFastPath.run", ValueError, "fwd_rev: needs 65536 entries")
def nat_object_short_flags(): nat_object().run(parsed(), np.zeros(3, U8), None, 0)
@case("NatFastPath.run", TypeError, "incompatible function arguments")
def nat_object_negative_gc(): nat_object().run(parsed(), None, None, -1)
@case("touch_deadlines", TypeError, "records: expected a writable C-contiguous 1-D array")
def touch_records_strided(): _core.touch_deadlines(records(8)[::2], 0, 8, S0, T5)
@case("touch_deadlines", TypeError, "records: expected a writable C-contiguous 1-D array")
def touch_records_2d(): _core.touch_deadlines(np.zeros((2, 2), REC), 0, 8, S0, T5)
@case("touch_deadlines", TypeError, "records: expected a writable")
def touch_records_read_only():
    r = records()
    r.flags.writeable = False
    _core.touch_deadlines(r, 0, 8, S0, T5)
@case("touch_deadlines", TypeError, "records: dtype must not hold Python objects")
def touch_records_object():  # regression: raw uint64 writes over PyObject pointers
    _core.touch_deadlines(np.array([None] * 4, object), 0, 0, S0, T5)
@case("touch_deadlines", ValueError, "deadline_offset: a uint64 field at offset 18 does not fit in a 20-byte")
def touch_deadline_offset_past_record(): _core.touch_deadlines(records(), 18, 8, S0, T5)
@case("touch_deadlines", ValueError, "deadline_offset: .*does not fit")
def touch_deadline_offset_wraps():  # regression: offset + 8 wrapped and passed the check
    _core.touch_deadlines(records(), 2**64 - 1, 8, S0, T5)
@case("touch_deadlines", ValueError, "timeout_offset: .*does not fit in a 8-byte")
def touch_records_too_small(): _core.touch_deadlines(np.zeros(4, U64), 0, 8, S0, T5)
@case("touch_deadlines", TypeError, "incompatible function arguments")
def touch_negative_offset(): _core.touch_deadlines(records(), -8, 8, S0, T5)
@case("touch_deadlines", ValueError, r"slots: 4 is out of range \(4 records\)")
def touch_slot_out_of_range(): _core.touch_deadlines(records(), 0, 8, np.array([0, 4], U32), np.array([5, 5], U64))
@case("touch_deadlines", ValueError, "slots: 0 is out of range")
def touch_empty_records(): _core.touch_deadlines(records(0), 0, 8, S0, T5)
@case("touch_deadlines", TypeError, "slots.*uint32.*int64")
def touch_slots_int64(): _core.touch_deadlines(records(), 0, 8, np.array([0]), T5)
@case("touch_deadlines", TypeError, "ts: array must be C-contiguous")
def touch_ts_strided(): _core.touch_deadlines(records(), 0, 8, np.zeros(2, U32), np.zeros(4, U64)[::2])
@case("touch_deadlines", ValueError, "ts: length differs from slots")
def touch_ts_length(): _core.touch_deadlines(records(), 0, 8, S0, np.zeros(2, U64))
@case("touch_deadlines", TypeError, "flags.*uint8.*int64")
def touch_flags_int64(): _core.touch_deadlines(records(), 0, 8, S0, T5, np.array([1]))
@case("touch_deadlines", ValueError, "flags: length differs from slots")
def touch_flags_length(): _core.touch_deadlines(records(), 0, 8, S0, T5, np.zeros(3, U8))
@case("touch_deadlines_at", TypeError, "records: expected a writable C-contiguous 1-D array")
def touch_at_records_strided(): _core.touch_deadlines_at(records(8)[::2], 0, 8, S0, parsed(), S0)
@case("touch_deadlines_at", TypeError, "records: dtype must not hold Python objects")
def touch_at_records_object(): _core.touch_deadlines_at(np.array([None] * 4, object), 0, 0, S0, parsed(), S0)
@case("touch_deadlines_at", ValueError, "timeout_offset: .*does not fit")
def touch_at_timeout_offset_wraps():  # regression: offset + 8 wrapped and passed the check
    _core.touch_deadlines_at(records(), 0, 2**64 - 4, S0, parsed(), S0)
@case("touch_deadlines_at", ValueError, "deadline_offset: .*does not fit in a 16-byte")
def touch_at_records_too_small():
    _core.touch_deadlines_at(np.zeros(4, [("a", U64), ("b", U64)]), 16, 0, S0, parsed(), S0)
@case("touch_deadlines_at", ValueError, r"indices: 4 is out of range \(4 packets\)")
def touch_at_index_out_of_range(): _core.touch_deadlines_at(records(), 0, 8, S0, parsed(), np.array([4], U32))
@case("touch_deadlines_at", ValueError, r"indices: 0 is out of range \(0 packets\)")
def touch_at_empty_batch(): _core.touch_deadlines_at(records(), 0, 8, S0, _core.PacketBatch([]), S0)
@case("touch_deadlines_at", ValueError, "slots: 9 is out of range")
def touch_at_slot_out_of_range(): _core.touch_deadlines_at(records(), 0, 8, np.array([9], U32), parsed(), S0)
@case("touch_deadlines_at", TypeError, "indices.*uint32.*int64")
def touch_at_indices_int64(): _core.touch_deadlines_at(records(), 0, 8, S0, parsed(), np.array([0]))
@case("touch_deadlines_at", TypeError, "slots: array must be C-contiguous")
def touch_at_slots_strided():
    _core.touch_deadlines_at(records(), 0, 8, np.zeros(4, U32)[::2], parsed(), np.zeros(2, U32))
@case("touch_deadlines_at", ValueError, "indices: length differs from slots")
def touch_at_indices_length(): _core.touch_deadlines_at(records(), 0, 8, S0, parsed(), np.zeros(2, U32))
@case("touch_deadlines_at", TypeError, "incompatible function arguments")
def touch_at_not_a_batch(): _core.touch_deadlines_at(records(), 0, 8, S0, np.zeros(4, U8), S0)


@pytest.mark.parametrize("case_", CASES, ids=[c[0] for c in CASES])
def test_hostile_call_raises_clear_error(case_: Case) -> None:
    _, _, call, exc, match = case_
    with pytest.raises(exc, match=match) as info:
        call()
    # Bridge errors never leak as a bare RuntimeError / SystemError / OverflowError.
    assert type(info.value) not in (RuntimeError, SystemError, OverflowError)


def test_every_public_core_callable_has_a_hostile_case() -> None:
    covered = {c[1] for c in CASES} | NO_ARGUMENTS
    missing = sorted(public_core_callables() - covered)
    assert not missing, f"public _core callables without a robustness case: {missing}"
    stale = sorted({c[1] for c in CASES} - public_core_callables())
    assert not stale, f"cases naming callables that do not exist: {stale}"


# ------------------------------------------------------------------------------------------ acceptable input


def test_empty_inputs_are_fine_everywhere() -> None:
    b = _core.PacketBatch([])
    assert (len(b), b.parse(), len(b.verify_checksums()), b.drop_counts(), b.to_list()) == (0, 0, 0, {}, [])
    b.fix_checksums()
    assert len(b.select(np.zeros(0, U32))) == 0
    assert b.rewrite_source(np.zeros(0, U32), np.zeros(0, U32), np.zeros(0, U16)) == 0
    assert [len(q) for q in MultiQueueClassifier(3).classify(b)] == [0, 0, 0]
    t = FlowTable(4)
    slots, new = t.lookup_or_insert(np.zeros(0, KD))
    assert len(slots) == len(new) == 0 and len(t) == 0
    assert len(ExceptionTable(2).insert(np.zeros(0, KD), np.zeros(0, U32))) == 0
    assert len(steer(np.zeros(0, KD), np.zeros(0, U32), ranges=RangeTable([]))) == 0
    assert _core.parse_log_chunks(b"") == []
    x, c = _ctr()
    assert len(x.add(c, np.zeros(0, U64), np.zeros(0, np.int64), pids(0))) == 0


def test_empty_and_runt_packets_are_dropped_with_a_reason() -> None:
    b = _core.PacketBatch([b"", b"\x00", FRAMES[0][:20]])
    assert b.parse() == 3
    assert b.drop_counts() == {"truncated": 3}
    assert b.verify_checksums().tolist() == [False] * 3
    assert b.port.tolist() == [0, 0, 0]


def test_full_tables_degrade_gracefully_and_say_so_in_stats() -> None:
    t = FlowTable(2)
    slots, new = t.lookup_or_insert(keys(4))
    assert slots.tolist()[2:] == [vnfkit.tables.NO_SLOT] * 2 and new.tolist() == [True, True, False, False]
    assert t.stats()["failed_inserts"] == 2 and len(t) == 2
    e = ExceptionTable(2)
    assert e.insert(keys(4), np.arange(4, dtype=U32), strict=False).tolist() == [True, True, False, False]
    assert e.stats()["failed_inserts"] == 2
    s, c = state_ctx()
    k = s.counters("k", 4, keyed=True)
    out = k.add(c, np.arange(6, dtype=U64), np.ones(6, np.int64), pids(6))
    assert out.tolist()[4:] == [vnfkit.state.COUNTER_FULL] * 2 and k.full_events == 2
    p = s.port_pool("p", 100, 101)
    assert p.allocate(c, pids(3)).tolist() == [100, 101, 0] and p.exhausted_events == 1


def test_drop_column_garbage_is_counted_as_other() -> None:
    b = parsed()
    b.drop[:] = 250
    assert b.drop_counts() == {"other": 4}


# ------------------------------------------------------------------------------------------ regressions


def test_offsets_view_is_read_only_and_engine_calls_stay_safe() -> None:
    b = parsed()
    with pytest.raises(ValueError, match="read-only"):
        b.offsets[:] = 0
    with pytest.raises(ValueError, match="WRITEABLE"):
        b.offsets.flags.writeable = True
    assert b.offsets.tolist() == [0, *np.cumsum([len(f) for f in FRAMES]).tolist()]
    assert b.to_list() == FRAMES


def test_flow_table_entries_view_is_read_only_but_values_stay_writable() -> None:
    t = FlowTable(4)
    slots, _ = t.lookup_or_insert(keys(2))
    t.values[slots] = 7  # documented: the value records are the writable state
    assert t.to_numpy()["value"].tolist() == [7, 7]
    with pytest.raises(ValueError, match="read-only"):
        t._t.entries_raw()[:] = 0xFF
    assert len(t) == 2 and t.lookup(keys(2)).tolist() == slots.tolist()


def test_qos_dscp_ignores_l3_offsets_outside_the_packet() -> None:
    b = parsed()
    want = dscp_of(b)
    b.l3_offset[1] = 60000  # would index past the data (IndexError) or into the next packet
    b.l3_offset[0] = len(FRAMES[0]) - 1
    got = dscp_of(b)
    assert got[:2].tolist() == [0, 0] and got[2:].tolist() == want[2:].tolist()


def test_flow_table_timeouts_and_ints_validated_by_name() -> None:
    assert FlowTable(8, idle_timeout_s=1e9).idle_timeout_ns == 10**18  # large but finite is fine
    assert FlowTable(np.int64(8)).capacity == 8
    assert len(FlowTable(8).expire(np.uint64(2**64 - 1))) == 0


# ------------------------------------------------------------------------------------------ configs


VNF_BASES: dict[type, dict[str, Any]] = {
    SimpleNAT: {},
    Monitor: {},
    AdaptiveLB: {"vip": "10.0.0.100", "backends": ["10.0.1.1", "10.0.1.2"]},
    QoS: {},
}
VNF_FIELDS = {
    SimpleNAT: ["internal_prefix", "external_prefix", "unmatched", "internal_port", "external_port",
                "flow_capacity", "idle_timeout_s", "tcp_close_timeout_s"],
    Monitor: ["flow_capacity", "idle_timeout_s", "tcp_close_timeout_s", "ipv4_prefix_len", "ipv6_prefix_len",
              "prefix_slots", "out_port"],
    AdaptiveLB: ["vip", "vip_port", "proto", "backends", "reverse", "flow_capacity", "idle_timeout_s",
                 "tcp_close_timeout_s", "out_port"],
    QoS: ["classes", "unmatched", "out_port"],
}
HOSTILE_VALUES = [-1, 0, 2**70, float("nan"), float("inf"), "x", [], {}, object()]


def _setup(cls: type, **cfg: Any) -> tuple[Any, VnfContext]:
    v = cls()
    ctx = VnfContext(0, 1, shared=SharedState())
    v.setup(ctx, **cfg)
    return v, ctx


@pytest.mark.parametrize("cls", list(VNF_FIELDS), ids=lambda c: c.__name__)
def test_vnf_configs_reject_hostile_values_naming_the_field(cls: type) -> None:
    for field in VNF_FIELDS[cls]:
        for value in HOSTILE_VALUES:
            cfg = {**VNF_BASES[cls], field: value}
            try:
                _setup(cls, **cfg)
            except (TypeError, ValueError) as e:
                assert field in str(e), f"{cls.__name__}.{field}={value!r}: message {e!r} does not name it"
            else:
                # The only hostile value any field accepts: an empty QoS class list (forward everything).
                assert (cls, field, value) == (QoS, "classes", []), f"{cls.__name__}.{field}={value!r} accepted"
    with pytest.raises(TypeError, match="unknown config key"):
        _setup(cls, **VNF_BASES[cls], bogus=1)


def test_qos_class_fields_are_validated() -> None:
    bad = [({"name": "a", "rate_pps": -1}, "rate_pps"), ({"name": "a", "rate_bps": float("inf")}, "rate_bps"),
           ({"name": "a", "dscp": 64}, "dscp"), ({"name": "a", "sport": [[5, 1]]}, "sport"),
           ({"name": "a", "dport": 70000}, "dport"), ({"name": "a", "burst": 5}, "burst"),
           ({"name": "a", "rate_pps": 10, "burst": 2**40}, "burst"), ({"name": "a", "proto": "foo"}, "proto"),
           ({"name": ""}, "name"), ({"name": "a", "rate_pps": True}, "rate_pps")]
    for cls_cfg, field in bad:
        with pytest.raises((TypeError, ValueError), match=rf"classes\[0\]\.?{field}?"):
            _setup(QoS, classes=[cls_cfg])


@pytest.mark.parametrize("cls", list(VNF_FIELDS), ids=lambda c: c.__name__)
def test_vnfs_survive_tampered_columns(cls: type) -> None:
    cfg = {**VNF_BASES[cls]}
    if cls is AdaptiveLB:
        cfg["vip"] = "10.0.0.2"
    if cls is QoS:
        cfg["classes"] = [{"name": "ef", "dscp": [46], "rate_pps": 10}]
    for tamper in ("l3", "l4", "family", "drop"):
        v, ctx = _setup(cls, **cfg)
        b = parsed()
        if tamper == "l3":
            b.l3_offset[:] = 60000
        elif tamper == "l4":
            b.l4_offset[:] = 60000
            b.l4_len[:] = 65000
        elif tamper == "family":
            b.key["family"][:] = 7
        else:
            b.drop[:] = 200
        before = b.data.copy()
        v.process(b, ctx)
        if tamper == "drop":
            assert b.port.tolist() == [0] * 4
        if tamper in ("l3", "l4", "family"):
            assert b.data.tobytes() == before.tobytes()  # nothing rewritten through bogus offsets


# ------------------------------------------------------------------------------------------ fuzz


_COLUMNS = ["l3_offset", "l4_offset", "l4_len", "flags", "drop", "family", "proto", "tcp_flags", "data"]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.tuples(st.sampled_from(_COLUMNS), st.integers(0, 3), st.integers(0, 2**16 - 1)), max_size=12),
    st.lists(st.integers(0, 3), min_size=1, max_size=6),
)
def test_fuzz_tampered_columns_through_engine_calls(edits: list[tuple[str, int, int]], idx: list[int]) -> None:
    b = parsed()
    for col, i, v in edits:
        if col in ("family", "proto"):
            b.key[col][i] = v & 0xFF
        elif col == "data":
            start, end = int(b.offsets[i]), int(b.offsets[i + 1])
            b.data[start + v % (end - start)] = v & 0xFF
        else:
            arr = getattr(b, col)
            arr[i] = v & np.iinfo(arr.dtype).max
    frames_before = [bytes(p) for p in b.to_list()]
    ok = b.verify_checksums()
    assert ok.dtype == bool and len(ok) == 4
    b.fix_checksums()
    ii = np.array(idx, U32)
    done = b.rewrite_source(ii, np.full(len(ii), 0xC0000201, U32), np.full(len(ii), 4242, U16))
    assert 0 <= done <= len(ii)
    after = b.to_list()
    assert [len(p) for p in after] == [len(p) for p in frames_before]  # lengths never change
    queues = MultiQueueClassifier(3).classify(b)
    assert sorted(np.concatenate(queues).tolist()) == [0, 1, 2, 3]
    assert (b.queue < 3).all()
    t = FlowTable(2)
    slots, new = t.lookup_or_insert(b)
    assert ((slots < 2) | (slots == vnfkit.tables.NO_SLOT)).all() and len(t) <= 2
    assert steer(b, ranges=RangeTable([(0, 2**32 - 1, 5)])).tolist() == [5] * 4
    s = b.select(ii)
    s.validate()
    s.parse()  # the parser over whatever the tampering left in the bytes
    b.parse()
    assert set(b.drop_counts()) <= {_core.drop_reason_name(r) for r in range(1, 14)}


def test_huge_exception_table_capacity_is_not_allocated_up_front() -> None:
    # Regression: capacity (or a crafted snapshot's capacity) was reserved in full: ~170 GB here.
    e = ExceptionTable(2**32 - 17)
    assert e.stats()["memory_bytes"] < 64 << 20
    assert e.insert(keys(3), np.arange(3, dtype=U32)).all() and e.lookup(keys(3)).tolist() == [0, 1, 2]


def test_packets_helpers_reject_non_packets_naming_the_argument(tmp_path: Any) -> None:
    from vnfkit import packets

    with pytest.raises(TypeError, match=r"pkts\[1\]: expected a scapy packet or bytes, got int"):
        packets.from_scapy([FRAMES[0], 3])  # regression: bytes(3) silently became three zero bytes
    assert packets.from_scapy([FRAMES[0], bytearray(FRAMES[1])]).to_list() == FRAMES[:2]
    parsed().to_pcap(str(tmp_path / "t.pcap"))
    with pytest.raises(TypeError, match="chunk: expected an int, got str"):
        list(packets.iter_pcap(tmp_path / "t.pcap", "2"))  # regression: bare '<' TypeError
    with pytest.raises(ValueError, match="chunk: must be >= 1"):
        list(packets.iter_pcap(tmp_path / "t.pcap", 0))
    with pytest.raises(IsADirectoryError):
        list(packets.iter_pcap(tmp_path))
    (tmp_path / "g.pcap").write_bytes(b"\xd4\xc3\xb2\xa1" + b"\x00" * 30)
    from vnfkit.io import PcapSource

    src = PcapSource(tmp_path / "g.pcap")  # a cut-off first record: no packets, reported
    assert list(src) == [] and src.truncated_offset == 24 and src.truncated_bytes == 10
    assert len(packets.read_pcap(tmp_path / "g.pcap")) == 0
    with pytest.raises(TypeError, match="incompatible function arguments"):
        packets.write_pcap(tmp_path / "w.pcap", [None])


def test_tampered_counter_and_register_determinants_always_diverge() -> None:
    """Every single-field change of a counter.add / register.add determinant is detected on replay
    (packet id, object, op, slot and value); only nondeterministic inputs (clock, random) accept any
    logged value, by design."""
    def declare(s: SharedState) -> tuple[Any, Any]:
        return s.counters("a", 4), s.registers("r", 4)

    def run(a: Any, r: Any, ctx: Any) -> None:
        a.add(ctx, np.array([0, 1, 0], U64), np.array([1, 2, 3], np.int64), pids(3))
        r.fetch_add(ctx, np.array([2, 2], U64), np.array([5, 6], U32), pids(2) + 3)

    s = SharedState()
    a, r = declare(s)
    snap = s.snapshot()
    ctx = s.context(0)
    run(a, r, ctx)
    recs = _core.parse_log_chunks(ctx.drain_chunk())[0][2]
    assert len(recs) == 5
    for j in range(len(recs)):
        for field, bit in (("packet_id", 0), ("object", 0), ("op", 1), ("slot", 0), ("value", 0), ("value", 40)):
            bad = recs.copy()
            bad[field][j] ^= 1 << bit
            s2 = SharedState()
            a2, r2 = declare(s2)
            s2.restore(snap)
            rp = Replayer(s2, [_core.encode_log_chunk(0, 0, bad)])
            with pytest.raises(DivergenceError):
                run(a2, r2, rp.context(0))
                rp.finish()


def test_steer_wrapper_type_checks_its_tables() -> None:
    rt = RangeTable([(0, 2**32 - 1, 1)])
    with pytest.raises(TypeError, match="ranges: expected a RangeTable, got NoneType"):
        steer(keys(2), np.zeros(2, U32), ranges=None)  # regression: AttributeError '_t'
    with pytest.raises(TypeError, match="exceptions: expected ExceptionTable objects, got NoneType"):
        steer(keys(2), np.zeros(2, U32), ranges=rt, exceptions=[None])
    with pytest.raises(TypeError, match="keys: expected a PacketBatch or a numpy array"):
        steer([1, 2], np.zeros(2, U32), ranges=rt)
    e = ExceptionTable()
    e.insert(keys(1), 9)
    assert steer(keys(2), np.zeros(2, U32), ranges=rt, exceptions=[e]).tolist() == [9, 1]


def test_python_table_wrappers_name_the_bad_argument() -> None:
    with pytest.raises(TypeError, match="ranges: expected a sequence of .* got NoneType"):
        RangeTable(None)  # regression: "'NoneType' object is not iterable"
    with pytest.raises(TypeError, match=r"ranges: range 0 must be a \(lo, hi, target\) tuple"):
        RangeTable([(0, 1)])
    with pytest.raises(TypeError, match="ranges: range 1 hi must be a uint32 int, got 4294967296"):
        RangeTable().assign([(0, 9, 1), (10, 2**32, 2)])
    with pytest.raises(TypeError, match="targets: expected an int or a uint32 array, got float"):
        ExceptionTable().insert(keys(2), 1.5)  # regression: silently truncated to target 1
    with pytest.raises(TypeError, match="targets: expected an int or a uint32 array, got bool"):
        ExceptionTable().insert(keys(2), True)
    with pytest.raises(TypeError, match="value_dtype: data type 'garbage' not understood"):
        FlowTable(4, "garbage")
    with pytest.raises(ValueError, match=r"src: values must be in \[0, 4294967295\]"):
        make_keys(-1, 1)  # regression: numpy OverflowError without the argument name
    with pytest.raises(ValueError, match=r"sport: values must be in \[0, 65535\]"):
        make_keys(1, 2, sport=70000)
    with pytest.raises(TypeError, match="dst: expected integers"):
        make_keys(1, "10.0.0.1")
    k = make_keys(np.array([1, 2], np.uint64), 3, np.int8(5), 6, 17)
    assert k["sport"].tolist() == [5, 5] and k["proto"].tolist() == [17, 17]
    assert RangeTable([(np.uint32(0), 10, 1)]).ranges() == [(0, 10, 1)]


def test_pcap_reader_stays_failed_after_a_corrupt_record(tmp_path: Any) -> None:
    path = tmp_path / "c.pcap"
    parsed().to_pcap(str(path))
    data = bytearray(path.read_bytes())
    second = 24 + 16 + len(FRAMES[0])
    data[second + 8:second + 12] = b"\xff\xff\xff\x7f"
    path.write_bytes(bytes(data))
    r = _core.PcapReader(str(path))
    assert len(r.read(1)) == 1
    with pytest.raises(vnfkit.PcapError, match="caplen 2147483647") as first:
        r.read(8)
    for _ in range(2):  # regression: later reads decoded misaligned garbage as new records
        with pytest.raises(vnfkit.PcapError) as again:
            r.read(8)
        assert str(again.value) == str(first.value)
    assert r.packets_read == 1


def test_ip_bytes_is_bounded_by_the_frame_for_tampered_columns() -> None:
    from vnfkit.nfs import _mbox

    b = parsed()
    good = _mbox.ip_bytes(b)
    assert good.tolist() == [len(f) - 14 for f in FRAMES]  # untouched: the IP total length
    b.l3_offset[0] = 60000  # l3 past l4: would be a negative count (a wrapped uint64 counter)
    b.l4_len[1] = 65000  # would claim more bytes than the frame holds
    got = _mbox.ip_bytes(b)
    assert got[0] == 0 and got[1] == len(FRAMES[1]) and got[2:].tolist() == good[2:].tolist()


def test_gateway_primitives_on_unparsed_and_tampered_batches() -> None:
    """split_gateway on an unparsed batch puts every packet in not_v4; with garbage in the key /
    drop / flags columns it still partitions the non-dropped packets and never leaves the batch."""
    b = _core.PacketBatch(FRAMES)
    src, dst, o, i, other, nv4, onp, inp = _core.split_gateway(b, 0x0A000000, 0xFF000000, 0xC0000201, 1, 2, True)
    assert list(nv4) == [0, 1, 2, 3] and len(o) == len(i) == len(other) == len(onp) == len(inp) == 0
    assert not src.any() and not dst.any() and not b.port.any()
    rng = np.random.default_rng(7)
    for _ in range(20):
        b = parsed()
        raw = b.key.view(U8).reshape(len(b), -1)
        raw[:] = rng.integers(0, 256, raw.shape, dtype=U8)
        b.key["family"] = rng.choice([0, 4, 6, 255], len(b))
        b.drop[:] = rng.integers(0, 3, len(b), dtype=b.drop.dtype)
        b.flags[:] = rng.integers(0, 2**16, len(b)).astype(b.flags.dtype)
        out = _core.split_gateway(b, 0x0A000000, 0xFF000000, 0xC0000201, 1, 2, bool(rng.integers(2)))
        lists = np.concatenate(out[2:])
        assert sorted(lists.tolist()) == [j for j in range(len(b)) if b.drop[j] == 0]
    # An unparsed batch drives touch_deadlines_at from its ts_ns / tcp_flags columns alone.
    r = records()
    r["timeout"] = 10
    ub = _core.PacketBatch(FRAMES[:2], ts_ns=np.array([100, 205], U64))
    exp, k = _core.touch_deadlines_at(r, 0, 8, np.array([1, 1, 1], U32), ub, np.array([0, 0, 1], U32))
    assert (exp.tolist(), k, int(r["deadline"][1])) == ([False, False, True], 1, 215)
    # Failed calls leave the records untouched (validation happens before the loop).
    before = r.tobytes()
    bad_calls: list[Callable[[], Any]] = [
        lambda: _core.touch_deadlines(r, 0, 8, np.array([0, 4], U32), np.array([5, 5], U64)),
        lambda: _core.touch_deadlines(r, 2**64 - 1, 8, S0, T5),
        lambda: _core.touch_deadlines_at(r, 0, 8, np.array([0, 1], U32), ub, np.array([0, 2], U32)),
        lambda: _core.touch_deadlines_at(r, 0, 2**64 - 4, S0, ub, S0),
    ]
    for bad in bad_calls:
        with pytest.raises(ValueError):
            bad()
    assert r.tobytes() == before
