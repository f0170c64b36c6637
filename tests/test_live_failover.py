"""A live TCP download through `vnfkit live mazunat --strategy replay` survives a SIGKILL of the master.

With Redis: client (10.0.0.10) -- the input handler's tc switch -- master host / backup host --
switch -- server (192.0.2.100), the Redis primary and replica on a storage host reached by each node
over its own link, the supervisor in the caller's namespace (:func:`vnfkit.testbed.failover_testbed`,
``--topology``). The switch sends the peers' frames to the master and a copy to the backup until the
backup's failure detector reprograms it; the test checks that the switch's counters show frames to
the backup after the switch-over and that the fenced master's ports get nothing out (frames a zombie
sends from the master host are dropped and counted). With file storage: client -- NAT host
(supervisor, master and backup on the same interfaces) -- server. curl downloads a file; once part of it
has arrived, the master's whole process group gets SIGKILL; the backup restores, replays and takes
over; the download must complete byte-exact, with the largest gap between data segments reaching
the client (from a capture, within 0.5 s of the kill) under TCP's 200 ms minimum retransmission
timeout. Every process is started through the testbed and stopped by pid; nothing is left behind,
even on failure.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from _live import HTTP_PORT, LISTENER, PROBE, SERVER, checksum_report, env, start_capture, wait_for

from vnfkit.recovery.storage.redis_servers import redis_server_path
from vnfkit.testbed import Testbed, failover_testbed, leftovers, missing_tools, nat_testbed

_TOOLS = missing_tools(("ip", "ethtool", "curl", "tshark"))
pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="live failover tests need root (namespaces, AF_PACKET)"),
    pytest.mark.skipif(bool(_TOOLS), reason=f"live failover tests need {', '.join(_TOOLS)} on PATH"),
]

FILE_BYTES = 24 << 20
KILL_AFTER_BYTES = FILE_BYTES // 4
MAX_GAP_MS = 200.0
ZOMBIE_FRAMES = 5

# From the (fenced) master host: frames to the client with a marker, as a zombie master would send.
ZOMBIE = r"""
import socket, sys
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW); s.bind((sys.argv[1], 0))
dst, src = bytes.fromhex(sys.argv[2].replace(":", "")), bytes.fromhex(sys.argv[3].replace(":", ""))
for i in range(int(sys.argv[4])):
    s.send(dst + src + b"\x88\xb5" + b"vnfkit-zombie" + bytes(50))
