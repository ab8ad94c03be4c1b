"""The command line and its built-in demo."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import List

import numpy as np
import pytest
from procs import pylrcore_env

from curves import lr_ladder, noisy_valley
from pylrcore.cli import demo
from pylrcore.cli import main


@pytest.mark.slow  # the whole demo: a range test and three training runs
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


@pytest.mark.slow  # the whole demo: a range test and three training runs
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
    assert "warmup(500) >> cosine(9500, eta_min=1e-05)" in out and "step 10000" in out
    pytest.importorskip("matplotlib")
    assert png.stat().st_size > 10_000


def test_cli_schedule_plots_each_schedule_over_its_own_length(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    png = tmp_path / "own.png"
    assert main(["schedule", "cosine(100)", "step(30)", "one_cycle(500)", "--png", str(png)]) == 0
    out = capsys.readouterr().out
    assert "step 100: 0" in out  # cosine(100) to its end, not a spike in 10,000 steps
    assert "step 9999" in out  # step() has no length
    assert "step 500" in out
    pytest.importorskip("matplotlib")
    assert png.stat().st_size > 10_000


def test_cli_schedule_bad_spec(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schedule", "cosine(0)"]) == 2
    assert "T_max must be >= 1" in capsys.readouterr().err


def test_cli_schedule_plot_is_an_alias_of_png(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("matplotlib")
    png = tmp_path / "plot.png"
    assert main(["schedule", "cosine(100)", "--steps", "100", "--plot", str(png)]) == 0
    assert f"plot written to {png}" in capsys.readouterr().out and png.stat().st_size > 1000


def test_cli_demo_quadratic(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--quadratic"]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line for line in out.splitlines() if line.split()[0] in ("0.001", "0.1", "1.1")}
    assert "too slow" in rows["0.001"] and "slow:" in rows["0.001"]
    assert "converges" in rows["0.1"] and "healthy:" in rows["0.1"]
    # lr 1.1: f(x_1) = 36 > 25 = f(x0) at step 1; |x| > 1000 first at step 30 (5 * 1.2^30 = 1187).
    assert rows["1.1"].split()[3:6] == ["diverges", "1", "30"] and "exploding:" in rows["1.1"]
    assert "f(x_k) > f(x0)" in out
    assert main(["demo", "--quadratic", "--steps", "100"]) == 0
    assert "100 steps" in capsys.readouterr().out


def _same_pylrcore_env() -> dict:
    return pylrcore_env()  # the pylrcore under test, never an unbuilt source tree


@pytest.mark.slow  # a Python subprocess
def test_python_m_pylrcore_demo_quadratic(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "pylrcore", "demo", "--quadratic"], env=_same_pylrcore_env(),
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "diverges" in done.stdout and done.stderr == ""


def _history(n: int = 200) -> np.ndarray:
    return 0.1 + 2.0 * np.exp(-np.arange(n) / 30.0)


@pytest.mark.parametrize("fmt", ["csv_loss", "csv_unnamed", "csv_column", "json_list", "json_loss", "json_losses",
                                 "json_column"])
def test_cli_diagnose_reads_csv_and_json(fmt: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from pylrcore.diagnosis import diagnose

    losses = _history()
    extra: List[str] = []
    if fmt == "csv_loss":
        path = tmp_path / "h.csv"
        np.savetxt(path, np.c_[np.arange(len(losses)), losses], delimiter=",", header="step,loss", comments="")
    elif fmt == "csv_unnamed":
        path = tmp_path / "h.txt"
        np.savetxt(path, losses)
    elif fmt == "csv_column":
        path = tmp_path / "h.csv"
        np.savetxt(path, np.c_[losses, -losses], delimiter=",", header="train_loss,other", comments="")
        extra = ["--column", "train_loss"]
    else:
        path = tmp_path / "h.json"
        values = [float(v) for v in losses]
        doc = {"json_list": values, "json_loss": {"loss": values, "step": list(range(len(values)))},
               "json_losses": {"losses": values}, "json_column": {"val": values}}[fmt]
        path.write_text(json.dumps(doc))
        extra = ["--column", "val"] if fmt == "json_column" else []
    assert main(["diagnose", str(path), "--lr", "0.1", *extra]) == 0
    assert capsys.readouterr().out.strip() == str(diagnose(losses, lr=0.1))


def test_cli_diagnose_nan_and_exit_0_for_a_bad_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "boom.json"
    path.write_text("[" + ", ".join(["2.0"] * 30 + ["3.0", "NaN", "null"]) + "]")  # JSON null reads as NaN
    assert main(["diagnose", str(path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("exploding: loss became non-finite at step 31")
    from pylrcore.diagnosis import diagnose

    assert out.strip() == str(diagnose([2.0] * 30 + [3.0, float("nan"), float("nan")]))


def _bad_cases(tmp: Path) -> "dict[str, tuple[List[str], str]]":
    (tmp / "nocol.csv").write_text("step,val\n" + "".join(f"{i},{i}\n" for i in range(20)))
    (tmp / "two.csv").write_text("".join(f"{i},{i}\n" for i in range(20)))
    (tmp / "word.csv").write_text("loss\n1\n2\nabc\n")
    (tmp / "bad.json").write_text("[1, 2,")
    (tmp / "obj.json").write_text('{"acc": [1, 2]}')
    (tmp / "str.json").write_text('{"loss": [1, "x"]}')
    (tmp / "short.json").write_text("[1, 2, 3]")
    (tmp / "ok.json").write_text(json.dumps([1.0] * 20))
    (tmp / "latin1.csv").write_bytes(b"loss\n\xff\xfe\n")
    (tmp / "empty.csv").write_text("")
    return {
        "missing file": (["diagnose", str(tmp / "nope.csv")], "No such file"),
        "a directory": (["diagnose", str(tmp)], str(tmp)),
        "unknown column": (["diagnose", str(tmp / "nocol.csv")], "no column 'loss' (columns: step, val)"),
        "unknown --column": (["diagnose", str(tmp / "nocol.csv"), "--column", "x"], "no column 'x'"),
        "unnamed columns": (["diagnose", str(tmp / "two.csv")], "2 unnamed columns"),
        "bad number in csv": (["diagnose", str(tmp / "word.csv")], "row 4: expected a number, got 'abc'"),
        "bad json": (["diagnose", str(tmp / "bad.json")], "not valid JSON"),
        "json without loss": (["diagnose", str(tmp / "obj.json")], "no 'loss' or 'losses' key"),
        "json string": (["diagnose", str(tmp / "str.json")], "item 1: expected a number, got 'x'"),
        "too short": (["diagnose", str(tmp / "short.json")], "at least 10 are needed"),
        "bad lr": (["diagnose", str(tmp / "ok.json"), "--lr", "-1"], "lr must be a finite number > 0"),
        "lr not a number": (["diagnose", str(tmp / "ok.json"), "--lr", "abc"], "invalid float value: 'abc'"),
        "not utf-8": (["diagnose", str(tmp / "latin1.csv")], "codec can't decode"),
        "empty csv": (["diagnose", str(tmp / "empty.csv")], "holds no rows"),
        "suggest missing": (["suggest", str(tmp / "nope.csv")], "No such file"),
        "suggest columns": (["suggest", str(tmp / "nocol.csv")], "'lr' and 'loss'"),
        "schedule spec": (["schedule", "cosine(0)"], "T_max must be >= 1"),
        "schedule syntax": (["schedule", "warmup(10) >>"], ""),
        "schedule steps": (["schedule", "cosine(10)", "--steps", "0"], "--steps must be >= 1"),
        "demo steps": (["demo", "--quadratic", "--steps", "3"], "steps must be an integer >= 9"),
        "unknown command": (["bogus"], "invalid choice: 'bogus'"),
    }


@pytest.mark.parametrize("case", list(_bad_cases(Path("/tmp"))))
def test_cli_usage_errors_are_one_line_and_exit_2(case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv, expected = _bad_cases(tmp_path)[case]
    assert main(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("pylrcore: ") and expected in lines[0], captured.err
    assert "Traceback" not in captured.err + captured.out


@pytest.mark.parametrize("where", ["before", "after"])
def test_cli_debug_reraises(where: str, tmp_path: Path) -> None:
    argv = ["diagnose", str(tmp_path / "nope.csv")]
    argv = ["--debug", *argv] if where == "before" else [*argv, "--debug"]
    with pytest.raises(FileNotFoundError):
        main(argv)
    with pytest.raises(ValueError, match="T_max must be >= 1"):
        main(["--debug", "schedule", "cosine(0)"])


@pytest.mark.slow  # a Python subprocess
def test_cli_error_through_the_real_entry_has_no_traceback(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "pylrcore", "diagnose", str(tmp_path / "nope.csv")],
                          env=_same_pylrcore_env(), cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr and "No such file" in done.stderr


FACTORY = """
import torch

