"""`vnfkit experiment scale`: JSON, table, figures; the live mode with real Monitor instances."""

import json

import pytest

from vnfkit.cli import main
from vnfkit.scaleout import SoftwareSwitch
from vnfkit.scaleout.live import run_live

KEYS = {"imbalance", "convergence_s", "peak_hw_rules", "peak_sw_rules", "affinity_violations", "state_bytes_moved"}


def test_cli_experiment_scale_writes_json_table_and_figures(tmp_path, capsys):
    js, out = tmp_path / "scale.json", tmp_path / "figs"
    rc = main(["experiment", "scale", "--duration", "1.5", "--seed", "2", "--json", str(js), "--out", str(out),
               "--quiet"])
    assert rc == 0
    data = json.loads(js.read_text())
    assert set(data["strategies"]) == {"migration-avoidance", "never-migrate", "always-migrate"}
    for name, row in data["strategies"].items():
        assert KEYS <= set(row), name
        assert row["affinity_violations"] == 0 and row["peak_hw_rules"] <= 2048
    assert data["strategies"]["never-migrate"]["hw_rules_needed"] > 2048
    assert data["strategies"]["always-migrate"]["state_bytes_moved"] > 0
    assert data["elastic"]["affinity_violations"] == 0
    for f in ("scale_a1_load.png", "scale_a2_latency_bandwidth.png", "scale_elastic.png"):
        assert (out / f).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = (out / "scale_table.md").read_text()
    assert "migration-avoidance" in table and "packets that reached the wrong instance" in table
    assert "| imbalance after convergence |" in capsys.readouterr().out


@pytest.mark.parametrize("argv", [["--seed", "-1"], ["--mode", "ovs"], ["--duration", "0"], ["--duration", "x"]])
def test_cli_hostile_arguments(argv, capsys):
    with pytest.raises(SystemExit) as e:
        main(["experiment", "scale", *argv])
    assert e.value.code == 2
    assert "error" in capsys.readouterr().err


def test_cli_unwritable_json_is_one_line_error(tmp_path, capsys):
    rc = main(["experiment", "scale", "--duration", "1", "--quiet", "--json", str(tmp_path / "no" / "x.json")])
    assert rc == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("vnfkit experiment: error:")


def test_live_mode_real_monitors_keep_affinity():
    r = run_live(1, flows=600, packets=40_000, rate_pps=20_000.0, capacity_pps=14_000.0, quiet=True)
    assert r["processed"] == 40_000 and r["affinity_violations"] == 0 and r["state_missing_after_process"] == 0
    assert r["transfers"][0]["kind"] == "split" and r["transfers"][0]["old_flows"] > 10 and r["detoured_packets"] > 0


def test_live_checker_catches_missing_exceptions(monkeypatch):
    monkeypatch.setattr(SoftwareSwitch, "add_exceptions", lambda self, keys, target: None)
    r = run_live(1, flows=600, packets=40_000, rate_pps=20_000.0, capacity_pps=14_000.0, quiet=True)
    assert r["affinity_violations"] > 0

