"""vnfkit.testbed: namespaces, veth with offloads off, and a teardown that leaves nothing behind."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from vnfkit.testbed import Testbed, leftovers, missing_tools, nat_testbed

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="the testbed needs root (network namespaces, veth pairs)"),
    pytest.mark.skipif(bool(missing_tools()), reason=f"the testbed needs {', '.join(missing_tools())} on PATH"),
]


def test_nat_topology_offloads_neighbours_and_ping_path() -> None:
    with Testbed() as tb:
        topo = nat_testbed(tb)
        for host, ifname in (("client", topo.client_if), ("nat", topo.inside_if), ("nat", topo.outside_if),
                             ("server", topo.server_if)):
            feats = tb.offloads(host, ifname)
            for f in ("rx-checksumming", "tx-checksumming", "tcp-segmentation-offload",
                      "generic-segmentation-offload", "generic-receive-offload"):
                assert feats[f] is False, (host, ifname, f)
        neigh = tb.ip("client", "neigh", "show", topo.gateway_ip)
        assert topo.inside_mac in neigh and "PERMANENT" in neigh
        neigh = tb.ip("server", "neigh", "show", topo.public_ip)
        assert topo.outside_mac in neigh and "PERMANENT" in neigh
        # the NAT host has no IP address: its kernel cannot answer or forward anything
        assert "inet " not in tb.ip("nat", "addr", "show", "dev", topo.inside_if)
        assert "inet " not in tb.ip("nat", "addr", "show", "dev", topo.outside_if)
        # nothing of the testbed is visible in the caller's namespace except the namespaces
        assert [x for x in leftovers(tb.prefix) if x.startswith("link")] == []
        prefix = tb.prefix
    assert leftovers(prefix) == []


def test_teardown_after_a_failure_leaves_nothing() -> None:
    prefix = None
    procs = []
    with pytest.raises(RuntimeError, match="body failed"):
        with Testbed() as tb:
            prefix = tb.prefix
            nat_testbed(tb)
            procs.append(tb.popen("server", [sys.executable, "-c", "import time; time.sleep(600)"]))
            # a grandchild that leaves the process group: found through the namespace
            procs.append(tb.popen("client", ["sh", "-c", f"setsid {sys.executable} -c 'import time; time.sleep(600)' & "
                                                         "sleep 600"]))
            assert len(leftovers(prefix)) == 3
            raise RuntimeError("body failed")
    assert prefix is not None
    assert leftovers(prefix) == []
    for p in procs:
        assert p.poll() is not None, f"pid {p.pid} still running"
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    assert prefix not in out


def test_bad_names_are_refused() -> None:
    with pytest.raises(ValueError, match="prefix"):
        Testbed(prefix="bad-prefix!")
    with Testbed() as tb:
        tb.add_host("a")
        with pytest.raises(ValueError, match="name"):
            tb.add_host("a")
        tb.add_host("b")
        with pytest.raises(ValueError, match="tag"):
            tb.link("a", "b", "x" * 12, "y", "02:00:00:00:00:01", "02:00:00:00:00:02")
        prefix = tb.prefix
    assert leftovers(prefix) == []
