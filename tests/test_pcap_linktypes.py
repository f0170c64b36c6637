"""Link types other than Ethernet (raw IP, Linux cooked SLL / SLL2), unknown link types, the
buffered (pipe) read path, mixed-link-type pcapng and byte-exact write round trips."""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import threading

import numpy as np
import pytest

import vnfkit
from vnfkit import _core, traffic
from vnfkit.io import PcapSink, PcapSource

ETH_HEADER = 14


def ethernet_sample(n=300):
    b = traffic.generate(flows=min(30, n), packets=n, seed=12, ipv6_fraction=0.3, udp_fraction=0.3)
    b.parse()
    return b


def reframe(frame: bytes, linktype: int) -> bytes:
    """The same IP packet under another link-layer header (as tcpdump -i any / a tun device stores it)."""
    ethertype, ip, src_mac = frame[12:14], frame[ETH_HEADER:], frame[6:12]
    if linktype in (101, 228, 229):
        return ip
    if linktype == 113:  # packet type, ARPHRD_ETHER, address length, address (8), protocol
        return struct.pack(">HHH", 4, 1, 6) + src_mac + b"\0\0" + ethertype + ip
    if linktype == 276:  # protocol, reserved, ifindex, ARPHRD_ETHER, packet type, address length, address (8)
        return ethertype + b"\0\0" + struct.pack(">IHBB", 3, 1, 4, 6) + src_mac + b"\0\0" + ip
    raise AssertionError(linktype)


HEADER_LEN = {101: 0, 228: 0, 229: 0, 113: 16, 276: 20}


def write_framed(path, eth: vnfkit.PacketBatch, linktype: int) -> vnfkit.PacketBatch:
    b = vnfkit.PacketBatch([reframe(f, linktype) for f in eth.to_list()], ts_ns=eth.ts_ns.copy())
    b.linktype = linktype
    b.to_pcap(str(path))
    return b


@pytest.mark.parametrize("linktype", [101, 113, 276])
def test_non_ethernet_captures_parse_at_the_right_offset(tmp_path, linktype):
    eth = ethernet_sample()
    path = tmp_path / f"lt{linktype}.pcap"
    framed = write_framed(path, eth, linktype)
    src = PcapSource(path)
    assert src.linktype == linktype
    got = src.read()
    assert got.linktype == linktype and got.to_list() == framed.to_list()
    assert got.parse() == 0
    assert got.key.tobytes() == eth.key.tobytes()
    assert np.array_equal(got.l3_offset.astype(int), eth.l3_offset.astype(int) - ETH_HEADER + HEADER_LEN[linktype])
    assert np.array_equal(got.l4_len, eth.l4_len) and np.array_equal(got.tcp_flags, eth.tcp_flags)
    assert bool(np.all(got.verify_checksums()))


def test_raw_ipv4_and_ipv6_only_link_types_check_the_version(tmp_path):
    eth = ethernet_sample()
    fam = eth.key["family"]
    for linktype, want in ((228, 4), (229, 6)):
        path = tmp_path / f"lt{linktype}.pcap"
        write_framed(path, eth, linktype)
        got = vnfkit.PacketBatch.from_pcap(str(path))
        assert got.linktype == linktype
        got.parse()
        ok = got.drop == 0
        assert np.array_equal(ok, fam == want)
        assert set(got.drop_counts()) == {"bad-ip-version"}


def test_scapy_reads_our_cooked_capture_and_we_read_scapys(tmp_path):
    from scapy.layers.inet import IP, TCP
    from scapy.layers.l2 import CookedLinux
    from scapy.utils import rdpcap, wrpcap

    eth = ethernet_sample(50)
    ours = tmp_path / "ours.pcap"
    write_framed(ours, eth, 113)
    theirs = rdpcap(str(ours))
    v4 = [i for i in range(len(eth)) if eth.key["family"][i] == 4]
    for i in v4:
        assert theirs[i].haslayer(CookedLinux) and theirs[i][IP].dst == str(_ip4(eth.key["dst"][i]))
    pkts = [CookedLinux(pkttype=0, lladdrtype=1, lladdrlen=6, src=b"\x02" * 6 + b"\0\0") /
            IP(src="10.1.2.3", dst="198.51.100.7") / TCP(sport=1000 + i, dport=80, flags="S") for i in range(20)]
    path = tmp_path / "scapy.pcap"
    wrpcap(str(path), pkts)
    b = vnfkit.PacketBatch.from_pcap(str(path))
    assert b.linktype == 113 and b.parse() == 0
    assert b.key["sport"].tolist() == [1000 + i for i in range(20)]
    assert set(b.l3_offset.tolist()) == {16}


def _ip4(raw16):
    import ipaddress

    return ipaddress.IPv4Address(bytes(raw16[:4]))


