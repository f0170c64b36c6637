"""WAN optimizer: encode -> decode round trips, compression, damage, eviction, threads, checksums."""

from __future__ import annotations

import os
import random
import threading
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether

from vnfkit import _core, _wanopt
from vnfkit.nfs.wanopt import DecoderCache, EncoderCache, WanOptDecoder, WanOptimizer, encoded_overhead
from vnfkit.vnf import Context

FLAG_HAS_L4 = 1 << 2
OTHER = int(_core.DropReason.OTHER)


# ---------------------------------------------------------------------------------------------
# helpers: frames with a known layout, parsed by hand (or by batch.parse() once it exists)

def frame(payload: bytes, *, v6: bool = False, udp: bool = False, sport: int = 1234, dport: int = 80,
          udp_nocsum: bool = False) -> bytes:
    ip = IPv6(src="2001:db8::1", dst="2001:db8::2") if v6 else IP(src="10.0.0.1", dst="10.0.0.2")
    l4 = UDP(sport=sport, dport=dport) if udp else TCP(sport=sport, dport=dport, flags="PA", seq=1000)
    if udp and udp_nocsum:
        l4.chksum = 0
    return bytes(Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / ip / l4 / payload)


def parsed(frames: list[bytes]) -> _core.PacketBatch:
    b = _core.PacketBatch(frames)
    if hasattr(b, "parse"):
        b.parse()
        return b
    for i, f in enumerate(frames):
        pkt = Ether(f)
        b.l3_offset[i] = 14
        if IPv6 in pkt:
            ihl, ip_len, proto = 40, 40 + pkt[IPv6].plen, pkt[IPv6].nh
            b.key["family"][i] = 6
        else:
            ihl, ip_len, proto = pkt[IP].ihl * 4, pkt[IP].len, pkt[IP].proto
            b.key["family"][i] = 4
        b.l4_offset[i] = 14 + ihl
        b.l4_len[i] = ip_len - ihl
        b.key["proto"][i] = proto
        b.flags[i] = FLAG_HAS_L4
    return b


def checksums_ok(f: bytes) -> bool:
    pkt = Ether(f)
    ok = True
    if IP in pkt:
        want = pkt[IP].chksum
        redo = Ether(f)
        del redo[IP].chksum
        ok &= Ether(bytes(redo))[IP].chksum == want
    for layer in (TCP, UDP):
        if layer in pkt:
            want = pkt[layer].chksum
            if layer is UDP and IP in pkt and want == 0:
                continue
            redo = Ether(f)
            del redo[layer].chksum
            ok &= Ether(bytes(redo))[layer].chksum == want
    return bool(ok)


def http_like(n: int, rng: random.Random) -> list[bytes]:
    """Responses that share most of their bytes (headers, a page template) with small changes."""
    template = b"".join(
        b"<div class=\"row\"><span>item %04d</span><a href=\"/catalogue/items/%04d\">details</a></div>\n" % (k, k)
        for k in range(12)
    )
    out = []
    for i in range(n):
        hdr = (b"HTTP/1.1 200 OK\r\nServer: nginx/1.24\r\nContent-Type: text/html; charset=utf-8\r\n"
               b"Cache-Control: max-age=60\r\nX-Request-Id: %08x\r\n\r\n" % rng.getrandbits(32))
        body = bytearray(template)
        pos = rng.randrange(len(body) - 8)
        body[pos:pos + 8] = b"%08d" % i
        out.append((hdr + bytes(body))[: rng.choice([400, 800, 1200, 1400])])
    return out


def run_encode(enc_cache, frames, stats=None):
    b = parsed(frames)
    stats = stats or _wanopt.Stats(_wanopt.ENCODER_STATS)
    _wanopt.encode_batch(enc_cache, b, 1, stats)
    return b, stats


def run_decode(dec_cache, frames, stats=None):
    b = parsed(frames)
    stats = stats or _wanopt.Stats(_wanopt.DECODER_STATS)
    _wanopt.decode_batch(dec_cache, b, 1, stats)
    return b, stats


# ---------------------------------------------------------------------------------------------
# rolling hash against a pure-Python reference

def buzhash_ref(data: bytes, w: int) -> list[int]:
    table = []
    x = 0x57414E4F50543031
    m = (1 << 64) - 1
    for _ in range(256):
        x = (x + 0x9E3779B97F4A7C15) & m
        z = x
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & m
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & m
        table.append(z ^ (z >> 31))

    def rotl(v: int, r: int) -> int:
        r %= 64
        return ((v << r) | (v >> (64 - r))) & m if r else v

    out = []
    for j in range(len(data) - w + 1):
        h = 0
        for k in range(w):
            h ^= rotl(table[data[j + k]], w - 1 - k)
        out.append(h)
    return out


