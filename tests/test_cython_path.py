"""The Cython path: the shipped Cython stage imports from the package, the declarations are found,
and a user stage written against vnfkit.pxd (docs/examples/ttl_guard.pyx) compiles and works."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether

import vnfkit
from vnfkit import _core, cython_support

EXAMPLES = Path(__file__).resolve().parent.parent / "docs" / "examples"


def test_cython_stage_is_an_extension_module_of_the_package():
    spec = importlib.util.find_spec("vnfkit._wanopt")
    assert spec is not None and spec.origin is not None
    origin = Path(spec.origin)
    assert origin.parent == Path(vnfkit.__file__).parent
    assert any(origin.name.endswith(s) for s in importlib.machinery.EXTENSION_SUFFIXES)
    from vnfkit import _wanopt

    assert _wanopt.FORMAT_VERSION == 1 and _wanopt.MAGIC_BYTE == 0xA7


def test_declarations_and_headers_are_found():
    dirs = [Path(d) for d in cython_support.get_include()]
    assert any((d / "vnfkit.pxd").is_file() for d in dirs)
    assert any((d / "vnfkit" / "packet" / "batch.hpp").is_file() for d in dirs)
    assert (Path(cython_support.get_library_dir()) / "libvnfkit_core.a").is_file()


def test_engine_ptr_identifies_the_engine_object():
    a = _core.PacketBatch([b"\x00" * 60])
    b = _core.PacketBatch([b"\x00" * 60])
    assert isinstance(a._engine_ptr(), int) and a._engine_ptr() == a._engine_ptr() != b._engine_ptr()


CRC_STAGE = textwrap.dedent('''
    # cython: language_level=3
    # distutils: language = c++
    from libc.stdint cimport uint32_t
    from vnfkit cimport PacketBatch, batch_from_object, packet_ptr, packet_len, crc32c_bytes, kFlagHasL4

    def packet_crcs(batch):
        cdef PacketBatch* b = batch_from_object(batch)
        cdef size_t i
        out = []
        for i in range(b.size()):
            out.append(crc32c_bytes(packet_ptr(b, i), packet_len(b, i), 0))
        return out, int(kFlagHasL4), b.data.size(), b.offsets.size()
''')

CSUM_STAGE = textwrap.dedent('''
    # cython: language_level=3
    # distutils: language = c++
    from libc.stdint cimport uint8_t
    from libcpp.vector cimport vector
    from vnfkit cimport (PacketBatch, batch_from_object, fix_checksums, verify_checksums,
                         ipv4_header_checksum, VNFKIT_HAS_CHECKSUM)

    def fix_and_verify(batch):
        cdef PacketBatch* b = batch_from_object(batch)
        cdef vector[uint8_t] ok
        ok.resize(b.size())
        with nogil:
            fix_checksums(b[0])
            verify_checksums(b[0], ok.data())
        return [bool(ok[i]) for i in range(b.size())], VNFKIT_HAS_CHECKSUM

    def ip_checksum(const uint8_t[::1] hdr):
        return ipv4_header_checksum(&hdr[0], hdr.shape[0])
''')

SETUP = textwrap.dedent('''
    from pathlib import Path
    from Cython.Build import cythonize
    from setuptools import setup
    from vnfkit.cython_support import extension, get_include
    exts = [extension("ttl_guard", ["ttl_guard.pyx"], link_engine=False),
            extension("crc_stage", ["crc_stage.pyx"])]
    if any((Path(d) / "vnfkit" / "packet" / "checksum.hpp").is_file() for d in get_include()):
        exts.append(extension("csum_stage", ["csum_stage.pyx"]))
    setup(name="stages", ext_modules=cythonize(exts, include_path=get_include(), language_level=3, quiet=True))
''')


def crc32c_ref(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


@pytest.fixture(scope="module")
def built_stages(tmp_path_factory):
    if shutil.which(os.environ.get("CXX", "c++")) is None and shutil.which("g++") is None:
        if os.environ.get("VNFKIT_TEST_NO_COMPILER") == "1":  # a wheel-only environment, on purpose
            pytest.skip("no C++ compiler on PATH (VNFKIT_TEST_NO_COMPILER=1): Cython stages need one")
        pytest.fail("a C++ compiler is needed to build Cython stages")
    d = tmp_path_factory.mktemp("stages")
    shutil.copy(EXAMPLES / "ttl_guard.pyx", d)
    (d / "crc_stage.pyx").write_text(CRC_STAGE)
    (d / "csum_stage.pyx").write_text(CSUM_STAGE)
    (d / "setup.py").write_text(SETUP)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(Path(vnfkit.__file__).parent.parent), env.get("PYTHONPATH", "")])
    r = subprocess.run([sys.executable, "setup.py", "-q", "build_ext", "--inplace"], cwd=d, env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    sys.path.insert(0, str(d))
    try:
        import crc_stage
        import ttl_guard

        try:
            import csum_stage
        except ImportError:  # engine without the packet helper's checksum.hpp
            csum_stage = None
    finally:
        sys.path.remove(str(d))
    return ttl_guard, crc_stage, csum_stage


def _frame(ttl: int) -> bytes:
    return bytes(Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / IP(src="10.1.1.1", dst="10.2.2.2", ttl=ttl)
                 / UDP(sport=1, dport=2) / b"payload")


def test_documented_example_stage_compiles_and_works(built_stages):
    ttl_guard, _, _ = built_stages
    frames = [_frame(t) for t in (64, 1, 2, 0)]
    b = _core.PacketBatch(frames)
    b.l3_offset[:] = 14
    assert ttl_guard.ttl_guard(b, 3) == 2
    assert list(b.port) == [3, 0, 3, 0]
    assert list(b.drop) == [0, int(vnfkit.DropReason.TTL_EXPIRED), 0, int(vnfkit.DropReason.TTL_EXPIRED)]
    for i, ttl in ((0, 63), (2, 1)):
        pkt = Ether(b.packet(i))
        assert pkt[IP].ttl == ttl
        redo = Ether(b.packet(i))
        del redo[IP].chksum
        assert Ether(bytes(redo))[IP].chksum == pkt[IP].chksum
    assert b.packet(1) == frames[1]
    short = _core.PacketBatch([b"\x00" * 20])
    short.l3_offset[:] = 14
    ttl_guard.ttl_guard(short)
    assert int(short.drop[0]) == int(vnfkit.DropReason.TRUNCATED)
    with pytest.raises(TypeError, match="PacketBatch"):
        ttl_guard.ttl_guard([b"not a batch"])


def test_stage_linked_to_the_engine_library(built_stages):
    _, crc_stage, _ = built_stages
    frames = [_frame(t) for t in (5, 6, 7)] + [b"", b"123456789"]
    b = _core.PacketBatch(frames)
    crcs, flag, nbytes, noffsets = crc_stage.packet_crcs(b)
    assert crcs == [crc32c_ref(f) for f in frames]
    assert crc32c_ref(b"123456789") == 0xE3069283  # the CRC32C check value
    assert flag == 4 and nbytes == int(np.sum([len(f) for f in frames])) and noffsets == len(frames) + 1


def test_stage_using_the_packet_helpers_checksums(built_stages):
    csum_stage = built_stages[2]
    if csum_stage is None:
        pytest.skip("engine built without vnfkit/packet/checksum.hpp")
    frames = []
    for ttl in (3, 4, 5):
        pkt = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / IP(src="10.0.0.1", dst="10.0.0.2", ttl=ttl) \
            / UDP(sport=5, dport=6) / b"abc"
        raw = bytearray(bytes(pkt))
        raw[24:26] = b"\x00\x00"  # break the IPv4 and UDP checksums
        raw[40:42] = b"\x12\x34"
        frames.append(bytes(raw))
    b = _core.PacketBatch(frames)
    b.parse()
    assert not b.verify_checksums().any()
    ok, has = csum_stage.fix_and_verify(b)
    assert has == 1 and ok == [True, True, True]
    for i in range(3):
        pkt = Ether(b.packet(i))
        redo = Ether(b.packet(i))
        del redo[IP].chksum, redo[UDP].chksum
        again = Ether(bytes(redo))
        assert (again[IP].chksum, again[UDP].chksum) == (pkt[IP].chksum, pkt[UDP].chksum)
        assert csum_stage.ip_checksum(b.packet(i)[14:34]) == pkt[IP].chksum


def test_wan_optimizer_uses_the_packet_helpers_checksums_when_the_engine_has_them():
    from vnfkit import _wanopt

    assert _wanopt.ENGINE_CHECKSUMS == hasattr(_core.PacketBatch, "verify_checksums")
