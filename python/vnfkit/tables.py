"""Flow tables: range and exception tables for steering, and per-flow state.

Three tables, all backed by the C++ engine, all batch-oriented (one call handles a whole
:class:`vnfkit.PacketBatch` or an array of keys), all snapshot-able:

* :class:`RangeTable` -- non-overlapping inclusive ranges of the 32-bit flow-ID space, each mapped
  to a target id. Migration avoidance splits and merges them as it scales out and in.
* :class:`ExceptionTable` -- exact-match flow key -> target id, with an optional hard capacity
  (a hardware switch holds 2 048 entries; a software switch is unbounded).
* :class:`FlowTable` -- per-flow state records of a numpy structured dtype chosen by the VNF,
  with idle and TCP-close expiry on packet time.

Threads:

* **RangeTable and ExceptionTable are safe under concurrent readers and writers.** Lookups,
  :func:`steer`, ``find``, ``ranges``, ``keys``/``targets``/``items``/``to_numpy``, ``stats``,
  ``len`` and ``snapshot`` may run on any number of threads while another thread updates the table
  (``insert`` / ``remove`` / ``clear`` / ``assign`` / ``split`` / ``merge`` / ``set_target``), as a
  controller does when it pushes rules under traffic. Each update is published as a new immutable
  version (copy, change, one atomic pointer swap); a read call takes the current version once, so
  one lookup batch (or one :func:`steer` call, per table) sees the old table or the new one, never
  a mix, and never raises. Old versions are freed when their last reader returns. Concurrent
  updates are serialised. An update costs a copy of the table (O(size)): batch the changes. A
  ``steer`` call sees one version of *each* table; two tables updated one after the other may be
  seen as (new, old) by a call in between. ``version`` counts the published updates.
* **FlowTable is not thread-safe:** give each worker thread its own (the engine releases the GIL
  during batch calls); concurrent use of one FlowTable from two threads raises RuntimeError
  instead of proceeding.

Keys are numpy arrays of :data:`vnfkit.FLOW_KEY_DTYPE` (40 bytes: 5-tuple, see flow_key.hpp);
:func:`make_keys` builds IPv4 keys for tests and controllers. Snapshots are ``bytes`` images with a
CRC32C; a truncated, corrupted or wrong-kind image raises :class:`SnapshotError` (a ValueError).
"""

from __future__ import annotations

import ast
import math
from typing import Any, Iterable, Iterator, Literal, Mapping, Sequence, Union, overload

import numpy as np
import numpy.typing as npt

from . import _core

FLOW_KEY_DTYPE: np.dtype[Any] = _core.flow_key_dtype()

#: Returned by lookups for "no target" (a flow ID in no range, a key in no exception table).
NO_TARGET: int = int(_core.NO_TARGET)
#: The slot value of a FlowTable miss (or of a packet whose insert failed because the table is full).
NO_SLOT: int = int(_core.NO_SLOT)

SnapshotError = _core.SnapshotError

#: Why an entry expired (the ``reason`` field of :meth:`FlowTable.expire`).
EXPIRED_IDLE = 1
EXPIRED_CLOSED = 2

#: Layout of the engine's per-flow entry (64 bytes), as seen by :meth:`FlowTable.to_numpy`.
_ENTRY_DTYPE = np.dtype(
    [("key", FLOW_KEY_DTYPE), ("last_ts", "<u8"), ("flow_id", "<u4"), ("state", "u1"), ("tclass", "u1"),
     ("_pad", "V10")]
)
assert _ENTRY_DTYPE.itemsize == 64

KeysLike = Union["_core.PacketBatch", npt.NDArray[Any]]


class TableFullError(RuntimeError):
    """An insert did not fit into a table with a hard capacity (nothing was evicted)."""


def _uint_array(value: Any, what: str, dtype: type[np.unsignedinteger[Any]]) -> npt.NDArray[Any]:
    a = np.asarray(value)
    if a.dtype.kind not in "iu":
        raise TypeError(f"{what}: expected integers, got {a.dtype}")
    hi = int(np.iinfo(dtype).max)
    if a.size and (int(a.min()) < 0 or int(a.max()) > hi):
        raise ValueError(f"{what}: values must be in [0, {hi}]")
    return a.astype(dtype)


def make_keys(
    src: Any, dst: Any, sport: Any = 0, dport: Any = 0, proto: Any = 6
) -> npt.NDArray[Any]:
    """Build an array of IPv4 flow keys (dtype :data:`FLOW_KEY_DTYPE`).

    Every argument is a scalar or an array (broadcast together). ``src``/``dst`` are IPv4 addresses
    as host-order integers (e.g. ``0x0A000001`` for 10.0.0.1).
    """
    src_a, dst_a, sp, dp, pr = np.broadcast_arrays(
        _uint_array(src, "src", np.uint32),
        _uint_array(dst, "dst", np.uint32),
        _uint_array(sport, "sport", np.uint16),
        _uint_array(dport, "dport", np.uint16),
        _uint_array(proto, "proto", np.uint8),
    )
    n = src_a.size
    keys = np.zeros(n, dtype=FLOW_KEY_DTYPE)
    keys["src"][:, :4] = src_a.reshape(-1).astype(">u4").view(np.uint8).reshape(n, 4)
    keys["dst"][:, :4] = dst_a.reshape(-1).astype(">u4").view(np.uint8).reshape(n, 4)
    keys["sport"] = sp.reshape(-1)
    keys["dport"] = dp.reshape(-1)
    keys["proto"] = pr.reshape(-1)
    keys["family"] = 4
    return keys


def _keys_of(keys: KeysLike, what: str = "keys") -> npt.NDArray[Any]:
    if isinstance(keys, _core.PacketBatch):
        return keys.key
    if not isinstance(keys, np.ndarray):
        raise TypeError(f"{what}: expected a PacketBatch or a numpy array of FLOW_KEY_DTYPE, got {type(keys).__name__}")
    return keys