@settings(max_examples=40, deadline=None)
@given(st.binary(min_size=0, max_size=120), st.sampled_from([8, 16, 32, 63, 64]))
def test_rolling_hash_matches_reference(data, w):
    assert _wanopt.rolling_hashes(data, w) == buzhash_ref(data, w)


@settings(max_examples=60, deadline=None)
@given(st.binary(min_size=0, max_size=400), st.sampled_from([8, 16, 32, 64]), st.integers(0, 5))
def test_encoder_anchors_are_the_low_bit_zero_windows(data, w, bits):
    cache = EncoderCache(1 << 16, window=w, anchor_bits=bits, min_match=max(w, 8))
    hashes = _wanopt.rolling_hashes(data, w)
    want = [(j, h) for j, h in enumerate(hashes) if h & ((1 << bits) - 1) == 0]
    assert _wanopt.anchor_positions(cache, data) == want


# ---------------------------------------------------------------------------------------------
# payload-level round trips

@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.binary(min_size=1, max_size=1500), min_size=1, max_size=12), st.randoms())
def test_round_trip_random_payloads(payloads, rnd):
    enc, dec = EncoderCache(1 << 16), DecoderCache(1 << 16)
    # replay some payloads and splice pieces of earlier ones so that matches happen
    seq = list(payloads)
    for _ in range(len(payloads)):
        a, b = rnd.choice(payloads), rnd.choice(payloads)
        seq.append(a[: rnd.randrange(len(a) + 1)] + b + a[rnd.randrange(len(a) + 1):] or b"x")
    for p in seq:
        p = p[:65535]
        e = _wanopt.encode_payload_bytes(enc, p)
        assert len(e) <= len(p) + encoded_overhead(len(p))
        got, why = _wanopt.decode_payload_bytes(dec, e)
        assert why is None and got == p


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**32), st.sampled_from([4096, 8192]))
def test_round_trip_with_ring_wrap_around(seed, size):
    """Small rings: regions wrap past the ring's end and get overwritten; still bit-identical."""
    rnd = random.Random(seed)
    bases = [rnd.randbytes(1200) for _ in range(3)]
    enc, dec = EncoderCache(size), DecoderCache(size)
    shims = 0
    for _ in range(150):
        b = rnd.choice(bases)
        lo = rnd.randrange(0, 600)
        p = b[lo:lo + rnd.randrange(100, 600)]
        e = _wanopt.encode_payload_bytes(enc, p)
        shims += e.count(b"\x80")
        assert _wanopt.decode_payload_bytes(dec, e) == (p, None)
    assert enc.write_position > 2 * size  # wrapped at least twice
    assert shims > 0


def test_redundant_payloads_compress_and_round_trip():
    rng = random.Random(7)
    enc, dec = EncoderCache(1 << 20), DecoderCache(1 << 20)
    payloads = http_like(300, rng)
    total_in = total_out = 0
    for p in payloads:
        e = _wanopt.encode_payload_bytes(enc, p)
        total_in += len(p)
        total_out += len(e)
        got, why = _wanopt.decode_payload_bytes(dec, e)
        assert why is None and got == p
    # measured: 0.079 on this workload (anchor_bits=4, window=32, min_match=32)
    assert total_out / total_in < 0.12


def test_random_payloads_grow_by_at_most_the_overhead():
    enc = EncoderCache(1 << 16)
    for n in (1, 31, 32, 127, 128, 129, 1460, 9000, 65535):
        p = os.urandom(n)
        e = _wanopt.encode_payload_bytes(enc, p)
        assert len(e) <= n + encoded_overhead(n)


# ---------------------------------------------------------------------------------------------
# batches of frames: lengths, checksums, bit-identical frames

@pytest.mark.parametrize("v6,udp", [(False, False), (False, True), (True, False), (True, True)])
def test_frames_round_trip_with_valid_checksums(v6, udp):
    rng = random.Random(1)
    payloads = http_like(60, rng) + [os.urandom(rng.randrange(1, 1400)) for _ in range(20)] + [b""]
    frames = [frame(p, v6=v6, udp=udp, sport=1000 + i % 7) for i, p in enumerate(payloads)]
    enc, dec = EncoderCache(1 << 20), DecoderCache(1 << 20)
    eb, est = run_encode(enc, frames)
    assert np.all(eb.port == 1) and np.all(eb.drop == 0)
    encoded = [eb.packet(i) for i in range(len(eb))]
    for f in encoded:
        assert checksums_ok(f)
    s = est.as_dict()
    assert s["packets_encoded"] == len(payloads) - 1 and s["packets_passthrough"] == 1
    assert s["bytes_in"] == sum(len(p) for p in payloads)
    assert s["bytes_out"] < s["bytes_in"] and s["shims"] > 0
    if hasattr(eb, "verify_checksums"):  # the packet helper's verifier, on the columns we updated
        assert eb.verify_checksums().all()
    db, dst = run_decode(dec, encoded)
    assert np.all(db.port == 1) and np.all(db.drop == 0)
    assert [db.packet(i) for i in range(len(db))] == frames
    if hasattr(db, "verify_checksums"):
        assert db.verify_checksums().all()
    assert [int(x) for x in db.l4_len] == [int(x) for x in parsed(frames).l4_len]
    d = dst.as_dict()
    assert d["packets_decoded"] == len(payloads) - 1 and d["bytes_out"] == s["bytes_in"]
    assert sum(v for k, v in d.items() if k.startswith("fail_")) == 0


