"""Our own Open vSwitch (vnfkit.testbed.ovs): start on a private run directory, stop by pid, clean up."""

import os
import subprocess

import pytest

from vnfkit.testbed.ovs import OpenVSwitch, OvsConfig, OvsError, unavailable_reason

from _procs import alive

REASON = unavailable_reason()
needs_ovs = pytest.mark.skipif(REASON is not None, reason=REASON or "")



@pytest.fixture
def netns():
    name = f"vkovs-t{os.getpid() % 100000}-{os.urandom(2).hex()}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    yield name
    subprocess.run(["ip", "netns", "del", name], check=False)


def test_config_errors_name_the_field():
    with pytest.raises(ValueError, match="ready_timeout_s"):
        OvsConfig(ready_timeout_s=0).validated()
    with pytest.raises(ValueError, match="netns"):
        OvsConfig(netns="a/b").validated()
    with pytest.raises(ValueError, match="parent"):
        OvsConfig(parent="/nonexistent/dir").validated()
    with pytest.raises(OvsError, match="not running"):
        OpenVSwitch().vsctl("show")


def test_unavailable_reason_names_what_is_missing(monkeypatch):
    import shutil

    from vnfkit.testbed import ovs as ovs_mod

    monkeypatch.setattr(ovs_mod.os, "geteuid", lambda: 1000)
    assert "root" in ovs_mod.unavailable_reason()
    monkeypatch.setattr(ovs_mod.os, "geteuid", lambda: 0)
    real = shutil.which
    monkeypatch.setattr(ovs_mod.shutil, "which", lambda t: None if t == "ovs-vswitchd" else real(t))
    reason = ovs_mod.unavailable_reason()
    assert "ovs-vswitchd" in reason and "openvswitch-switch" in reason
    with pytest.raises(OvsError, match="ovs-vswitchd"):
        OpenVSwitch().start()  # refuses before creating anything


@needs_ovs
def test_daemons_on_a_private_directory_in_a_namespace_stopped_by_pid(netns):
    with OpenVSwitch(OvsConfig(netns=netns)) as ovs:
        pids = ovs.pids
        run_dir = ovs.run_dir
        assert set(pids) == {"ovsdb-server", "ovs-vswitchd"} and all(alive(p) for p in pids.values())
        assert ovs.db_socket.startswith(str(run_dir)) and not str(run_dir).startswith("/var/run")
        # ovs-vswitchd really is in the namespace, and the bridge's tap device appears there only
        assert os.stat(f"/proc/{pids['ovs-vswitchd']}/ns/net").st_ino == os.stat(f"/run/netns/{netns}").st_ino
        ovs.add_bridge("br-t")
        assert "datapath_type: netdev" in ovs.vsctl("show")
        links = subprocess.run(["ip", "-n", netns, "-o", "link"], capture_output=True, text=True).stdout
        assert " br-t:" in links
        assert "br-t" not in subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
        # fail_mode=secure: no default NORMAL flow
        assert "actions=" not in ovs.ofctl("dump-flows", "br-t")
        with pytest.raises(ValueError, match="bridge"):
            ovs.ofctl("dump-flows", "br-other")
    assert not any(alive(p) for p in pids.values())
    assert not os.path.exists(run_dir)
    links = subprocess.run(["ip", "-n", netns, "-o", "link"], capture_output=True, text=True).stdout
    assert " br-t:" not in links  # the bridge was deleted before the daemons stopped


@needs_ovs
def test_stopped_when_the_body_raises():
    with pytest.raises(RuntimeError, match="boom"):
        with OpenVSwitch() as ovs:
            pids, run_dir = ovs.pids, ovs.run_dir
            raise RuntimeError("boom")
    assert not any(alive(p) for p in pids.values())
    assert not os.path.exists(run_dir)


@needs_ovs
def test_failed_start_leaves_nothing_behind(tmp_path):
    ovs = OpenVSwitch(OvsConfig(netns=f"vkovs-missing-{os.getpid()}", parent=str(tmp_path), ready_timeout_s=5))
    with pytest.raises(OvsError, match="ovs-vswitchd|exited"):
        ovs.start()
    assert ovs.pids == {} and ovs.run_dir is None
    assert list(tmp_path.iterdir()) == []  # the private directory is gone
    # and no daemon started on it is still running (ovsdb-server had started before the failure)
    for pid in (p for p in os.listdir("/proc") if p.isdigit()):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                assert str(tmp_path).encode() not in f.read() or not alive(int(pid))
        except (FileNotFoundError, ProcessLookupError):
            pass