"""


def _data_times(cap: Path, sport: int) -> list[float]:
    """Capture times (epoch s) of the TCP segments with payload from port `sport`."""
    r = subprocess.run(["tshark", "-n", "-r", str(cap), "-Y", f"tcp.srcport == {sport} && tcp.len > 0",
                        "-T", "fields", "-e", "frame.time_epoch"], capture_output=True, text=True, timeout=120,
                       check=True)
    return [float(x) for x in r.stdout.split()]


def _largest_gap(times: list[float], around: float, window_s: float = 0.5) -> tuple[float, float]:
    """The largest gap (ms) between consecutive data segments within `window_s` of `around`, and
    when it began (ms relative to `around`)."""
    ts = [t for t in times if around - window_s <= t <= around + window_s]
    best, at = 0.0, 0.0
    for a, b in zip(ts, ts[1:]):
        if b - a > best:
            best, at = b - a, a - around
    return best * 1e3, at * 1e3


def _cmdlines(pids: list[str]) -> list[str]:
    out = []
    for pid in pids:
        try:
            out.append(f"{pid}: " + Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode())
        except OSError:
            out.append(f"{pid}: (gone)")
    return out


def _failover(tmp_path: Path, capsys: pytest.CaptureFixture[str], storage: str, sig: int = signal.SIGKILL,
              heartbeat_timeout_ms: int = 500) -> None:
    """The whole check (Redis: on the separate-hosts topology; file: on one NAT host); ``sig``: SIGKILL (a dead master) or SIGSTOP (a hung one, which the backup's
    heartbeat timeout catches and fences with a SIGKILL of its process group before taking over)."""
    shown: list[str] = []  # the measured figures, printed past pytest's capture once the run passed

    def say(*parts: object) -> None:
        line = " ".join(str(x) for x in parts)
        shown.append(line)
        print(line)  # captured: part of the failure report if an assertion below fails

    payload = os.urandom(FILE_BYTES)
    www = tmp_path / "www"
    www.mkdir()
    (www / "blob.bin").write_bytes(payload)
    want = hashlib.sha256(payload).hexdigest()
    peers, accepted = tmp_path / "peers.log", tmp_path / "accepted.log"
    peers.touch()
    accepted.touch()
    cfg = tmp_path / "nat.json"
    # a small NAT for a three-host testbed: 4 k flows, 1 k ports (its checkpoint is ~90 kB)
    cfg.write_text(json.dumps({"max_flows": 4096, "port_lo": 60000, "port_hi": 61023, "icmp_id_lo": 60000,
                               "icmp_id_hi": 61023}))
    separate = storage == "redis"
    with Testbed() as tb:
        prefix = tb.prefix
        ft = failover_testbed(tb) if separate else None
        topo = ft.nat if ft is not None else nat_testbed(tb)
        node_hosts = ["master", "backup", "storage"] if separate else ["nat"]
        extra: list[str] = []
        if ft is not None:
            (tmp_path / "topology.json").write_text(ft.to_json())
            extra = ["--topology", str(tmp_path / "topology.json")]
        cap_client, cap_server = tmp_path / "client.pcap", tmp_path / "server.pcap"
        tsh = [start_capture(tb, "client", topo.client_if, cap_client),
               start_capture(tb, "server", topo.server_if, cap_server)]
        tb.popen("server", [sys.executable, "-c", SERVER, topo.server_ip, str(HTTP_PORT), str(peers), str(www)],
                 env=env(), stderr=subprocess.DEVNULL)
        tb.popen("client", [sys.executable, "-c", LISTENER, topo.client_ip, "8080", str(accepted)],
                 env=env(), stderr=subprocess.DEVNULL)
        nat_err, nat_out = tmp_path / "nat.err", tmp_path / "nat.out"
        nat = tb.popen(None if separate else "nat", [sys.executable, "-m", "vnfkit", "live", "mazunat", "--inside", topo.inside_if,
                               "--outside", topo.outside_if, "--inside-peer", topo.client_mac,
                               "--outside-peer", topo.server_mac, "--strategy", "replay", "--storage", storage,
                               "--config", str(cfg), "--heartbeat-timeout-ms", str(heartbeat_timeout_ms), *extra],
                       env=env(), stdout=open(nat_out, "wb"), stderr=open(nat_err, "wb"))
        wait_for(lambda: b"ready" in nat_err.read_bytes() or nat.poll() is not None, 90, "vnfkit live: ready")
        assert nat.poll() is None, nat_err.read_text()
        m = re.search(r"master pgid (\d+), backup pgid (\d+)", nat_err.read_text())
        assert m, nat_err.read_text()
        master_pgid = int(m.group(1))
        wait_for(lambda: tb.run("server", ["curl", "-s", "-o", "/dev/null", "--max-time", "2",
                                           f"http://{topo.server_ip}:{HTTP_PORT}/"], timeout=10).returncode == 0,
                 30, "the HTTP server")
        peers.write_text("")

        got = tmp_path / "got.bin"
        curl_out = tmp_path / "curl.out"
        curl = tb.popen("client", ["curl", "-sS", "--max-time", "120", "-o", str(got), "-w",
                                   "%{size_download} %{time_total}", f"http://{topo.server_ip}:{HTTP_PORT}/blob.bin"],
                        stdout=open(curl_out, "wb"), stderr=subprocess.STDOUT)
        wait_for(lambda: (got.exists() and got.stat().st_size >= KILL_AFTER_BYTES) or curl.poll() is not None, 60,
                 f"{KILL_AFTER_BYTES} bytes downloaded")
        assert curl.poll() is None, f"the download ended before the kill: {curl_out.read_text()}"
        kill_epoch, kill_mono = time.time(), time.monotonic_ns()
        os.killpg(master_pgid, sig)
        at_kill = got.stat().st_size
        assert curl.wait(timeout=150) == 0, f"curl failed: {curl_out.read_text()}\nNAT: {nat_err.read_text()}"
        size, secs = curl_out.read_text().split()
        have = hashlib.sha256(got.read_bytes()).hexdigest()
        say(f"\ndownload through the failing-over NAT ({storage}): {size} bytes in {float(secs):.2f} s, master "
              f"killed at {at_kill} bytes; sha256 sent {want}, received {have}")
        assert int(size) == FILE_BYTES and have == want

        probe = tb.run("server", [sys.executable, "-c", PROBE, topo.public_ip, "8080", "2"], timeout=30)
        say(f"after failover: unsolicited inbound connection to {topo.public_ip}:8080 -> {probe.stdout.strip()}")
        assert probe.stdout.strip() in ("timeout", "refused"), probe.stdout + probe.stderr
        assert accepted.read_text() == ""
        r2 = tb.run("client", ["curl", "-sS", "--max-time", "30", "-o", "/dev/null", "-w", "%{http_code}",
                               f"http://{topo.server_ip}:{HTTP_PORT}/"], timeout=60)
        say(f"after failover: a new connection -> HTTP {r2.stdout}")
        assert r2.returncode == 0 and r2.stdout == "200", r2.stderr
        if ft is not None:  # the switch-over happened, and the fenced master gets nothing out
            sw = ft.steering
            to_backup = {side: sw.delivered(side, "backup") for side in ("inside", "outside")}
            to_master = {side: sw.delivered(side, "master") for side in ("inside", "outside")}
            fenced_before = {side: sw.dropped(side, "master") for side in ("inside", "outside")}
            z = tb.run("master", [sys.executable, "-c", ZOMBIE, topo.inside_if, topo.client_mac, topo.inside_mac,
                                  str(ZOMBIE_FRAMES)], timeout=30)
            assert z.returncode == 0, z.stderr
            wait_for(lambda: sw.dropped("inside", "master") >= fenced_before["inside"] + ZOMBIE_FRAMES, 5,
                     "the zombie's frames dropped at the switch")
            fenced = {side: sw.dropped(side, "master") for side in ("inside", "outside")}
            say(f"switch after the switch-over: peers' frames to the backup {to_backup}, to the master {to_master}; "
                f"fenced master ports dropped {fenced_before} before the zombie, {fenced} after it sent "
                f"{ZOMBIE_FRAMES} frames")
            assert min(to_backup.values()) > 0 and to_master == {"inside": 0, "outside": 0}
            assert fenced["inside"] == fenced_before["inside"] + ZOMBIE_FRAMES

        assert Testbed.stop(nat, grace_s=20) == 0, nat_err.read_text()
        # Nothing may run on the node and storage hosts any more: no node, no Redis. (multiprocessing's
        # resource tracker, which ignores SIGTERM, leaves by itself once its last client is gone.)
        ns_pids: list[str] = []

        def nat_host_empty() -> bool:
            ns_pids[:] = [pid for h in node_hosts for pid in subprocess.run(
                ["ip", "netns", "pids", tb.hosts[h].netns], capture_output=True, text=True, timeout=10,
                check=True).stdout.split()]
            return not ns_pids

        deadline = time.monotonic() + 10
        while not nat_host_empty() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert ns_pids == [], f"processes left on {node_hosts}: {_cmdlines(ns_pids)}"
        for p in tsh:
            Testbed.stop(p)
    assert leftovers(prefix) == []

    print("NAT stderr:", nat_err.read_text().strip())
    summary = json.loads(nat_out.read_text().strip().splitlines()[-1])
    fo = summary["failover"]
    assert not os.path.exists(f"/dev/shm/{summary['heartbeat_board']}"), "the heartbeat board outlived the run"
    assert summary["storage_path"] and not os.path.exists(summary["storage_path"]), "the storage outlived the run"
    assert summary["master"] is None, "the killed master cannot have written a summary"
    # a SIGKILL is told by the master's lifeline (before its unmap), else by its pidfd; a SIGSTOP by the heartbeat
    assert fo is not None and fo["reason"] in (("died", "exited") if sig == signal.SIGKILL else ("heartbeat",)), summary
    assert fo["steered"] is separate, fo
    detect_ms = (fo["detected_ns"] - kill_mono) / 1e6
    live_ms = (fo["live_ns"] - kill_mono) / 1e6
    times = _data_times(cap_client, HTTP_PORT)
    gap_ms, gap_at = _largest_gap(times, kill_epoch)
    before = [t for t in times if t < kill_epoch - 0.5]
    calm_ms = max((b - a for a, b in zip(before, before[1:])), default=0.0) * 1e3
    last_before = max((t for t in times if t <= kill_epoch), default=kill_epoch)
    first_after = min((t for t in times if t > kill_epoch), default=kill_epoch)
    across_ms = (first_after - last_before) * 1e3
    say(f"failover ({storage}, {signal.Signals(sig).name}): detected {detect_ms:.2f} ms after the signal, "
          f"backup live {live_ms:.1f} ms after it (restore {fo['restore_ms']} ms, replay {fo['replay_ms']} ms of "
          f"{fo['replayed_packets']} packets, "
          f"catch-up {fo['catch_up_ms']} ms of {fo['caught_up_frames']} frames"
          + (f"; switch reprogrammed by {fo['switched_by_ms']} ms after detection)" if separate else ")"))
    say(f"gap in the data reaching the client across the kill: {across_ms:.1f} ms; "
          f"largest gap between data segments reaching the client within 0.5 s of the kill: {gap_ms:.1f} ms "
          f"(starting {gap_at:+.1f} ms from the kill); largest gap before the kill, with no failure: {calm_ms:.1f} ms")
    backup = summary["backup"]
    assert backup["vnf"]["translations"] > 0 and backup["vnf"]["reverse_translations"] > 0
    assert backup["drops"].get("no-mapping", 0) >= 1  # the probe's SYN(s)
    reports = {name: checksum_report(cap) for name, cap in (("client", cap_client), ("server", cap_server))}
    for name, rep in reports.items():
        say(f"tshark {name} side: {rep}")
        assert rep["frames"] > FILE_BYTES // 1500 and rep["bad"] == 0
    assert reports["server"]["private_addr"] == 0
    if separate:  # nothing the zombie sent reached the client
        z = subprocess.run(["tshark", "-n", "-r", str(cap_client), "-Y", 'frame contains "vnfkit-zombie"', "-T", "fields",
                            "-e", "frame.number"], capture_output=True, text=True, timeout=120, check=True)
        say(f"zombie frames in the client's capture: {len(z.stdout.split())}")
        assert z.stdout.split() == []
    seen = sorted(set(peers.read_text().split()))
    say(f"server saw peers: {seen}")
    assert seen == [topo.public_ip]
    if sig == signal.SIGKILL:  # (a hung master is only suspected after the heartbeat timeout)
        assert across_ms <= gap_ms < MAX_GAP_MS, f"the flow stopped for {gap_ms:.1f} ms around the failover"
    with capsys.disabled():
        print("\n" + "\n".join(line.strip("\n") for line in shown))


@pytest.mark.skipif(redis_server_path() is None, reason="needs redis-server (Debian package redis-server)")
def test_download_survives_master_sigkill_redis(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _failover(tmp_path, capsys, "redis")


def test_download_survives_master_sigkill_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _failover(tmp_path, capsys, "file")


@pytest.mark.skipif(redis_server_path() is None, reason="needs redis-server (Debian package redis-server)")
def test_hung_master_is_fenced_and_replaced(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _failover(tmp_path, capsys, "redis", signal.SIGSTOP, heartbeat_timeout_ms=400)


def test_live_cli_refuses_bad_recovery_combinations() -> None:
    base = [sys.executable, "-m", "vnfkit", "live", "mazunat", "--inside", "lo", "--outside", "vknosuch1",
            "--inside-peer", "02:00:00:00:00:01", "--outside-peer", "02:00:00:00:00:02"]
    cases = {
        ("--strategy", "replay", "--storage", "memory"): "--storage memory: in-process storage dies with the master",
        ("--strategy", "replay", "--storage", "none"): "--storage none: --strategy replay needs stable storage",
        ("--storage", "redis"): "--storage redis: needs --strategy replay",
        ("--strategy", "replay", "--storage", "redis", "--storage-dir", "/tmp/x"): "--storage-dir: only with",
    }
    for extra, msg in cases.items():
        r = subprocess.run([*base, *extra], capture_output=True, text=True, timeout=60, env=env(), check=False)
        assert r.returncode == 1, (extra, r.stderr)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("vnfkit live: error: ") and msg in lines[0], (extra, r.stderr)
    r = subprocess.run([*base, "--strategy", "replay", "--storage", "file"], capture_output=True, text=True,
                       timeout=60, env=env(), check=False)
    assert r.returncode == 1 and r.stderr.strip() == (
        "vnfkit live: error: interface: no interface named 'vknosuch1' in this network namespace"), r.stderr