def _image(image: bytes | bytearray | memoryview) -> bytes | bytearray | memoryview:
    if not isinstance(image, (bytes, bytearray, memoryview)):
        raise TypeError(f"image: expected bytes, got {type(image).__name__}")
    return image


# ------------------------------------------------------------------------------------------- RangeTable


def _range_list(ranges: Any) -> list[tuple[int, int, int]]:
    """(lo, hi, target) triples of uint32 ints, or TypeError / ValueError naming the bad range."""
    if isinstance(ranges, (str, bytes)) or not isinstance(ranges, Iterable):
        raise TypeError(f"ranges: expected a sequence of (lo, hi, target) tuples, got {type(ranges).__name__}")
    out = []
    for i, r in enumerate(ranges):
        if not isinstance(r, (tuple, list)) or len(r) != 3:
            raise TypeError(f"ranges: range {i} must be a (lo, hi, target) tuple, got {r!r}")
        for v, name in zip(r, ("lo", "hi", "target")):
            # TypeError (not ValueError) for out-of-range values too: they are not uint32s at all.
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not 0 <= int(v) <= 0xFFFFFFFF:
                raise TypeError(f"ranges: range {i} {name} must be a uint32 int, got {v!r}")
        out.append((int(r[0]), int(r[1]), int(r[2])))
    return out


class RangeTable:
    """Non-overlapping inclusive ranges ``[lo, hi]`` of the 32-bit flow-ID space -> target id.

    >>> rt = RangeTable([(0, 2**32 - 1, 0)])     # everything to instance 0
    >>> rt.split(2**31, 1)                        # scale out: [0, 2**31-1] -> 0, [2**31, 2**32-1] -> 1
    1
    >>> rt.lookup(np.array([5, 2**31], dtype=np.uint32)).tolist()
    [0, 1]
    >>> rt.merge(2**31)                           # scale in: back to one range, target 0
    0

    Ranges must be given sorted by ``lo``, non-empty (``lo <= hi``) and non-overlapping; gaps are
    allowed and look up as :data:`NO_TARGET`. Invalid input raises ``ValueError`` and leaves the
    table unchanged. Targets are uint32 other than :data:`NO_TARGET`.

    Safe under concurrent readers: updates may run while other threads call :meth:`lookup` or
    :func:`steer`; each call sees the table before or after an update, never a mix (module doc).
    """

    __slots__ = ("_t",)

    def __init__(self, ranges: Sequence[tuple[int, int, int]] = ()) -> None:
        self._t = _core.RangeTable(_range_list(ranges))

    def assign(self, ranges: Sequence[tuple[int, int, int]]) -> None:
        """Replace every range (validated first; on error the table is unchanged)."""
        self._t.assign(_range_list(ranges))

    def split(self, m: int, new_target: int) -> int:
        """Split the range ``[X, Y]`` containing ``m`` (``X < m``): ``[X, m-1]`` keeps its target,
        ``[m, Y]`` goes to ``new_target``. Returns the index of the new range."""
        return int(self._t.split(m, new_target))

    def merge(self, m: int, target: int | None = None) -> int:
        """Merge the adjacent ranges ``[X, m-1]`` and ``[m, Y]`` into ``[X, Y]``, keeping the left
        range's target (or setting ``target``). Returns the merged range's index."""
        return int(self._t.merge(m, target))

    def set_target(self, flow_id: int, target: int) -> None:
        """Re-target the range containing ``flow_id``."""
        self._t.set_target(flow_id, target)

    def find(self, flow_id: int) -> int:
        """Target of one flow ID (:data:`NO_TARGET` if no range holds it)."""
        return int(self._t.find(flow_id))

    def lookup(self, flow_ids: KeysLike | npt.NDArray[np.uint32]) -> npt.NDArray[np.uint32]:
        """Targets of a batch: a uint32 array of flow IDs, or a PacketBatch (its ``flow_id`` column)."""
        if isinstance(flow_ids, _core.PacketBatch):
            flow_ids = flow_ids.flow_id
        return self._t.lookup(flow_ids)

    @property
    def version(self) -> int:
        """How many updates have been published (each update call publishes one new version)."""
        return int(self._t.version)

    def ranges(self) -> list[tuple[int, int, int]]:
        """The ranges, sorted, as ``(lo, hi, target)`` tuples."""
        return [tuple(r) for r in self._t.ranges()]  # type: ignore[misc]

    def to_numpy(self) -> npt.NDArray[Any]:
        """The ranges as a structured array with fields ``lo``, ``hi``, ``target`` (uint32)."""
        return np.array(self.ranges(), dtype=[("lo", "<u4"), ("hi", "<u4"), ("target", "<u4")])

    def __len__(self) -> int:
        return len(self._t)

    def __iter__(self) -> Iterator[tuple[int, int, int]]:
        return iter(self.ranges())

    def __repr__(self) -> str:
        return f"RangeTable({self.ranges()!r})"

    def snapshot(self) -> bytes:
        """A checksummed image of the table (see :meth:`restore`)."""
        return self._t.snapshot()

    @classmethod
    def restore(cls, image: bytes | bytearray | memoryview) -> RangeTable:
        """Rebuild a table from :meth:`snapshot`; raises :class:`SnapshotError` on a bad image."""
        obj = cls.__new__(cls)
        obj._t = _core.RangeTable.restore(_image(image))
        return obj


# --------------------------------------------------------------------------------------- ExceptionTable


