"""The command line and its built-in demo."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from curves import lr_ladder, noisy_valley
from pylrcore import demo
from pylrcore.cli import main


def test_demo_range_test_is_real_and_the_suggestion_trains_better_than_too_small(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    png = tmp_path / "lr.png"
    s = demo.run(png=str(png), check=False)
    assert s.ok and s.zone is not None and s.zone[0] < s.lr < s.zone[1]
    assert s.diverged_at is not None  # the sweep went far enough to blow up, and stopped
    problem = demo.make_problem()
    assert demo.train(problem, s.lr)[0] < demo.train(problem, s.lr / 100)[0]
    out = capsys.readouterr().out
    assert "suggested lr" in out and "usable range" in out
    pytest.importorskip("matplotlib")
    assert png.stat().st_size > 10_000


def test_cli_demo_exit_code(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--png", "", "--no-check"]) == 0
    assert "suggested lr" in capsys.readouterr().out


def test_cli_suggest_from_csv(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lrs = lr_ladder(80)
    path = tmp_path / "curve.csv"
    np.savetxt(path, np.c_[lrs, noisy_valley(lrs, seed=0)], delimiter=",", header="lr,loss", comments="")
    assert main(["suggest", str(path)]) == 0
    assert "suggested lr" in capsys.readouterr().out
    assert main(["suggest", str(path), "--method", "fastai_valley"]) == 0
    assert main(["suggest", str(path), "--method", "nope"]) == 2
    assert "method must be one of" in capsys.readouterr().err


def test_cli_suggest_rejects_a_csv_without_the_columns(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("a,b\n1,2\n3,4\n")
    assert main(["suggest", str(path)]) == 2
    assert "'lr' and 'loss'" in capsys.readouterr().err


def test_cli_schedule_prints_and_plots(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    png = tmp_path / "schedules.png"
    specs = ["warmup(500) >> cosine(9500, eta_min=1e-5)", "one_cycle(10000)", "wsd(500, 7000, 2500)"]
    assert main(["schedule", *specs, "--png", str(png)]) == 0
    out = capsys.readouterr().out
    assert "warmup(500) >> cosine(9500, eta_min=1e-05)" in out and "step 9999" in out
    pytest.importorskip("matplotlib")
    assert png.stat().st_size > 10_000


def test_cli_schedule_bad_spec(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schedule", "cosine(0)"]) == 2
    assert "T_max must be >= 1" in capsys.readouterr().err
