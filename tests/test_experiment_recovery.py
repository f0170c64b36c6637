"""``vnfkit experiment recovery``: a tiny configuration end to end (tables, figures, JSON), and its
configuration checks."""

from __future__ import annotations

import json

import pytest

from vnfkit.cli import main
from vnfkit.experiments.recovery import STUDY, RecoveryConfig, markdown_tables, run_recovery


def test_small_run_writes_every_table_figure_and_the_json(tmp_path, capsys):
    out_dir, js = tmp_path / "figs", tmp_path / "r.json"
    rc = main(["experiment", "recovery", "--small", "--json", str(js), "--out", str(out_dir)])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    assert "A.3 latency" in cap.err and "Table 1" in cap.err  # progress on stderr
    names = sorted(p.name for p in out_dir.iterdir())
    assert names == ["recovery_a3.md", "recovery_a3.png", "recovery_a4.md", "recovery_a4.png", "recovery_a5.md",
                     "recovery_a5.png", "recovery_table1.md"]
    for p in out_dir.glob("*.png"):
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 5000
    for p in out_dir.glob("*.md"):
        assert "ETSI GS NFV-REL 002" in p.read_text()  # the study's numbers are named by their source
    d = json.loads(js.read_text())
    assert set(d) >= {"config", "study", "a3", "a4", "a5", "table1", "wall_s"}
    assert d["table1"]["replay"]["correct"] == d["table1"]["replay"]["trials"] == 2  # replay is always correct
    assert d["table1"]["buffer"]["correct"] == 2
    assert d["a3"]["none"]["n"] == 3000 and d["a3"]["replay"]["n"] == 3000  # every packet released, timed
    assert d["a3"]["buffer-50ms"]["p50_us"] > d["a3"]["none"]["p50_us"]  # buffering holds outputs to a checkpoint
    assert set(d["a4"]) == {"mazunat", "monitor"} and all(v["none_pps"] > 0 and v["replay_pps"] > 0
                                                           for v in d["a4"].values())
    assert all(d["a5"][nf][iv]["replay_ms_mean"] > 0 for nf in d["a5"] for iv in ("20", "50"))
    assert "| mazunat |" in cap.out and "5.6 %" in cap.out  # the study's MazuNAT loss beside ours


def test_config_is_validated_naming_the_field():
    with pytest.raises(ValueError, match="nfs"):
        run_recovery(RecoveryConfig(nfs=("wanopt",)), quiet=True)
    with pytest.raises(ValueError, match="table1_trials"):
        RecoveryConfig(table1_trials=0).validated()
    with pytest.raises(ValueError, match="rate_pps"):
        RecoveryConfig(rate_pps=-1.0).validated()
    with pytest.raises(ValueError, match="intervals_ms"):
        RecoveryConfig(intervals_ms=()).validated()


def test_bad_cli_argument_is_one_line_and_non_zero(capsys):
    with pytest.raises(SystemExit) as e:
        main(["experiment", "recovery", "--seed", "x"])
    assert e.value.code != 0
    assert "seed" in capsys.readouterr().err


def test_markdown_tables_put_the_study_beside_ours():
    out = {"config": {"intervals_ms": [20]}, "table1": {"replay": {"correct": 3, "trials": 3, "added_median_us": 4.0}},
           "a3": {"none": {"p50_us": 70.0, "added_median_us": 0.0}}, "a4": {"mazunat": {"none_pps": 2e6, "replay_pps": 1.9e6,
                                                                                        "loss_pct": 5.0}},
           "a5": {"mazunat": {"20": {"replay_ms_mean": 3.5}}}}
    t = markdown_tables(out)
    assert "| replay | 3 / 3 | guaranteed | 4.0 us | 10s of us |" in t["table1"]
    assert "| mazunat | 2000 | 1900 | 5.0 % | 5.6 % |" in t["a4"]
    assert "| mazunat | 3.5 |" in t["a5"] and STUDY["a5"]["replay_ms_range"] in t["a5"]