class ExceptionTable:
    """Exact-match flow key -> target id, optionally with a hard capacity.

    ``capacity=2048`` models a hardware switch table, ``capacity=None`` (unbounded) a software
    switch. Inserting a *new* key into a full table never evicts anything: :meth:`insert` raises
    :class:`TableFullError` (``strict=True``, the default, all-or-nothing) or returns a mask of what
    fitted (``strict=False``); either way the refused keys are counted in ``stats()["failed_inserts"]``.
    Re-inserting an existing key re-targets it and always succeeds.

    Safe under concurrent readers: updates may run while other threads call :meth:`lookup` or
    :func:`steer`; each call sees the table before or after an update (one whole ``insert`` /
    ``remove`` batch), never a mix (module doc).
    """

    __slots__ = ("_t",)

    def __init__(self, capacity: int | None = None) -> None:
        if capacity is not None and (isinstance(capacity, bool) or not isinstance(capacity, (int, np.integer))):
            raise TypeError(f"capacity: expected an int or None, got {type(capacity).__name__}")
        if capacity is not None and capacity <= 0:
            raise ValueError("capacity: must be a positive number of entries, or None for unbounded")
        self._t = _core.ExceptionTable(0 if capacity is None else capacity)

    @property
    def capacity(self) -> int | None:
        """The hard capacity, or None if unbounded."""
        c = int(self._t.capacity)
        return c or None

    def insert(self, keys: KeysLike, targets: Any, *, strict: bool = True) -> npt.NDArray[np.bool_]:
        """Map each key to its target (``targets``: uint32 array or a scalar for all).

        Returns a bool mask: True where the key is now mapped. With ``strict=True`` a batch that
        does not fit raises :class:`TableFullError` and changes nothing."""
        k = _keys_of(keys)
        if np.isscalar(targets) or (isinstance(targets, np.ndarray) and targets.ndim == 0):
            if isinstance(targets, np.ndarray):
                targets = targets.item()
            if isinstance(targets, bool) or not isinstance(targets, (int, np.integer)):
                raise TypeError(f"targets: expected an int or a uint32 array, got {type(targets).__name__}")
            t = int(targets)
            if not 0 <= t < NO_TARGET:
                raise ValueError(f"targets: {t} is not a uint32 target (0xFFFFFFFF is reserved)")
            targets = np.full(len(k), t, dtype=np.uint32)
        ok, new, before = self._t.insert(k, targets, strict)
        if ok is None:
            cap = int(self._t.capacity)  # only a bounded table refuses a strict insert
            raise TableFullError(
                f"ExceptionTable full: {before}/{cap} entries, {new} new keys, "
                f"{before + new - cap} would not fit (nothing inserted)"
            )
        return ok

    def remove(self, keys: KeysLike) -> npt.NDArray[np.bool_]:
        """Remove keys; returns a mask of the keys that were present."""
        return self._t.remove(_keys_of(keys))

    def lookup(self, keys: KeysLike) -> npt.NDArray[np.uint32]:
        """Targets of a batch of keys (:data:`NO_TARGET` where absent)."""
        return self._t.lookup(_keys_of(keys))

    @property
    def version(self) -> int:
        """How many updates have been published (each update call publishes one new version)."""
        return int(self._t.version)

    def keys(self) -> npt.NDArray[Any]:
        """A copy of the keys (FLOW_KEY_DTYPE), in table order."""
        return self._t.keys()

    def targets(self) -> npt.NDArray[np.uint32]:
        """A copy of the targets, aligned with :meth:`keys` when no update ran in between
        (:meth:`items` and :meth:`to_numpy` read both from one version)."""
        return self._t.targets()

    def items(self) -> Iterator[tuple[bytes, int]]:
        """Iterate ``(key bytes, target)`` pairs (of one version of the table)."""
        keys, targets = self._t.contents()
        for k, t in zip(keys, targets):
            yield k.tobytes(), int(t)

    def __iter__(self) -> Iterator[bytes]:
        return (k for k, _ in self.items())

    def to_numpy(self) -> npt.NDArray[Any]:
        """Contents as a structured array with fields ``key`` (FLOW_KEY_DTYPE) and ``target``."""
        keys, targets = self._t.contents()
        out = np.zeros(len(keys), dtype=[("key", FLOW_KEY_DTYPE), ("target", "<u4")])
        out["key"] = keys
        out["target"] = targets
        return out

    def clear(self) -> None:
        """Remove every entry (stats are kept)."""
        self._t.clear()

    def stats(self) -> dict[str, int]:
        """size, capacity (0 = unbounded), inserts, updates, failed_inserts, removals, memory_bytes."""
        return dict(self._t.stats())

    def __len__(self) -> int:
        return len(self._t)

    def __repr__(self) -> str:
        return f"ExceptionTable(size={len(self)}, capacity={self.capacity})"

    def snapshot(self) -> bytes:
        """A checksummed image of the table (see :meth:`restore`)."""
        return self._t.snapshot()

    @classmethod
    def restore(cls, image: bytes | bytearray | memoryview) -> ExceptionTable:
        """Rebuild a table from :meth:`snapshot`; raises :class:`SnapshotError` on a bad image."""
        obj = cls.__new__(cls)
        obj._t = _core.ExceptionTable.restore(_image(image))
        return obj


def steer(
    keys: KeysLike,
    flow_ids: npt.NDArray[np.uint32] | None = None,
    *,
    ranges: RangeTable,
    exceptions: Sequence[ExceptionTable] = (),
) -> npt.NDArray[np.uint32]:
    """Steer a batch as the switches do: the first exception table holding the key wins, otherwise
    the range table's target for the flow ID. ``keys`` may be a PacketBatch (its ``key`` and
    ``flow_id`` columns are used). Returns uint32 targets (:data:`NO_TARGET` if nothing matches)."""
    if isinstance(keys, _core.PacketBatch):
        if flow_ids is None:
            flow_ids = keys.flow_id
        keys = keys.key
    if flow_ids is None:
        raise TypeError("flow_ids: required when keys is an array")
    if not isinstance(ranges, RangeTable):
        raise TypeError(f"ranges: expected a RangeTable, got {type(ranges).__name__}")
    bad = [type(e).__name__ for e in exceptions if not isinstance(e, ExceptionTable)]
    if bad:
        raise TypeError(f"exceptions: expected ExceptionTable objects, got {bad[0]}")
    return _core.steer(_keys_of(keys), flow_ids, ranges._t, [e._t for e in exceptions])