def make():
    torch.manual_seed(0)
    x = torch.randn(256, 8)
    y = x @ torch.randn(8, 1)
    model = torch.nn.Linear(8, 1)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=32)
    return model, torch.optim.SGD(model.parameters(), lr=1e-5), torch.nn.MSELoss(), loader

def wrong():
    return 3
"""


def test_cli_find_runs_the_range_test_on_a_user_factory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("torch")
    script = tmp_path / "train.py"
    script.write_text(FACTORY)
    out_json = tmp_path / "r.json"
    code = main(["find", f"{script}:make", "--num-iter", "60", "--png", "", "--json", str(out_json)])
    text = capsys.readouterr().out
    assert code == 0 and "suggested lr" in text and "diagnosis:" in text
    import json

    assert json.loads(out_json.read_text())["suggestion"] is not None


@pytest.mark.parametrize(
    ("target", "words"),
    [("nothing_here_module:make", "cannot import"), ("{script}:missing", "has no function"),
     ("{script}:wrong", "must return (model, optimizer, criterion, train_loader)"), ("no-colon", "MODULE:FACTORY")],
)
def test_cli_find_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str], target: str, words: str) -> None:
    pytest.importorskip("torch")
    script = tmp_path / "train.py"
    script.write_text(FACTORY)
    assert main(["find", target.format(script=script), "--png", ""]) == 2
    err = capsys.readouterr().err
    assert words in err and "Traceback" not in err


# ---- one divergence factor, one divergence lr (issue 11, item 14) ------------------------------------


def test_cli_find_and_suggest_read_the_same_curve_the_same_way(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`find` stopped at 5x its best and `suggest` cut at 4x: on one curve they disagreed."""
    pytest.importorskip("torch")
    script = tmp_path / "train.py"
    script.write_text(FACTORY)
    out_json = tmp_path / "r.json"
    assert main(["find", f"{script}:make", "--num-iter", "80", "--png", "", "--json", str(out_json)]) == 0
    found = capsys.readouterr().out.splitlines()[0]
    data = json.loads(out_json.read_text())
    lrs = np.array(data["lrs"])
    losses = np.array([np.nan if v is None else v for v in data["losses"]])
    csv_path = tmp_path / "curve.csv"
    np.savetxt(csv_path, np.c_[lrs, losses], delimiter=",", header="lr,loss", comments="")
    assert main(["suggest", str(csv_path)]) == 0
    assert capsys.readouterr().out.splitlines()[0] == found
    assert "diverged at lr" in found