@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark not installed")
@pytest.mark.parametrize("linktype", [101, 113, 276])
def test_tshark_decodes_our_non_ethernet_captures(tmp_path, linktype):
    eth = ethernet_sample(100)
    path = tmp_path / "t.pcap"
    write_framed(path, eth, linktype)
    r = subprocess.run(["tshark", "-n", "-r", str(path), "-T", "fields", "-e", "ip.src", "-e", "ipv6.src"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    rows = [line.strip() for line in r.stdout.splitlines()]
    assert len(rows) == len(eth)
    for i, row in enumerate(rows):
        if eth.key["family"][i] == 4:
            assert row == str(_ip4(eth.key["src"][i]))


def test_unknown_link_type_is_refused_not_silently_dropped(tmp_path):
    b = vnfkit.PacketBatch([bytes(40)] * 3)
    b.linktype = 105  # IEEE 802.11
    path = tmp_path / "wifi.pcap"
    b.to_pcap(str(path))
    got = vnfkit.PacketBatch.from_pcap(str(path))
    assert got.linktype == 105 and len(got) == 3  # reading is plain I/O
    with pytest.raises(ValueError, match="link type 105"):
        got.parse()
    with pytest.raises(ValueError, match="link type 105"):
        PcapSource(path).check_parsable()
    with pytest.raises(ValueError, match="linktype"):
        b.linktype = 70000


def test_writer_refuses_a_batch_of_another_link_type(tmp_path):
    b = ethernet_sample(10)
    with PcapSink(tmp_path / "raw.pcap", linktype=101) as sink:
        with pytest.raises(ValueError, match="linktype 1 differs"):
            sink.write(b)
    with pytest.raises(ValueError, match="linktype"):
        _core.PcapWriter(str(tmp_path / "x.pcap"), False, -1)


def test_pcapng_chunks_split_where_the_link_type_changes(tmp_path):
    eth = ethernet_sample(6).to_list()

    def block(btype, body):
        ln = 12 + len(body)
        return struct.pack("<II", btype, ln) + body + struct.pack("<I", ln)

    def epb(ifid, p):
        return block(6, struct.pack("<IIIII", ifid, 0, 1, len(p), len(p)) + p + b"\0" * ((-len(p)) % 4))

    raw = [reframe(f, 101) for f in eth]
    data = (block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1)) +
            block(1, struct.pack("<HHI", 1, 0, 0)) + block(1, struct.pack("<HHI", 101, 0, 0)) +
            epb(0, eth[0]) + epb(0, eth[1]) + epb(1, raw[2]) + epb(1, raw[3]) + epb(0, eth[4]))
    path = tmp_path / "mixed.pcapng"
    path.write_bytes(data)
    chunks = list(PcapSource(path, chunk=100))
    assert [(c.linktype, len(c)) for c in chunks] == [(1, 2), (101, 2), (1, 1)]
    assert [c.parse() for c in chunks] == [0, 0, 0]
    assert np.concatenate([c.packet_id for c in chunks]).tolist() == list(range(5))
    with pytest.raises(vnfkit.PcapError, match="several link types"):
        vnfkit.PacketBatch.from_pcap(str(path))


def test_a_pipe_is_read_through_the_buffer_with_records_across_refills(tmp_path):
    b = traffic.generate(flows=200, packets=70_000, seed=3, ipv6_fraction=0.2)  # ~6 MB: more than one buffer
    path = tmp_path / "t.pcap"
    b.to_pcap(str(path))
    raw = path.read_bytes()
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)

    def feed():
        with open(fifo, "wb") as fh:
            for i in range(0, len(raw), 100_003):  # odd-sized writes split records
                fh.write(raw[i:i + 100_003])

    t = threading.Thread(target=feed)
    t.start()
    try:
        src = PcapSource(fifo, chunk=30_000)
        chunks = list(src)
    finally:
        t.join(timeout=60)
    assert src.file_size == 0 and src.position == len(raw)
    assert [len(c) for c in chunks] == [30_000, 30_000, 10_000]
    assert b"".join(c.data.tobytes() for c in chunks) == b.data.tobytes()
    assert np.concatenate([c.ts_ns for c in chunks]).tolist() == (b.ts_ns // 1000 * 1000).tolist()  # a µs pcap


@pytest.mark.parametrize("nano", [False, True])
def test_read_then_write_is_byte_identical(tmp_path, nano):
    b = traffic.generate(flows=100, packets=20_000, seed=5, ipv6_fraction=0.2)
    first = tmp_path / "a.pcap"
    b.to_pcap(str(first), nano)
    second = tmp_path / "b.pcap"
    with PcapSink(second, nanosecond=nano) as sink:
        for chunk in PcapSource(first, chunk=3_333):
            sink.write(chunk)
        assert sink.packets_written == 20_000
    assert second.read_bytes() == first.read_bytes()
    src = PcapSource(second)
    list(src)
    assert src.position == src.file_size == len(second.read_bytes())