def test_udp_without_checksum_stays_without_and_padding_is_kept():
    p = b"GET /index.html HTTP/1.1\r\nHost: example.org\r\n\r\n" * 4
    frames = [frame(p, udp=True, udp_nocsum=True), frame(p, udp=True, udp_nocsum=True)]
    short = frame(b"hi", udp=True)  # 44 bytes: pad to 60 like a NIC would
    frames.append(short + b"\x00" * (60 - len(short)))
    enc, dec = EncoderCache(1 << 16), DecoderCache(1 << 16)
    eb, _ = run_encode(enc, frames)
    assert Ether(eb.packet(1))[UDP].chksum == 0
    assert len(eb.packet(1)) < len(frames[1])
    db, _ = run_decode(dec, [eb.packet(i) for i in range(len(eb))])
    assert [db.packet(i) for i in range(len(db))] == frames


def test_passthrough_and_already_dropped_packets():
    frames = [frame(b"x" * 100), bytes(Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / IP(src="1.2.3.4", dst="5.6.7.8", proto=47) / b"gre-ish")]
    b = parsed(frames)
    b.flags[1] = 0  # no L4 header
    b.drop[0] = int(_core.DropReason.POLICY)
    st_ = _wanopt.Stats(_wanopt.ENCODER_STATS)
    _wanopt.encode_batch(EncoderCache(1 << 16), b, 3, st_)
    assert b.packet(0) == frames[0] and b.packet(1) == frames[1]
    assert list(b.port) == [0, 3] and int(b.drop[0]) == int(_core.DropReason.POLICY)


# ---------------------------------------------------------------------------------------------
# damage: never crash; decode exactly or drop with a reason

def _encoded_stream(n=40, seed=3):
    rng = random.Random(seed)
    enc = EncoderCache(1 << 18)
    payloads = http_like(n, rng)
    return payloads, [_wanopt.encode_payload_bytes(enc, p) for p in payloads]


def _prime(dec, payloads, encoded, upto):
    for p, e in zip(payloads[:upto], encoded[:upto]):
        assert _wanopt.decode_payload_bytes(dec, e) == (p, None)


@settings(max_examples=150, deadline=None)
@given(st.integers(5, 39), st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), min_size=1, max_size=6),
       st.integers(0, 2000))
def test_byte_flips_and_truncation_decode_exactly_or_drop(k, flips, cut):
    payloads, encoded = _encoded_stream()
    dec = DecoderCache(1 << 18)
    _prime(dec, payloads, encoded, k)
    e = bytearray(encoded[k])
    for pos, val in flips:
        e[pos % len(e)] ^= val or 1
    for damaged in (bytes(e), bytes(e[: cut % (len(e) + 1)]), encoded[k][: cut % len(encoded[k])]):
        got, why = _wanopt.decode_payload_bytes(dec, damaged)
        if why is None:
            assert got == payloads[k]
        else:
            assert why.startswith("fail_") and got is None


def test_each_failure_reason_is_detected():
    payloads, encoded = _encoded_stream(6)
    dec = DecoderCache(1 << 18)
    _prime(dec, payloads, encoded, 3)
    e = encoded[3]
    assert b"\x80" in e[14:]  # it has a shim
    cases = {
        "fail_truncated": e[:10],
        "fail_bad_magic": b"\x00" + e[1:],
        "fail_bad_version": e[:1] + b"\x21" + e[2:],
        "fail_bad_crc": e[:-1] + bytes([e[-1] ^ 0x40]),
        "fail_bad_length": e[:2] + b"\x00\x05" + e[4:],
    }
    for why, bad in cases.items():
        assert _wanopt.decode_payload_bytes(dec, bad) == (None, why), why
    bad_tag = bytearray(_wanopt.encode_payload_bytes(EncoderCache(1 << 16), b"z" * 20))
    bad_tag[14] = 0x93
    assert _wanopt.decode_payload_bytes(dec, bytes(bad_tag)) == (None, "fail_bad_record")
    assert _wanopt.decode_payload_bytes(dec, b"") == (None, "fail_truncated")
    # damaged base position: the CRC covers the header, so it is never stored at the wrong place
    moved = bytearray(encoded[3])
    moved[13] ^= 0x01
    assert _wanopt.decode_payload_bytes(dec, bytes(moved))[1] in ("fail_bad_crc", "fail_missing_ref")


