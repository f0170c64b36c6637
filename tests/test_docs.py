"""The documentation's code runs: every ```python block of docs/tutorial.md, in order, in one
namespace (as a reader would paste them), and the pages the docs include exist."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parent.parent / "docs"


def _blocks(page: Path) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", page.read_text(), flags=re.S | re.M)


@pytest.mark.skipif(not (DOCS / "tutorial.md").exists(), reason="docs/ not shipped with this install")
def test_tutorial_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocks = _blocks(DOCS / "tutorial.md")
    assert len(blocks) >= 4
    monkeypatch.chdir(tmp_path)
    ns: dict[str, object] = {"__name__": "tutorial"}
    for i, code in enumerate(blocks):
        try:
            exec(compile(code, f"tutorial.md block {i + 1}", "exec"), ns)
        except Exception as exc:  # name the block that failed
            raise AssertionError(f"tutorial.md block {i + 1} failed: {exc!r}") from exc


@pytest.mark.skipif(not (DOCS / "tutorial.md").exists(), reason="docs/ not shipped with this install")
def test_included_files_exist() -> None:
    for page in DOCS.rglob("*.md"):
        for inc in re.findall(r"^```\{literalinclude\} (\S+)", page.read_text(), flags=re.M):
            assert (page.parent / inc).is_file(), f"{page.name} includes missing {inc}"
    assert os.path.isfile(DOCS / "examples" / "test_syn_guard_bench.py")


# Runs in the client namespace: sends a generated trace (TCP and UDP) out of its interface.
_SEND = r"""
import sys, time, numpy as np
from vnfkit import traffic
from vnfkit.io.live import LiveSink
ifname, dst = sys.argv[1], sys.argv[2]
trace = traffic.generate(flows=40, packets=600, seed=5)
trace.parse()
print(int((trace.key["proto"] == 6).sum()), int((trace.key["proto"] == 17).sum()))
trace.port[:] = 1
with LiveSink(ifname, dst_mac=dst) as sink:
    for start in range(0, len(trace), 100):   # 100 frames at a time, paced, to stay within the socket buffers
        sink.write(trace.select(np.arange(start, min(start + 100, len(trace)), dtype=np.uint32)))
        time.sleep(0.01)
"""

# Runs in the server namespace: counts the IPv4 TCP / UDP frames that arrive, and from which MAC.
_RECV = r"""
import sys, numpy as np
from vnfkit.io.live import LiveSource, format_mac
tcp = udp = 0
macs = set()
with LiveSource(sys.argv[1], idle_ms=20, duration_s=float(sys.argv[2])) as src:
    for b in src:
        if len(b) == 0:
            continue
        b.parse()
        tcp += int((b.key["proto"] == 6).sum()); udp += int((b.key["proto"] == 17).sum())
        d, o = np.asarray(b.data), np.asarray(b.offsets)
        macs |= {format_mac(bytes(d[o[j] + 6:o[j] + 12])) for j in range(len(b))}
print(tcp, udp, " ".join(sorted(macs)))
"""


@pytest.mark.skipif(not (DOCS / "examples" / "live_tcp_only.py").exists(), reason="docs/ not shipped with this install")
@pytest.mark.skipif(os.geteuid() != 0, reason="live interfaces: network namespaces and AF_PACKET need root")
def test_tutorial_live_example_forwards_tcp_between_two_interfaces() -> None:
    import json
    import subprocess
    import sys
    import time

    from vnfkit.testbed import Testbed, missing_tools

    if missing_tools():
        pytest.skip(f"needs {', '.join(missing_tools())} on PATH")
    with Testbed() as tb:
        for h in ("c", "v", "s"):
            tb.add_host(h)
        c0, v0 = tb.link("c", "v", "c0", "v0", "02:00:00:00:01:01", "02:00:00:00:01:02")
        v1, s1 = tb.link("v", "s", "v1", "s1", "02:00:00:00:02:01", "02:00:00:00:02:02")
        vnf = tb.popen("v", [sys.executable, str(DOCS / "examples" / "live_tcp_only.py"), "--in", v0, "--out", v1,
                             "--next-hop", "02:00:00:00:02:02", "--seconds", "6"], stdout=subprocess.PIPE)
        recv = tb.popen("s", [sys.executable, "-c", _RECV, s1, "6"], stdout=subprocess.PIPE)
        time.sleep(2.0)  # both have their sockets open (interpreter start-up included)
        sent = tb.run("c", [sys.executable, "-c", _SEND, c0, "02:00:00:00:01:02"], timeout=60)
        assert sent.returncode == 0, sent.stderr
        want_tcp, want_udp = map(int, sent.stdout.split())
        out_vnf, _ = vnf.communicate(timeout=60)
        out_recv, _ = recv.communicate(timeout=60)
    assert vnf.returncode == 0 and recv.returncode == 0
    summary = json.loads(out_vnf.decode().strip().splitlines()[-1])
    tcp, udp, *macs = out_recv.decode().split()
    print(f"live example: {want_tcp} TCP + {want_udp} UDP sent; VNF {summary}; server got {tcp} TCP, {udp} UDP from {macs}")
    assert want_tcp > 0 and want_udp > 0
    assert summary["packets"] == want_tcp + want_udp
    assert summary["forwarded"] == want_tcp and summary["drops"] == {"policy": want_udp}
    assert (int(tcp), int(udp)) == (want_tcp, 0)
    assert macs == ["02:00:00:00:02:01"]  # rewritten by the sink: the VNF's outgoing interface