# -------------------------------------------------------------------------------------------- FlowTable


_MAX_NS = (1 << 64) - 2  # 2**64-1 is the engine's "never"


def _ns(seconds: float | None, what: str) -> int | None:
    if seconds is None:
        return None
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float, np.integer, np.floating)):
        raise TypeError(f"{what}: expected a number of seconds or None, got {type(seconds).__name__}")
    if not seconds > 0:
        raise ValueError(f"{what}: must be > 0 seconds (or None for never)")
    if not math.isfinite(seconds) or seconds * 1e9 > _MAX_NS:
        raise ValueError(f"{what}: {seconds} s is not a finite time below 2**64 ns (use None for never)")
    return max(1, int(round(seconds * 1e9)))


_PROTO_DEFAULTS = ((6, "tcp"), (17, "udp"), (1, "icmp"), (58, "icmp"))


def _timeout_classes(
    classes: Mapping[str, float | None] | Sequence[tuple[str, float | None]],
    on_close: Mapping[str, str] | None,
    protocol_classes: Mapping[int, str] | None,
) -> tuple[list[str], list[int | None], list[int], list[int]]:
    """Names, timeouts (ns), on-close class ids (255 = stay) and the class of each IP protocol."""
    if isinstance(classes, (str, bytes)):
        raise TypeError("timeout_classes: expected a dict or a list of (name, seconds) pairs")
    pairs = list(classes.items()) if isinstance(classes, Mapping) else list(classes)
    if not pairs:
        raise ValueError("timeout_classes: must name at least one class")
    if len(pairs) > 64:
        raise ValueError(f"timeout_classes: at most 64 classes, got {len(pairs)}")
    names: list[str] = []
    timeouts: list[int | None] = []
    for p in pairs:
        if not isinstance(p, (tuple, list)) or len(p) != 2 or not isinstance(p[0], str):
            raise TypeError(f"timeout_classes: expected (name, seconds) pairs, got {p!r}")
        if p[0] in names:
            raise ValueError(f"timeout_classes: class {p[0]!r} is named twice")
        names.append(p[0])
        timeouts.append(_ns(p[1], f"timeout_classes[{p[0]!r}]"))

    def cid(name: Any, what: str) -> int:
        if not isinstance(name, str) or name not in names:
            raise ValueError(f"{what}: {name!r} is not a timeout class (classes: {names})")
        return names.index(name)

    closes = [255] * len(names)
    for i, n in enumerate(names):
        if n + "_closing" in names:
            closes[i] = names.index(n + "_closing")
    for src, dst in (on_close or {}).items():
        closes[cid(src, "on_close")] = cid(dst, "on_close")
    by_proto = [0] * 256
    for proto, n in _PROTO_DEFAULTS:
        if n in names:
            by_proto[proto] = names.index(n)
    for proto, n in (protocol_classes or {}).items():
        by_proto[_int_arg(proto, "protocol_classes", 0, 255)] = cid(n, "protocol_classes")
    return names, timeouts, closes, by_proto


