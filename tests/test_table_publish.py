"""RangeTable / ExceptionTable updates under concurrent readers (a controller pushing rules while
workers steer): real threads hammer lookups and steer while another thread updates, and every
result must equal the result of one whole version of the table -- never a mix, never an error."""

from __future__ import annotations

import threading
from typing import Any, Callable

import numpy as np
import pytest

from vnfkit.tables import NO_TARGET, ExceptionTable, RangeTable, make_keys, steer

N = 20_000  # keys per lookup batch: long enough that the GIL-free lookups overlap the updates


def keys(n: int, off: int) -> np.ndarray:
    i = np.arange(off, off + n, dtype=np.uint64)
    return make_keys(0x0A000000 + i, 0x0B000001, (i * 7) & 0xFFFF, 443, 6)


def hammer(readers: list[Callable[[], None]], writer: Callable[[int], None], rounds: int) -> list[BaseException]:
    """Run every reader in a loop on its own thread while `writer(i)` runs `rounds` times."""
    errors: list[BaseException] = []
    stop = threading.Event()

    def read_loop(f: Callable[[], None]) -> None:
        try:
            while not stop.is_set():
                f()
        except BaseException as e:  # noqa: BLE001 -- reported to the test
            errors.append(e)

    def write_loop() -> None:
        try:
            for i in range(rounds):
                writer(i)
        except BaseException as e:  # noqa: BLE001
            errors.append(e)
        finally:
            stop.set()

    threads = [threading.Thread(target=read_loop, args=(f,)) for f in readers]
    threads.append(threading.Thread(target=write_loop))
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a thread hung"
    return errors


def matches_one(got: np.ndarray, versions: list[np.ndarray]) -> bool:
    return any(np.array_equal(got, v) for v in versions)


@pytest.mark.parametrize("seed", [1, 2])
def test_exception_table_updates_while_threads_look_up(seed: int) -> None:
    rng = np.random.default_rng(seed)
    a, b = keys(N // 2, 0), keys(N // 2, 1 << 20)
    q = np.concatenate([a, b])[rng.permutation(N)]
    cap = None if seed == 1 else N  # unbounded and hard-capacity tables
    ex = ExceptionTable(cap)
    # the writer cycles through four states; a lookup must see exactly one of them
    steps: list[tuple[str, np.ndarray, int]] = [("insert", a, 1), ("insert", b, 2), ("remove", a, 0),
                                                ("remove", b, 0)]
    state: dict[bytes, int] = {}
    versions = []
    for op, k, tgt in steps:
        for kk in k:
            if op == "insert":
                state[kk.tobytes()] = tgt
            else:
                state.pop(kk.tobytes(), None)
        versions.append(np.array([state.get(kk.tobytes(), NO_TARGET) for kk in q], dtype=np.uint32))
    seen: set[int] = set()
    bad: list[np.ndarray] = []

    def reader() -> None:
        got = ex.lookup(q)
        for i, v in enumerate(versions):
            if np.array_equal(got, v):
                seen.add(i)
                return
        bad.append(got)

    ranges = RangeTable([(0, 2**32 - 1, 9)])
    fids = np.zeros(N, np.uint32)
    steer_versions = [np.where(v == NO_TARGET, 9, v).astype(np.uint32) for v in versions]

    def steerer() -> None:
        got = steer(q, fids, ranges=ranges, exceptions=[ex])
        if not matches_one(got, steer_versions):
            bad.append(got)

    def writer(i: int) -> None:
        op, k, tgt = steps[i % 4]
        if op == "insert":
            assert ex.insert(k, tgt).all()
        else:
            assert ex.remove(k).all()

    v0 = ex.version
    errors = hammer([reader, reader, steerer], writer, rounds=4 * 40)
    assert not errors, errors[:3]
    assert not bad, f"{len(bad)} lookups saw a mix of two versions"
    assert len(seen) >= 2  # the readers really ran across updates
    assert ex.version == v0 + 4 * 40 and len(ex) == 0


def test_range_table_split_merge_while_threads_steer() -> None:
    rng = np.random.default_rng(5)
    ids = rng.integers(0, 2**32, N, dtype=np.uint32)
    q = keys(N, 0)
    hw = ExceptionTable(2048)
    hw_keys = q[:1000]
    hw.insert(hw_keys, 100)
    rt = RangeTable([(0, 2**32 - 1, 0)])
    cuts = [1 << 30, 1 << 31, 3 << 30]
    # states: 0..3 cuts applied (each cut's new range gets target = its index + 1)
    versions, steer_versions = [], []
    for n_cuts in range(len(cuts) + 1):
        bounds = [0] + cuts[:n_cuts]
        t = np.searchsorted(np.array(bounds, dtype=np.uint64), ids.astype(np.uint64), side="right") - 1
        v = t.astype(np.uint32)
        versions.append(v)
        s = v.copy()
        s[:1000] = 100
        steer_versions.append(s)
    bad: list[Any] = []

    def reader() -> None:
        if not matches_one(rt.lookup(ids), versions):
            bad.append("lookup")

    def steerer() -> None:
        if not matches_one(steer(q, ids, ranges=rt, exceptions=[hw]), steer_versions):
            bad.append("steer")

    def writer(i: int) -> None:
        r = i % 6
        if r < 3:
            rt.split(cuts[r], r + 1)
        else:
            rt.merge(cuts[5 - r])

    errors = hammer([reader, steerer], writer, rounds=6 * 30)
    assert not errors, errors[:3]
    assert not bad, f"{len(bad)} calls saw a mix of two versions: {bad[:5]}"
    assert rt.ranges() == [(0, 2**32 - 1, 0)]


def test_invalid_update_under_readers_publishes_nothing() -> None:
    """A rejected update (ValueError) leaves the published version as it was."""
    rt = RangeTable([(0, 99, 1)])
    v = rt.version
    with pytest.raises(ValueError, match="split: no range contains 500"):
        rt.split(500, 2)
    assert rt.version == v and rt.ranges() == [(0, 99, 1)]
    ex = ExceptionTable(2)
    from vnfkit.tables import TableFullError

    with pytest.raises(TableFullError, match="ExceptionTable full: 0/2 entries, 3 new keys, 1 would not fit"):
        ex.insert(keys(3, 0), 5)
    assert len(ex) == 0 and ex.stats()["failed_inserts"] == 1


def test_old_version_stays_valid_while_a_reader_holds_it() -> None:
    """Many updates while readers run: no crash, no leak of versions (memory stays bounded)."""
    ex = ExceptionTable()
    k = keys(2000, 0)
    stop = threading.Event()
    errors: list[BaseException] = []

    def reader() -> None:
        try:
            while not stop.is_set():
                out = ex.lookup(k)
                assert set(np.unique(out).tolist()) <= {NO_TARGET, 1, 2}
                ex.to_numpy()
                ex.snapshot()
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    ths = [threading.Thread(target=reader) for _ in range(2)]
    for t in ths:
        t.start()
    try:
        for i in range(300):
            ex.insert(k, 1 + (i & 1))
            if i % 3 == 0:
                ex.clear()
    finally:
        stop.set()
        for t in ths:
            t.join(timeout=60)
    assert not errors, errors[:3]
