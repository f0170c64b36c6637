"""`vnfkit experiment scale --switch ovs`: argument checks and a clear one-line error without OVS."""

from vnfkit.cli import main


def test_cli_switch_ovs_needs_live_mode(capsys):
    rc = main(["experiment", "scale", "--switch", "ovs", "--quiet"])
    assert rc == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--mode live" in err[0]


def test_cli_switch_ovs_without_ovs_is_one_line_error(monkeypatch, capsys):
    from vnfkit.testbed import ovs as ovs_mod

    monkeypatch.setattr(ovs_mod.os, "geteuid", lambda: 1000)  # as a user who is not root
    rc = main(["experiment", "scale", "--mode", "live", "--switch", "ovs", "--quiet"])
    assert rc == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("vnfkit experiment: error: --switch ovs:") and "root" in err[0]