def _int_arg(value: Any, what: str, lo: int, hi: int) -> int:
    """An integer argument in [lo, hi]: TypeError for a non-integer (bool, float, str), ValueError
    naming the argument when out of range."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{what}: expected an int, got {type(value).__name__}")
    v = int(value)
    if not lo <= v <= hi:
        raise ValueError(f"{what}: {v} is out of range [{lo}, {hi}]")
    return v


class FlowTable:
    """Per-flow state: one fixed-size record of ``value_dtype`` per live flow.

    >>> t = FlowTable(capacity=1 << 20, value_dtype=np.dtype([("ext_port", "<u2"), ("pkts", "<u8")]),
    ...               idle_timeout_s=30, tcp_close_timeout_s=5)
    >>> slots, is_new = t.lookup_or_insert(batch)   # doctest: +SKIP
    >>> t.values["pkts"][slots] += 1                # doctest: +SKIP
    >>> expired = t.expire(now_ns)                  # doctest: +SKIP

    * **Slots.** Each live flow owns a slot in ``[0, capacity)``, stable until the flow is removed or
      expires (free slots are reused, lowest first at the start, then most recently freed first).
      ``values`` is a writable numpy structured view of every slot's record (engine memory, no copy):
      update state with vectorised numpy code. New records are zeroed.
    * **Lookups** return uint32 slots with :data:`NO_SLOT` (0xFFFFFFFF) for a miss.
    * **When full** (``capacity`` live flows), inserting a new flow fails: its slot is ``NO_SLOT``,
      ``is_new`` is False, and ``stats()["failed_inserts"]`` counts it. Nothing is evicted; the VNF
      decides (e.g. drop with DropReason.TABLE_FULL).
    * **Expiry** uses packet timestamps only. A flow's deadline is ``last_ts + idle_timeout``, or
      ``last_ts + min(idle, tcp_close_timeout)`` once a TCP packet with FIN or RST was seen.
      :meth:`expire` (``now_ns`` = packet time) removes every flow whose deadline is ``<= now_ns``
      and returns them ordered by (deadline, key bytes). ``None`` disables a timeout.
    * **Timeout classes** (per-protocol idle timeouts, as a NAT or firewall needs) replace the two
      timeouts above: ``timeout_classes={"tcp": 86400, "tcp_closing": 240, "udp": 300, "icmp": 60}``
      (seconds, ``None`` = never; a dict or a list of ``(name, seconds)``, at most 64 classes, in
      order: class ids 0, 1, ...). A flow's deadline is ``last_ts`` + its class's timeout. A new
      flow's class is the ``timeout_class`` given to :meth:`lookup_or_insert` (one name / id for
      all, or a uint8 array per row), else chosen by IP protocol: ``protocol_classes`` (``{6:
      "tcp"}``...; default: the classes named ``tcp`` (6), ``udp`` (17), ``icmp`` (1 and 58) if they
      exist, every other protocol the first class). A TCP packet with FIN or RST moves its flow to
      ``on_close[class]`` (default: ``X`` closes into ``X_closing`` when that class exists) and marks
      it closing (expiry reason :data:`EXPIRED_CLOSED`). :meth:`set_timeout_class` moves flows
      explicitly; :meth:`touch` refreshes flows found some other way (e.g. the reply direction via a
      second table). A packet that finds its flow past its deadline before :meth:`expire` removed it
      sees a *stale* flow: ``report_stale=True`` / :meth:`touch` report that per packet (the flow is
      refreshed all the same; the caller decides, e.g. re-creates the mapping).
    """

    __slots__ = ("_t", "value_dtype", "_values", "_entries", "_class_names")

    def __init__(
        self,
        capacity: int,
        value_dtype: npt.DTypeLike | int = np.dtype("<u8"),
        *,
        idle_timeout_s: float | None = None,
        tcp_close_timeout_s: float | None = None,
        tick_s: float | None = None,
        timeout_classes: Mapping[str, float | None] | Sequence[tuple[str, float | None]] | None = None,
        on_close: Mapping[str, str] | None = None,
        protocol_classes: Mapping[int, str] | None = None,
    ) -> None:
        dt: np.dtype[Any]
        if isinstance(value_dtype, (int, np.integer)) and not isinstance(value_dtype, bool):
            if not 1 <= int(value_dtype) <= 4096:
                raise ValueError("value_dtype: a size in bytes must be between 1 and 4096")
            dt = np.dtype((np.void, int(value_dtype)))
        else:
            try:
                dt = np.dtype(value_dtype)  # type: ignore[arg-type]
            except TypeError as exc:
                raise TypeError(f"value_dtype: {exc}") from exc
        if dt.hasobject:
            raise TypeError("value_dtype: must not contain Python objects")
        if not 1 <= dt.itemsize <= 4096:
            raise ValueError("value_dtype: itemsize must be between 1 and 4096 bytes")
        if isinstance(capacity, bool) or not isinstance(capacity, (int, np.integer)):
            raise TypeError(f"capacity: expected an int, got {type(capacity).__name__}")
        if not 1 <= capacity <= 1 << 30:
            raise ValueError("capacity: must be between 1 and 2**30")
        tick = 0 if tick_s is None else (_ns(tick_s, "tick_s") or 0)
        if timeout_classes is None:
            if on_close is not None or protocol_classes is not None:
                raise ValueError("on_close / protocol_classes: need timeout_classes")
            names = ["idle", "closing"]
            self._t = _core.FlowTable(capacity, dt.itemsize, _ns(idle_timeout_s, "idle_timeout_s"),
                                      _ns(tcp_close_timeout_s, "tcp_close_timeout_s"), tick)
        else:
            if idle_timeout_s is not None or tcp_close_timeout_s is not None:
                raise ValueError("timeout_classes: give either timeout_classes or idle_timeout_s / "
                                 "tcp_close_timeout_s, not both")
            names, timeouts, closes, by_proto = _timeout_classes(timeout_classes, on_close, protocol_classes)
            self._t = _core.FlowTable(capacity, dt.itemsize, None, None, tick, timeouts, closes, by_proto)
        self._t.user_meta = repr({"dtype": np.lib.format.dtype_to_descr(dt), "classes": names}).encode()
        self._bind(dt, names)

    def _bind(self, dt: np.dtype[Any], names: list[str]) -> None:
        self._class_names = names
        self.value_dtype = dt
        self._values = self._t.values_raw().view(dt)
        self._entries = self._t.entries_raw().view(_ENTRY_DTYPE)

    # ---- properties
    @property
    def capacity(self) -> int:
        return int(self._t.capacity)

    @property
    def values(self) -> npt.NDArray[Any]:
        """Writable structured view of every slot's value record (``capacity`` rows)."""
        return self._values

    @property
    def timeout_classes(self) -> dict[str, int | None]:
        """Timeout (ns, None = never) of each class, by name, in class-id order. Without explicit
        classes: ``idle`` (the idle timeout) and ``closing`` (after FIN/RST)."""
        return {n: t for n, (t, _) in zip(self._class_names, self._t.timeout_classes)}

    def timeout_class_id(self, name: str | int) -> int:
        """The id of a class given by name (or an id, checked)."""
        if isinstance(name, str):
            try:
                return self._class_names.index(name)
            except ValueError:
                raise ValueError(f"timeout_class: no class named {name!r} (classes: {self._class_names})") from None
        return _int_arg(name, "timeout_class", 0, len(self._class_names) - 1)

    @property
    def idle_timeout_ns(self) -> int | None:
        return self._t.idle_timeout_ns  # type: ignore[no-any-return]

    @property
    def tcp_close_timeout_ns(self) -> int | None:
        return self._t.close_timeout_ns  # type: ignore[no-any-return]

    def __len__(self) -> int:
        return len(self._t)

    def __repr__(self) -> str:
        return f"FlowTable(size={len(self)}, capacity={self.capacity}, value_dtype={self.value_dtype})"

    # ---- batch operations
    def lookup(self, keys: KeysLike, indices: npt.NDArray[np.uint32] | None = None) -> npt.NDArray[np.uint32]:
        """Slots of the keys (:data:`NO_SLOT` for a miss). Changes nothing (no timer refresh).
        With ``indices`` (uint32): the slots of ``keys[indices]``, without gathering those keys."""
        return self._t.lookup(_keys_of(keys), indices)

    @overload
    def lookup_or_insert(
        self, keys: KeysLike, flow_ids: npt.NDArray[np.uint32] | None = ..., ts_ns: npt.NDArray[np.uint64] | int | None = ...,
        tcp_flags: npt.NDArray[np.uint8] | None = ..., indices: npt.NDArray[np.uint32] | None = ..., *,
        timeout_class: str | int | npt.NDArray[np.uint8] | None = ..., report_stale: Literal[False] = ...,
    ) -> tuple[npt.NDArray[np.uint32], npt.NDArray[np.bool_]]: ...

    @overload
    def lookup_or_insert(
        self, keys: KeysLike, flow_ids: npt.NDArray[np.uint32] | None = ..., ts_ns: npt.NDArray[np.uint64] | int | None = ...,
        tcp_flags: npt.NDArray[np.uint8] | None = ..., indices: npt.NDArray[np.uint32] | None = ..., *,
        timeout_class: str | int | npt.NDArray[np.uint8] | None = ..., report_stale: Literal[True],
    ) -> tuple[npt.NDArray[np.uint32], npt.NDArray[np.bool_], npt.NDArray[np.bool_]]: ...

    def lookup_or_insert(
        self,
        keys: KeysLike,
        flow_ids: npt.NDArray[np.uint32] | None = None,
        ts_ns: npt.NDArray[np.uint64] | int | None = None,
        tcp_flags: npt.NDArray[np.uint8] | None = None,
        indices: npt.NDArray[np.uint32] | None = None,
        *,
        timeout_class: str | int | npt.NDArray[np.uint8] | None = None,
        report_stale: bool = False,
    ) -> tuple[npt.NDArray[Any], ...]:
        """Find every packet's flow, inserting new ones; returns ``(slots, is_new)``.

        With a PacketBatch, its ``key``, ``flow_id``, ``ts_ns`` and ``tcp_flags`` columns are used.
        With a key array, ``flow_ids`` defaults to 0, ``ts_ns`` (array or one int) to 0, and
        ``tcp_flags`` to none. Refreshes each flow's last packet time, notes TCP FIN/RST, and arms
        expiry. A flow seen twice in one batch is inserted once. Full table: see the class doc.
        With ``indices`` (uint32): only the rows ``indices`` of the keys (and of flow_ids, ts_ns,
        tcp_flags, which then have as many entries as the keys) are used, in that order, without a
        gather; the results have one entry per index.

        ``timeout_class``: the class of the flows this call creates (a name or id for all, or a
        uint8 array of class ids with one entry per key row); default: by protocol (class doc).
        ``report_stale=True`` returns ``(slots, is_new, stale)``: ``stale`` marks packets that found
        their flow already past its deadline (not yet expired by :meth:`expire`)."""
        if isinstance(keys, _core.PacketBatch):
            b = keys
            if isinstance(ts_ns, (int, np.integer)):
                ts_ns = np.full(len(b), _int_arg(ts_ns, "ts_ns", 0, (1 << 64) - 1), dtype=np.uint64)
            k = b.key
            flow_ids = b.flow_id if flow_ids is None else flow_ids
            ts_ns = b.ts_ns if ts_ns is None else ts_ns
            tcp_flags = b.tcp_flags if tcp_flags is None else tcp_flags
        else:
            k = _keys_of(keys)
            n = len(k)
            if flow_ids is None:
                flow_ids = np.zeros(n, dtype=np.uint32)
            if ts_ns is None or isinstance(ts_ns, (int, np.integer)):
                ts_ns = np.full(n, 0 if ts_ns is None else _int_arg(ts_ns, "ts_ns", 0, (1 << 64) - 1),
                                dtype=np.uint64)
        classes = None
        if timeout_class is not None:
            if isinstance(timeout_class, np.ndarray):
                classes = timeout_class
            else:
                classes = np.full(len(k), self.timeout_class_id(timeout_class), dtype=np.uint8)
        return self._t.lookup_or_insert(k, flow_ids, ts_ns, tcp_flags, indices, classes,  # type: ignore[no-any-return]
                                        bool(report_stale))

    def touch(
        self,
        slots: npt.NDArray[np.uint32],
        ts_ns: KeysLike | npt.NDArray[np.uint64],
        tcp_flags: npt.NDArray[np.uint8] | None = None,
        indices: npt.NDArray[np.uint32] | None = None,
    ) -> tuple[npt.NDArray[np.bool_], int]:
        """Refresh live flows by slot as their packets would (last packet time, FIN/RST class move),
        e.g. for the reply direction found through another table. ``ts_ns`` (and ``tcp_flags``)
        are per-touch columns, or, with ``indices``, columns indexed by ``indices[j]`` for slot
        ``j``; ``ts_ns`` may be a PacketBatch (its ``ts_ns`` and ``tcp_flags`` columns). In order,
        so a flow touched twice is stale at most at its first touch. Returns ``(stale, n_stale)``:
        the touches that found their flow past its deadline. A non-live slot raises ValueError."""
        if isinstance(ts_ns, _core.PacketBatch):
            b = ts_ns
            ts_ns = b.ts_ns
            if tcp_flags is None:
                tcp_flags = b.tcp_flags
        stale, n = self._t.touch(slots, ts_ns, tcp_flags, indices)
        return stale, int(n)

    def set_timeout_class(self, slots: npt.NDArray[np.uint32], timeout_class: str | int) -> None:
        """Move live flows to another timeout class (their deadlines follow at once)."""
        self._t.set_class(slots, self.timeout_class_id(timeout_class))

    def timeout_class_of(self, slots: npt.NDArray[np.uint32]) -> npt.NDArray[np.uint8]:
        """Class ids of the flows in ``slots`` (see :attr:`timeout_classes` for the names)."""
        return self._entries["tclass"][slots]

    def insert_missing(self, keys: KeysLike, **kwargs: Any) -> npt.NDArray[np.bool_]:
        """:meth:`lookup_or_insert` returning only the ``is_new`` mask (first packet of a flow)."""
        return self.lookup_or_insert(keys, **kwargs)[1]

    def remove(self, keys: KeysLike) -> npt.NDArray[np.bool_]:
        """Remove flows by key; returns a mask of the keys that were present."""
        return self._t.remove(_keys_of(keys))

    def remove_slots(self, slots: npt.NDArray[np.uint32]) -> int:
        """Remove flows by slot (non-live slots are ignored); returns how many were removed."""
        return int(self._t.remove_slots(slots))

    def expire(self, now_ns: int) -> npt.NDArray[Any]:
        """Advance the timer wheel to packet time ``now_ns`` and remove every flow whose deadline is
        ``<= now_ns``. Returns them (so a NAT can free their ports) as a structured array with
        fields ``slot``, ``key``, ``flow_id``, ``last_ts``, ``deadline_ns``, ``reason``
        (:data:`EXPIRED_IDLE` or :data:`EXPIRED_CLOSED`), ``timeout_class`` (id) and ``value`` (``value_dtype``), ordered by
        (deadline, key bytes). Deterministic: the same packets give the same result."""
        now = _int_arg(now_ns, "now_ns", 0, (1 << 64) - 1)
        slots, keys, ids, last, dl, reasons, vals, classes = self._t.expire(now)
        out = np.zeros(len(slots), dtype=self._expired_dtype())
        out["slot"] = slots
        out["key"] = keys
        out["flow_id"] = ids
        out["last_ts"] = last
        out["deadline_ns"] = dl
        out["reason"] = reasons
        out["timeout_class"] = classes
        out["value"] = vals.view(self.value_dtype)
        return out

    def _expired_dtype(self) -> np.dtype[Any]:
        return np.dtype(
            [
                ("slot", "<u4"),
                ("key", FLOW_KEY_DTYPE),
                ("flow_id", "<u4"),
                ("last_ts", "<u8"),
                ("deadline_ns", "<u8"),
                ("reason", "u1"),
                ("timeout_class", "u1"),
                ("value", self.value_dtype),
            ]
        )

    def active_in_range(self, lo: int, hi: int, *, since_ns: int = 0) -> npt.NDArray[Any]:
        """Keys of the live flows with ``lo <= flow_id <= hi`` (inclusive) and a packet at or after
        ``since_ns``: Fold(A) of migration avoidance. Ordered by slot."""
        return self._entries["key"][self._t.active_in_range(lo, hi, since_ns)]

    def active_slots_in_range(self, lo: int, hi: int, *, since_ns: int = 0) -> npt.NDArray[np.uint32]:
        """Slots of the flows :meth:`active_in_range` would return."""
        return self._t.active_in_range(lo, hi, since_ns)

    def live_slots(self, *, mark_dirty: bool = True) -> npt.NDArray[np.uint32]:
        """Slots of all live flows, ascending. They are marked dirty (see :meth:`take_delta`: the
        caller may write their values) unless ``mark_dirty=False``, for a reader that writes none."""
        return self._t.live_slots(bool(mark_dirty))  # type: ignore[no-any-return]

    def deadline(self, slot: int) -> int | None:
        """Current expiry deadline (ns) of a live slot, None if it never expires."""
        return self._t.deadline(slot)  # type: ignore[no-any-return]

    def clear(self) -> None:
        """Remove every flow (not counted as removals or expirations)."""
        self._t.clear()

    def stats(self) -> dict[str, float]:
        """size, capacity, load, lookups, hits, misses, inserts, failed_inserts, removals,
        expired_idle, expired_closed, expirations, memory_bytes, bytes_per_entry."""
        return dict(self._t.stats())

    def to_numpy(self) -> npt.NDArray[Any]:
        """Every live flow as a structured array (a copy) with fields ``slot``, ``key``, ``flow_id``,
        ``last_ts``, ``closing`` (FIN/RST seen), ``timeout_class`` (id) and ``value``, ordered by slot."""
        slots = self._t.live_slots(False)  # a copy: nothing is written through these slots
        e = self._entries[slots]
        out = np.zeros(
            len(slots),
            dtype=[("slot", "<u4"), ("key", FLOW_KEY_DTYPE), ("flow_id", "<u4"), ("last_ts", "<u8"),
                   ("closing", "?"), ("timeout_class", "u1"), ("value", self.value_dtype)],
        )
        out["slot"] = slots
        out["key"] = e["key"]
        out["flow_id"] = e["flow_id"]
        out["last_ts"] = e["last_ts"]
        out["closing"] = (e["state"] & 2) != 0
        out["timeout_class"] = e["tclass"]
        out["value"] = self._values[slots]
        return out

    # ---- snapshots
    def snapshot(self) -> bytes:
        """A checksummed image of the whole table: configuration, entries, values, free-slot order
        and the value dtype. Restoring it gives a table that behaves identically from then on."""
        return self._t.snapshot()

    @classmethod
    def restore(cls, image: bytes | bytearray | memoryview) -> FlowTable:
        """Rebuild a *new* table from :meth:`snapshot` (same slots, values, timers, stats); views of
        the table the image came from keep showing that table (use :meth:`restore_in_place` to
        roll an existing table back).
        Raises :class:`SnapshotError` for a truncated, corrupted or wrong-kind image."""
        t = _core.FlowTable.restore(_image(image))
        meta = t.user_meta.decode()
        n_classes = len(t.timeout_classes)
        try:
            m = ast.literal_eval(meta)
            if isinstance(m, dict):  # {"dtype": descr, "classes": names}
                descr, names = m["dtype"], [str(x) for x in m["classes"]]
            else:  # images from before timeout classes: the descr alone
                descr, names = m, ["idle", "closing"]
            dt = np.lib.format.descr_to_dtype(descr)
        except (ValueError, SyntaxError, TypeError, KeyError) as exc:
            raise SnapshotError(f"flow_table snapshot: unreadable value dtype {meta!r}") from exc
        if len(names) != n_classes:
            raise SnapshotError("flow_table snapshot: class names do not match the timeout classes")
        if dt.itemsize != t.value_size:
            raise SnapshotError("flow_table snapshot: value dtype does not match the record size")
        obj = cls.__new__(cls)
        obj._t = t
        obj._bind(dt, names)
        return obj

    def restore_in_place(self, image: bytes | bytearray | memoryview) -> None:
        """Replace this table's contents with :meth:`snapshot` image `image`, in place.

        The entry and value arrays do not move, so every view taken earlier (``values``, a cached
        ``values["field"]``) stays valid and shows the restored records: nothing keeps pointing at
        old state, which a recovering VNF relies on. The image must come from a table with the same
        capacity and value dtype; otherwise, or for a truncated / corrupted image, it raises
        :class:`SnapshotError` and the table is unchanged."""
        self._t.restore_in_place(_image(image))

    # ---- dirty tracking (incremental checkpoints)
    def mark_dirty(self, slots: npt.NDArray[np.uint32]) -> None:
        """Tell the table that the value records of `slots` were written by a slot number the
        caller kept from an earlier interval. Every slot the table hands out (``lookup`` hits,
        ``lookup_or_insert``, ``touch``, ``set_timeout_class``, ``live_slots``, ``active_in_range``)
        and every slot it changes is marked already; a write through ``values`` to any other slot
        must be marked here, or :meth:`take_delta` leaves it out. ValueError for a slot >= capacity."""
        s = np.ascontiguousarray(slots, dtype=np.uint32)
        if s.ndim != 1:
            raise ValueError("slots: expected a 1-D array of slot numbers")
        self._t.mark_dirty(s)  # std::invalid_argument arrives as ValueError

    def dirty_count(self) -> int:
        """Slots marked dirty since the last :meth:`take_delta` / :meth:`clear_dirty`."""
        return int(self._t.dirty_count())

    def take_delta(self) -> bytes:
        """What changed since the last :meth:`take_delta` / :meth:`clear_dirty` (the dirty slots'
        entries and values, the changed top of the free-slot stack, clock and counters), for a
        :class:`FlowTableImage` of this table; starts a new interval. Costs time proportional to
        what changed, not to the table."""
        return self._t.take_delta()  # type: ignore[no-any-return]

    def clear_dirty(self) -> None:
        """Start a new dirty interval without a delta: call right after the :meth:`snapshot` that
        seeds a :class:`FlowTableImage`, with no change in between."""
        self._t.clear_dirty()