def test_cli_diverge_factor_option(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lrs = lr_ladder(100)
    path = tmp_path / "curve.csv"
    np.savetxt(path, np.c_[lrs, noisy_valley(lrs, seed=0, noise=0.02)], delimiter=",", header="lr,loss", comments="")
    assert main(["suggest", str(path)]) == 0
    default = capsys.readouterr().out
    assert main(["suggest", str(path), "--diverge-factor", "8"]) == 0
    wider = capsys.readouterr().out
    at = [float(text.split("diverged at lr ")[1].split()[0]) for text in (default, wider)]
    assert at[0] < at[1]


@pytest.mark.slow  # the whole demo: a range test and three training runs
def test_demo_names_the_divergence_lr_once(capsys: pytest.CaptureFixture[str]) -> None:
    """The demo printed 'diverged ... at lr 13.1', 'diverged at lr 6.66' and 'diverged at lr 13'."""
    demo.run(png=None, check=False)
    out = capsys.readouterr().out
    assert len(re.findall(r"diverged .*?at lr", out)) == 1, out


# --- issue 11 item 15: each line of the hostile-input reproduction (13_cli_tracebacks.sh) -----------

_CURVE_ROWS = [(1e-5 * 1.122 ** i, 2.0 - 0.01 * i) for i in range(60)]


def _hostile_files(tmp: Path) -> None:
    (tmp / "empty.csv").write_text("")
    (tmp / "d_bigint.json").write_text("[" + "1" + "0" * 400 + ", 1.0]")
    (tmp / "d_deep.json").write_text("[" * 100_000 + "]" * 100_000)
    (tmp / "quoted.csv").write_text('"lr","loss"\n' + "".join(f'"{lr!r}","{loss!r}"\n' for lr, loss in _CURVE_ROWS))
    (tmp / "bom.csv").write_bytes(b"\xef\xbb\xbf" + ("lr,loss\n" + "".join(f"{lr!r},{loss!r}\n" for lr, loss in _CURVE_ROWS)).encode())
    (tmp / "mixed.csv").write_text("lr,loss\n0.001,1.0\n0.002,abc\n0.003,0.9\n")
    (tmp / "slow.json").write_text(json.dumps([2.0 - 0.1 * i for i in range(11)]))
    (tmp / "mytrain.py").write_text(FACTORY)


_CHAIN = " >> ".join(["cosine(10)"] * 3000)

# argv -> words the one-line error must contain
_HOSTILE_FAILURES = {
    "suggest empty.csv": (["suggest", "empty.csv"], "holds no rows"),
    "diagnose d_bigint.json": (["diagnose", "d_bigint.json"], "item 0: the integer 1000"),
    "diagnose d_deep.json": (["diagnose", "d_deep.json"], "nests too deeply"),
    "schedule 3000 chained": (["schedule", _CHAIN], "nests too deeply"),
    "find --device banana": (["find", "mytrain.py:make", "--device", "banana"], "--device 'banana' is not a device"),
    "suggest mixed.csv": (["suggest", "mixed.csv"], "row 3, column 'loss': expected a number, got 'abc'"),
    "diagnose d_bigint.json --lr 1e308": (["diagnose", "d_bigint.json", "--lr", "1e308"], "too large for a float64"),
}


@pytest.mark.parametrize("case", list(_HOSTILE_FAILURES))
def test_cli_hostile_inputs_fail_in_one_line(
    case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _hostile_files(tmp_path)
    monkeypatch.chdir(tmp_path)
    argv, words = _HOSTILE_FAILURES[case]
    assert main(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("pylrcore: ") and words in lines[0], captured.err
    assert "Traceback" not in captured.err + captured.out


def test_cli_find_device_cuda_without_cuda_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    _hostile_files(tmp_path)
    monkeypatch.chdir(tmp_path)
    assert main(["find", "mytrain.py:make", "--device", "cuda", "--png", ""]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("pylrcore: --device 'cuda' is not available here")


@pytest.mark.parametrize("name", ["quoted.csv", "bom.csv"])
def test_cli_suggest_reads_what_diagnose_reads(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _hostile_files(tmp_path)
    monkeypatch.chdir(tmp_path)
    lrs, losses = np.array(_CURVE_ROWS).T
    from pylrcore import suggest

    assert main(["suggest", name]) == (0 if suggest(lrs, losses).ok else 1)
    assert capsys.readouterr().out.strip() == str(suggest(lrs, losses))


def test_cli_schedule_with_the_largest_step_count(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["schedule", "cosine(100)", "--steps", str(2**63 - 1)]) == 0
    out = capsys.readouterr().out
    assert f"step {2**63 - 2}: 0" in out and "step 0: 0.001" in out
    pytest.importorskip("matplotlib")
    assert main(["schedule", "warm_restarts(7, T_mult=5)", "--steps", str(2**63 - 1), "--png", str(tmp_path / "s.png")]) == 0
    assert main(["schedule", "cosine(100)", "--steps", str(2**63)]) == 2
    assert "--steps must be <= 2**63 - 1" in capsys.readouterr().err


def test_cli_diagnose_with_a_huge_lr_still_answers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _hostile_files(tmp_path)
    monkeypatch.chdir(tmp_path)
    assert main(["diagnose", "slow.json", "--lr", "1e308"]) == 0
    assert capsys.readouterr().out.startswith("slow:")


def test_cli_find_imports_a_module_from_the_current_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("torch")
    _hostile_files(tmp_path)
    monkeypatch.chdir(tmp_path)
    # the installed `pylrcore` script has neither '' nor the current folder on sys.path
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    monkeypatch.delitem(sys.modules, "mytrain", raising=False)
    assert main(["find", "mytrain:make", "--num-iter", "40", "--png", ""]) in (0, 1)
    assert "diagnosis:" in capsys.readouterr().out
    assert str(tmp_path) not in sys.path  # put back as it was
    sys.modules.pop("mytrain", None)


@pytest.mark.parametrize("command", ["suggest", "diagnose", "find", "schedule", "demo"])
def test_cli_help_shows_defaults(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main([command, "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "(default:" in out
    expected = {"suggest": "(default: capped)", "diagnose": "(default: None)", "find": "(default: 10.0)",
                "schedule": "(default: None, each schedule over its own length", "demo": "(default: 50)"}[command]
    assert expected in out