def test_unencoded_traffic_is_dropped_with_reason_in_batches():
    frames = [frame(b"plain text, never encoded " * 3), frame(b"\xa7" + b"\x10" * 40)]
    db, dst = run_decode(DecoderCache(1 << 16), frames)
    assert list(db.port) == [0, 0] and list(db.drop) == [OTHER, OTHER]
    assert [db.packet(i) for i in range(2)] == frames  # left unchanged
    d = dst.as_dict()
    assert d["fail_bad_magic"] == 1 and d["fail_truncated"] + d["fail_bad_length"] == 1


# ---------------------------------------------------------------------------------------------
# eviction and references the decoder never saw

def test_shims_to_evicted_regions_are_detected():
    enc, dec = EncoderCache(1 << 20), DecoderCache(1 << 12)  # the decoder's cache is too small
    first = os.urandom(700)
    e0 = _wanopt.encode_payload_bytes(enc, first)
    assert _wanopt.decode_payload_bytes(dec, e0) == (first, None)
    for _ in range(10):  # 10 KiB of fresh data overwrite the decoder's 4 KiB ring
        p = os.urandom(1000)
        assert _wanopt.decode_payload_bytes(dec, _wanopt.encode_payload_bytes(enc, p)) == (p, None)
    e1 = _wanopt.encode_payload_bytes(enc, first)
    assert len(e1) < 40  # the encoder still has it
    assert _wanopt.decode_payload_bytes(dec, e1) == (None, "fail_missing_ref")


def test_encoder_never_references_its_own_evicted_bytes():
    enc, dec = EncoderCache(1 << 12), DecoderCache(1 << 12)
    first = os.urandom(600)
    out = []
    for p in [first] + [os.urandom(900) for _ in range(8)] + [first]:
        e = _wanopt.encode_payload_bytes(enc, p)
        out.append(e)
        assert _wanopt.decode_payload_bytes(dec, e) == (p, None)
    assert len(out[-1]) > len(first)  # evicted: sent as literals, not as a stale shim


def test_missing_reference_in_a_batch_is_a_drop_and_later_packets_still_decode():
    rng = random.Random(5)
    payloads = http_like(20, rng)
    frames = [frame(p) for p in payloads]
    eb, _ = run_encode(EncoderCache(1 << 20), frames)
    encoded = [eb.packet(i) for i in range(len(eb))]
    dec = DecoderCache(1 << 20)
    db, dst = run_decode(dec, encoded[1:])  # packet 0 was lost on the link
    out = [db.packet(i) for i in range(len(db))]
    ok = db.port == 1
    assert dst.as_dict()["fail_missing_ref"] == int((~ok).sum()) >= 1
    assert np.all(db.drop[~ok] == OTHER)
    for i in np.nonzero(ok)[0]:
        assert out[i] == frames[i + 1]


def test_cache_read_and_store_api():
    c = DecoderCache(1 << 12)
    assert c.read(0, 10) is None and not c.valid(0, 1)
    assert c.store(128, b"hello" * 30) == 3
    assert c.read(128, 150) == b"hello" * 30 and c.valid(128, 150) and not c.valid(64, 70)
    assert c.store(128 + 4096, b"x" * 10) == 1  # next generation of the same slot
    assert c.read(128, 10) is None and c.read(128 + 4096, 10) == b"x" * 10
    assert c.store(128, b"old") == 0  # older data never overwrites newer
    with pytest.raises(ValueError):
        c.store(3, b"x")


# ---------------------------------------------------------------------------------------------
# shared cache, two encoder threads