class FlowTableImage:
    """A :class:`FlowTable`'s image kept outside the table (e.g. by a checkpointer in another
    process): built from the table's :meth:`FlowTable.snapshot`, brought up to date by applying
    each later :meth:`FlowTable.take_delta` in order. :meth:`snapshot` then returns exactly the
    bytes the table's own ``snapshot()`` would at the same instant, so it restores bit for bit
    (:meth:`FlowTable.restore`). A delta of another table shape, a malformed one, or one that does
    not follow the last one applied (lost or repeated) raises :class:`SnapshotError` and leaves
    the image unchanged."""

    __slots__ = ("_im",)

    def __init__(self, image: bytes | bytearray | memoryview) -> None:
        self._im = _core.FlowTableImage(_image(image))

    def apply(self, delta: bytes | bytearray | memoryview) -> None:
        """Bring the image up to date with the table's next delta."""
        self._im.apply(_image(delta))

    def snapshot(self) -> bytes:
        """The table's image (the format of :meth:`FlowTable.snapshot`)."""
        return self._im.snapshot()  # type: ignore[no-any-return]

    def take_delta(self) -> bytes:
        """One delta that does what every delta applied since the image was built (or since the
        previous :meth:`take_delta` / :meth:`clear_delta`) did, applied in order: the slots they
        changed as they are now, the free-slot stack, clock and counters. Another image of the
        table can be fed these instead of the table's own deltas and stays equal to this one (a
        checkpointer that took several deltas from the table between two checkpoints stores one).
        ValueError if no delta was applied since."""
        return self._im.take_delta()  # type: ignore[no-any-return]

    def clear_delta(self) -> None:
        """Start a new span of deltas for :meth:`take_delta` without taking one."""
        self._im.clear_delta()

    @property
    def pending_intervals(self) -> int:
        """The table's intervals covered by the deltas applied since the last :meth:`take_delta`
        / :meth:`clear_delta` (0: nothing to take)."""
        return int(self._im.pending_intervals)

    def __len__(self) -> int:
        return len(self._im)

    @property
    def deltas(self) -> int:
        """The table's interval count after the last delta applied (0 before any)."""
        return int(self._im.deltas)


__all__ = [
    "EXPIRED_CLOSED",
    "EXPIRED_IDLE",
    "ExceptionTable",
    "FlowTable",
    "FlowTableImage",
    "NO_SLOT",
    "NO_TARGET",
    "RangeTable",
    "SnapshotError",
    "TableFullError",
    "make_keys",
    "steer",
]