def test_concurrent_encoding_from_two_threads_decodes_correctly():
    rng = random.Random(11)
    enc = EncoderCache(1 << 22)
    streams = [http_like(400, random.Random(s)) for s in (1, 2)]
    for s in streams:  # both threads serve the same site: lots of cross-thread redundancy
        rng.shuffle(s)
    # batches are built up front so that the threads spend their time in the (GIL-free) encoder
    batches = [[parsed([frame(p, sport=5000 + t) for p in streams[t][lo:lo + 100]])
                for lo in range(0, 400, 100)] for t in (0, 1)]
    barrier = threading.Barrier(2)

    def worker(t: int) -> None:
        barrier.wait()
        for b in batches[t]:
            _wanopt.encode_batch(enc, b, 1, _wanopt.Stats(_wanopt.ENCODER_STATS))

    threads = [threading.Thread(target=worker, args=(t,)) for t in (0, 1)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    results = [[(p, b.packet(i)) for b, lo in zip(batches[t], range(0, 400, 100))
                for i, p in enumerate(streams[t][lo:lo + 100])] for t in (0, 1)]
    # A packet may reference a region reserved after its own (stored first by the other thread): such
    # packets are dropped as missing and retried in a later round (as a retransmission would be).
    # Every packet ends up bit-identical, and no attempt ever yields wrong bytes.
    dec = DecoderCache(1 << 22)
    # decode in the order the payloads reserved their cache regions (the base block in the header)
    pending = sorted((pf for r in results for pf in r),
                     key=lambda pf: int.from_bytes(bytes(Ether(pf[1])[TCP].payload)[8:14], "big"))
    total_in = sum(len(p) for p, _ in pending)
    total_out = sum(len(Ether(f)[TCP].payload) for _, f in pending)
    assert total_out / total_in < 0.3
    rounds = 0
    while pending:
        rounds += 1
        assert rounds < 10
        db, dst = run_decode(dec, [f for _, f in pending])
        left = []
        for i, (p, f) in enumerate(pending):
            if db.port[i] == 1:
                assert bytes(Ether(db.packet(i))[TCP].payload) == p
                assert checksums_ok(db.packet(i))
            else:
                left.append((p, f))
        d = dst.as_dict()
        assert d["fail_missing_ref"] == len(left) and d["fail_bad_crc"] == 0
        pending = left


def _two_queue_round_trip(isolate: bool, wait_ns: int = 0):
    """Two encoder threads (queues 0, 1) share an encoder cache; then two decoder threads, one per
    queue, share a decoder cache. Returns per packet: rebuilt bit for bit (True) or dropped (False)."""
    streams = [http_like(240, random.Random(s)) for s in (3, 4)]
    enc, dec = EncoderCache(1 << 22), DecoderCache(1 << 22)
    batches = [[parsed([frame(p, sport=7000 + t) for p in streams[t][lo:lo + 40]]) for lo in range(0, 240, 40)]
               for t in (0, 1)]
    barrier = threading.Barrier(2)

    def run(t: int, fn, cache, names, owner) -> None:
        barrier.wait()
        for b in batches[t]:
            fn(cache, b, 1, _wanopt.Stats(names), *owner)

    def both(fn, cache, names, owners) -> None:
        threads = [threading.Thread(target=run, args=(t, fn, cache, names, owners[t])) for t in (0, 1)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()

    both(_wanopt.encode_batch, enc, _wanopt.ENCODER_STATS, [(1,), (2,)] if isolate else [(0,), (0,)])
    encoded = [[[b.packet(i) for i in range(len(b))] for b in bs] for bs in batches]
    assert all(np.all(b.port == 1) for bs in batches for b in bs)
    batches = [[parsed(fs) for fs in e] for e in encoded]
    both(_wanopt.decode_batch, dec, _wanopt.DECODER_STATS, [(wait_ns,), (wait_ns,)])
    ok = []
    for t in (0, 1):
        for k, b in enumerate(batches[t]):
            for i in range(len(b)):
                if b.port[i] == 1:
                    assert bytes(Ether(b.packet(i))[TCP].payload) == streams[t][40 * k + i]
                    assert checksums_ok(b.packet(i))
                    ok.append(True)
                else:
                    assert b.drop[i] == OTHER and b.packet(i) == encoded[t][k][i]
                    ok.append(False)
    return ok


def test_concurrent_decoding_from_two_threads_never_yields_wrong_bytes():
    ok = _two_queue_round_trip(isolate=False)
    # Both queues reference each other's regions; whatever the other decoder thread has not stored
    # yet is dropped, and drops cascade (a dropped payload is not stored). Wrong bytes never appear
    # (checked inside); how many decode depends on the interleaving (53 to 480 seen).
    assert len(ok) == 480 and sum(ok) >= 1


def test_waiting_decoders_never_yield_wrong_bytes():
    """With a wait budget, a decoder worker waits for the other queue's worker to store what its
    shims reference. Usually everything decodes; rarely a wait still times out and the drop
    cascades (open issue, see the module docstring). Never wrong bytes (checked inside)."""
    ok = _two_queue_round_trip(isolate=False, wait_ns=200_000_000)
    assert len(ok) == 480 and sum(ok) >= 1


def test_wait_budget_is_bounded_and_overwritten_bytes_never_wait():
    enc, dec = EncoderCache(1 << 20), DecoderCache(1 << 12)
    p = os.urandom(700)
    _wanopt.encode_payload_bytes(enc, p)  # never delivered: the decoder waits, then gives up
    e = _wanopt.encode_payload_bytes(enc, p)
    t0 = time.perf_counter()
    assert _wanopt.decode_payload_bytes(dec, e, 20_000_000) == (None, "fail_missing_ref")
    assert 0.015 < time.perf_counter() - t0 < 2.0
    for _ in range(8):  # now the decoder's slots hold newer generations: no waiting at all
        q = os.urandom(1000)
        assert _wanopt.decode_payload_bytes(dec, _wanopt.encode_payload_bytes(enc, q)) == (q, None)
    t0 = time.perf_counter()
    assert _wanopt.decode_payload_bytes(dec, e, 2_000_000_000) == (None, "fail_missing_ref")
    assert time.perf_counter() - t0 < 0.5


def test_waiting_decoder_in_another_thread_gets_the_bytes():
    enc, dec = EncoderCache(1 << 20), DecoderCache(1 << 20)
    p = os.urandom(700)
    e1, e2 = _wanopt.encode_payload_bytes(enc, p), _wanopt.encode_payload_bytes(enc, p)
    out: dict[str, object] = {}

    def late() -> None:
        time.sleep(0.05)
        out["e1"] = _wanopt.decode_payload_bytes(dec, e1)

    th = threading.Thread(target=late)
    th.start()
    t0 = time.perf_counter()
    out["e2"] = _wanopt.decode_payload_bytes(dec, e2, 5_000_000_000)
    waited = time.perf_counter() - t0
    th.join()
    assert out == {"e1": (p, None), "e2": (p, None)} and 0.04 < waited < 4.0


def test_isolated_queues_decode_everything_concurrently():
    ok = _two_queue_round_trip(isolate=True)
    assert len(ok) == 480 and all(ok)


def test_owner_tags_restrict_matches():
    enc, dec = EncoderCache(1 << 16), DecoderCache(1 << 16)
    p = os.urandom(800)
    first = _wanopt.encode_payload_bytes(enc, p, 1)
    second = _wanopt.encode_payload_bytes(enc, p, 2)
    assert len(second) > len(p)  # queue 2 may not use queue 1's bytes
    third = _wanopt.encode_payload_bytes(enc, p, 2)
    assert len(third) < 40  # but its own
    for e in (first, second, third):
        assert _wanopt.decode_payload_bytes(dec, e) == (p, None)
    for bad in (-1, _wanopt.MAX_OWNER + 1):
        with pytest.raises(ValueError, match="owner"):
            _wanopt.encode_payload_bytes(enc, p, bad)


# ---------------------------------------------------------------------------------------------
# the VNF classes

def test_vnf_classes_share_caches_through_ctx_shared_and_count():
    from vnfkit.state import SharedState

    shared = SharedState()
    ctxs = [Context(q, 2, shared=shared) for q in range(2)]
    encs = [WanOptimizer() for _ in ctxs]
    decs = [WanOptDecoder() for _ in ctxs]
    for v, c in zip(encs, ctxs):
        v.setup(c, cache_size=1 << 18, min_match=40, window=32, isolate_queues=False)
    for v, c in zip(decs, ctxs):
        v.setup(c, cache_size=1 << 18)
    payloads = http_like(30, random.Random(2))
    frames = [frame(p) for p in payloads]
    b0, b1 = parsed(frames[:15]), parsed(frames[15:])
    encs[0].process(b0, ctxs[0])
    assert encs[1].cache.write_position == encs[0].cache.write_position > 0  # one shared region, two views
    encs[1].process(b1, ctxs[1])  # references bytes stored by worker 0
    decs[0].process(parsed([b0.packet(i) for i in range(len(b0))]), ctxs[0])
    d1 = parsed([b1.packet(i) for i in range(len(b1))])
    decs[1].process(d1, ctxs[1])
    assert [d1.packet(i) for i in range(len(d1))] == frames[15:]
    s = encs[1].stats()
    assert s["bytes_saved"] == s["bytes_in"] - s["bytes_out"] > 0 and s["shims"] > 0
    assert decs[1].stats()["decode_failures"] == 0
    with pytest.raises(ValueError, match="other parameters"):
        WanOptimizer().setup(Context(0, 1, shared=shared), cache_size=1 << 16)


def test_vnf_in_runner():
    from vnfkit.runtime import Runner

    payloads = http_like(50, random.Random(9))
    frames = [frame(p) for p in payloads]
    outs: list[bytes] = []
    with Runner(WanOptimizer, queues=1, config={"cache_size": 1 << 18}) as r:
        res = r.run([parsed(frames[:25]), parsed(frames[25:])],
                    on_output=lambda q, b: outs.extend(b.packet(i) for i in range(len(b))))
    assert res.forwarded == 50 and res.vnf_stats["shims"] > 0
    got: list[bytes] = []
    with Runner(WanOptDecoder, queues=1, config={"cache_size": 1 << 18}) as r:
        res = r.run([parsed(outs)], on_output=lambda q, b: got.extend(b.packet(i) for i in range(len(b))))
    assert got == frames and res.vnf_stats["decode_failures"] == 0


@pytest.mark.skipif(not hasattr(_core.PacketBatch, "select"), reason="needs PacketBatch.select (packet parser)")
@pytest.mark.parametrize("isolate", [False, True])
def test_vnfs_in_two_queue_runners(isolate):
    from vnfkit.runtime import Runner

    rng = random.Random(21)
    payloads = http_like(240, rng)
    frames = [frame(p, sport=2000 + rng.randrange(64), dport=80) for p in payloads]
    cfg = {"cache_size": 1 << 20, "isolate_queues": isolate}
    encoded: list[bytes] = []
    with Runner(WanOptimizer, queues=2, config=cfg) as r:
        res = r.run([parsed(frames[lo:lo + 60]) for lo in range(0, 240, 60)],
                    on_output=lambda q, b: encoded.extend(b.packet(i) for i in range(len(b))))
    assert res.forwarded == 240 and res.vnf_stats["bytes_out"] < res.vnf_stats["bytes_in"]
    decoded: list[bytes] = []
    with Runner(WanOptDecoder, queues=2, config={"cache_size": 1 << 20, "wait_us": 1e6}) as r:
        res = r.run([parsed(encoded[lo:lo + 60]) for lo in range(0, 240, 60)],
                    on_output=lambda q, b: decoded.extend(b.packet(i) for i in range(len(b)) if b.port[i]))
    s = res.vnf_stats
    if isolate:  # every decoder queue has what its packets reference, in order
        assert s["decode_failures"] == 0 and sorted(decoded) == sorted(frames)
    else:  # cross-queue references: rebuilt exactly, or dropped as missing (never wrong bytes)
        assert s["decode_failures"] == s["fail_missing_ref"] == 240 - len(decoded)
        assert set(decoded) <= set(frames)


@pytest.mark.parametrize("kwargs,exc", [
    ({"cache_size": 1000}, ValueError),
    ({"cache_size": 1 << 31}, ValueError),
    ({"cache_size": -4096}, ValueError),
    ({"cache_size": 4096.0}, TypeError),
    ({"window": 4}, ValueError),
    ({"window": 65}, ValueError),
    ({"anchor_bits": 17}, ValueError),
    ({"min_match": 16, "window": 32}, ValueError),
    ({"table_bits": 2}, ValueError),
    ({"out_port": 0}, ValueError),
    ({"out_port": True}, ValueError),
    ({"cache": "nope"}, TypeError),
    ({"cache": DecoderCache(1 << 16)}, TypeError),
    ({"bogus": 1}, TypeError),
])
def test_bad_encoder_config(kwargs, exc):
    with pytest.raises(exc):
        WanOptimizer().setup(Context(0, 1), **kwargs)


def test_bad_decoder_config_and_wrong_objects():
    d = WanOptDecoder()
    d.setup(Context(1, 2), cache_size=1 << 16)
    assert d.wait_ns == 2_000_000
    d.setup(Context(0, 1), cache_size=1 << 16, wait_us=0.5)
    assert d.wait_ns == 500
    for bad in (-1, True, "1", 2e6):
        with pytest.raises(ValueError, match="wait_us"):
            WanOptDecoder().setup(Context(0, 1), wait_us=bad)
    with pytest.raises(TypeError, match="isolate_queues"):
        WanOptimizer().setup(Context(0, 1), isolate_queues=1)
    e = WanOptimizer()
    e.setup(Context(3, 4), cache_size=1 << 16, isolate_queues=True)
    assert e.owner == 4
    with pytest.raises(TypeError):
        WanOptDecoder().setup(Context(0, 1), cache=EncoderCache(1 << 16))
    with pytest.raises(ValueError):
        WanOptDecoder().setup(Context(0, 1), cache_size=12345)
    with pytest.raises(ValueError):
        _wanopt.encode_batch(DecoderCache(1 << 16), parsed([frame(b"x")]), 1, _wanopt.Stats(_wanopt.ENCODER_STATS))
    with pytest.raises(ValueError):
        _wanopt.decode_payload_bytes(EncoderCache(1 << 16), b"x")
    with pytest.raises(TypeError, match="PacketBatch"):
        _wanopt.encode_batch(EncoderCache(1 << 16), [b"not a batch"], 1, _wanopt.Stats(_wanopt.ENCODER_STATS))
    with pytest.raises(ValueError):
        _wanopt.encode_payload_bytes(EncoderCache(1 << 16), b"")
    bare = _wanopt.Cache.__new__(_wanopt.Cache)  # never initialised: refused, not crashed
    for call in (lambda: _wanopt.encode_payload_bytes(bare, b"x"), lambda: bare.read(0, 1),
                 lambda: _wanopt.decode_batch(bare, parsed([frame(b"x")]), 1, _wanopt.Stats(_wanopt.DECODER_STATS))):
        with pytest.raises(ValueError, match="not initialised"):
            call()
    with pytest.raises(RuntimeError):
        EncoderCache(1 << 16).__init__(1 << 16, True)


HUGE = 2 ** 40


@pytest.mark.parametrize("vnf, key", [
    (WanOptimizer, "cache_size"), (WanOptimizer, "window"), (WanOptimizer, "min_match"),
    (WanOptimizer, "table_bits"), (WanOptimizer, "anchor_bits"), (WanOptimizer, "out_port"),
    (WanOptDecoder, "cache_size"), (WanOptDecoder, "out_port"), (WanOptDecoder, "wait_us"),
])
@pytest.mark.parametrize("value", [HUGE, -HUGE, 2 ** 64 + 1])
def test_huge_numbers_are_a_value_error_naming_the_key(vnf, key, value):
    with pytest.raises(ValueError, match=f"^{key}: ") as info:
        vnf().setup(Context(0, 1), **{key: value})
    assert not isinstance(info.value, OverflowError) and "\n" not in str(info.value)


@pytest.mark.parametrize("key", ["window", "min_match", "table_bits", "anchor_bits", "min_store"])
def test_cache_numbers_are_checked_before_any_c_conversion(key):
    with pytest.raises(ValueError, match=f"^{key}: must be in"):
        _wanopt.Cache(1 << 16, True, **{key: HUGE})
    with pytest.raises(TypeError, match=f"^{key}: expected an int"):
        _wanopt.Cache(1 << 16, True, **{key: 32.0})


def test_stage_arguments_are_checked_before_any_c_conversion():
    enc, dec = EncoderCache(1 << 16), DecoderCache(1 << 16)
    b = parsed([frame(b"x" * 64)])
    es, ds = _wanopt.Stats(_wanopt.ENCODER_STATS), _wanopt.Stats(_wanopt.DECODER_STATS)
    with pytest.raises(ValueError, match="^out_port: "):
        _wanopt.encode_batch(enc, b, HUGE, es)
    with pytest.raises(ValueError, match="^owner: "):
        _wanopt.encode_batch(enc, b, 1, es, HUGE)
    with pytest.raises(ValueError, match="^wait_ns: "):
        _wanopt.decode_batch(dec, b, 1, ds, 2 ** 64)
    with pytest.raises(ValueError, match="^owner: "):
        _wanopt.encode_payload_bytes(enc, b"y" * 64, -1)
    with pytest.raises(ValueError, match="^wait_ns: "):
        _wanopt.decode_payload_bytes(dec, b"y" * 64, HUGE ** 2)


@pytest.mark.parametrize("nf, key", [("wanopt", "window"), ("wanopt", "min_match"), ("wanopt", "table_bits"),
                                     ("wanopt", "anchor_bits"), ("wanopt-decoder", "cache_size")])
def test_cli_huge_config_number_is_one_line(nf, key, tmp_path):
    import json
    import subprocess
    import sys

    from vnfkit import traffic

    trace = tmp_path / "t.pcap"
    traffic.write_trace(str(trace), 10, 50, 1)
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({key: HUGE}))
    r = subprocess.run([sys.executable, "-m", "vnfkit", "run", nf, "--in", str(trace), "--out",
                        str(tmp_path / "o.pcap"), "--config", str(cfg), "--quiet"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and f"{key}: must be in" in lines[0] and "Overflow" not in r.stderr, r.stderr


def test_a_waiting_decoder_racing_the_store_it_waits_for_never_gives_up_on_bytes_that_arrived():
    # The wait looks at the bytes, then at whether they are still pending: a store completing between
    # the two looks used to end the wait with fail_missing_ref (about 1 in 3 000 of these races here).
    fails = []
    for k in range(3000):
        enc, dec = EncoderCache(1 << 20), DecoderCache(1 << 20)
        p = os.urandom(1400)
        e1, e2 = _wanopt.encode_payload_bytes(enc, p), _wanopt.encode_payload_bytes(enc, p)
        out: dict[str, object] = {}
        go = threading.Event()

        def first() -> None:
            go.wait()
            out["e1"] = _wanopt.decode_payload_bytes(dec, e1)

        th = threading.Thread(target=first)
        th.start()
        go.set()
        out["e2"] = _wanopt.decode_payload_bytes(dec, e2, 2_000_000_000)
        th.join()
        if out != {"e1": (p, None), "e2": (p, None)}:
            fails.append((k, out["e1"][1], out["e2"][1]))  # type: ignore[index]
    assert fails == []
