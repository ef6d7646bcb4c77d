"""The `trace` command: in-process through Typer's CliRunner, plus a few real processes
(marked slow) for what only a real process shows: the installed console script, and that
`trace --help` and `trace list` never import torch."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import one_error_line
from typer.testing import CliRunner

from tracer.cli import app
from tracer.exercises import COMMANDS, all_exercises

ROOT = Path(__file__).resolve().parent.parent
TRACE = str(Path(sys.executable).parent / "trace")
SLUGS = [e.slug for e in all_exercises()]


def cli(*args: str | Path, env: dict[str, str] | None = None):
    return CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "250", **(env or {})})


# -- the exercises ----------------------------------------------------------------------------


def test_exercise_a_writes_a_real_svg(tmp_path: Path) -> None:
    r = cli("exercise-a", "--out", tmp_path / "graph.svg")
    assert r.exit_code == 0, r.output
    svg = (tmp_path / "graph.svg").read_text()
    assert svg.lstrip().startswith("<?xml") and "</svg>" in svg
    for text in ("LogBackward0", "DotBackward0", "AccumulateGrad", "MulBackward0", "agree"):
        assert text in svg
    assert "∂f/∂x" in r.stdout and "✓ agree" in r.stdout and "largest error" in r.stdout


@pytest.mark.parametrize(
    ("suffix", "starts"),
    [("png", b"\x89PNG"), ("pdf", b"%PDF"), ("dot", b"digraph"), ("json", b"{")],
)
def test_exercise_b_every_format(tmp_path: Path, suffix: str, starts: bytes) -> None:
    r = cli("exercise-b", "--out", tmp_path / f"graph.{suffix}", "--detail", "slide")
    assert r.exit_code == 0, r.output
    data = (tmp_path / f"graph.{suffix}").read_bytes()
    assert data.startswith(starts)
    if suffix in ("dot", "json"):
        assert b"SqueezeBackward4" in data and b"SinBackward0" in data


def test_list_shows_the_exercises_and_their_formulas_unmangled() -> None:
    r = cli("list", env={"COLUMNS": "600"})  # wide enough for no cell to wrap
    assert r.exit_code == 0
    for ex in all_exercises():
        assert ex.slug in r.stdout and ex.formula in r.stdout  # "[yₙ log pₙ …]" is no markup


def test_help_lists_commands_and_exercises_readably() -> None:
    text = cli("--help").stdout
    assert "L = −Σₙ[yₙ log pₙ + (1 − yₙ) log(1 − pₙ)], p = σ(Xw)" in text
    for raw in ("<bool>", "<str>", "<list[str]>", "<path>", "<int"):
        assert raw not in text
    assert "--version" in text
    run = cli("run", "--help").stdout
    assert "<slide|full>" in run and "<svg|png|pdf|dot|json|html>" in run  # the choices, listed
    assert "FOLDER" in run and " N " in run
    assert "trace run train.py --out pics -- --lr 0.1" in run  # the script's own arguments
    assert "sys.exit(N)" in run
    for raw in ("<bool>", "<str>", "<list[str]>", "<path>"):
        assert raw not in run


def test_version_names_tracer_torch_and_graphviz() -> None:
    from importlib.metadata import version

    r = cli("--version")
    assert r.exit_code == 0
    dot = subprocess.run(["dot", "-V"], capture_output=True, text=True, check=True).stderr
    graphviz = dot.split("version")[1].split()[0]  # "dot - graphviz version 2.43.0 (0)"
    assert r.stdout.strip() == (
        f"tracer {version('tracer')}, torch {version('torch')}, Graphviz {graphviz}"
    )


def test_unknown_name_lists_exercises_and_commands_apart() -> None:
    line = one_error_line(cli("exercise-z", "--out", "g.svg"))
    exercises, commands = line.split("; commands are ")
    assert "exercise-z" in exercises and all(slug in exercises for slug in SLUGS)
    assert commands.split(", ") == list(COMMANDS)


def test_the_commands_are_the_ones_the_registry_keeps_free() -> None:
    registered = {c.name for c in app.registered_commands}
    assert registered - set(SLUGS) == set(COMMANDS)


def test_usage_mistakes_are_one_line() -> None:
    assert "'huge' is not one of" in one_error_line(cli("exercise-a", "--detail", "huge"))
    assert "--nope" in one_error_line(cli("exercise-a", "--nope"))
    assert "Missing argument 'SCRIPT'" in one_error_line(cli("run"))


def test_unknown_suffix_lists_the_supported_ones(tmp_path: Path) -> None:
    line = one_error_line(cli("exercise-a", "--out", tmp_path / "g.bmp"))
    assert ".bmp" in line and ".svg" in line and ".json" in line
    assert not (tmp_path / "g.bmp").exists()


def test_unwritable_paths(tmp_path: Path) -> None:
    assert "does not exist" in one_error_line(cli("exercise-a", "--out", tmp_path / "no/g.svg"))
    assert "directory" in one_error_line(cli("exercise-a", "--out", tmp_path))
    # /proc refuses new files even to root, whose permission bits are never in the way.
    line = one_error_line(cli("exercise-a", "--out", "/proc/graph.svg"))
    assert "cannot write /proc/graph.svg" in line


def test_a_name_over_255_bytes_is_one_line_and_writes_nothing(tmp_path: Path) -> None:
    line = one_error_line(cli("exercise-a", "--out", tmp_path / ("a" * 300 + ".svg")))
    assert "File name too long" in line and "shorter name" in line
    line = one_error_line(cli("run", tmp_path / "s.py", "--out", tmp_path / ("b" * 300)))
    assert "cannot write to" in line
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("limit", ["abc", "0", "-3", "nan", "inf"])
def test_a_bad_dot_timeout_is_refused_before_tracing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, limit: str
) -> None:
    monkeypatch.setenv("TRACER_DOT_TIMEOUT", limit)
    r = cli("exercise-a", "--out", tmp_path / "g.svg")
    assert "TRACER_DOT_TIMEOUT" in one_error_line(r) and "positive number" in r.stderr
    assert "autograd" not in r.stdout  # refused before the exercise ran
    assert list(tmp_path.iterdir()) == []
    assert cli("exercise-a", "--out", tmp_path / "g.json").exit_code == 0  # needs no dot


def test_frames_that_cannot_be_written_are_refused_before_tracing() -> None:
    for target in ("/proc/frames", "/proc/frames.pdf"):
        r = cli("exercise-a", "--frames", target)
        assert f"cannot {'write' if target.endswith('.pdf') else 'create'} {target}" in (
            one_error_line(r)
        )
        assert "autograd" not in r.stdout  # refused before the exercise ran


def test_missing_dot_says_how_to_install_and_clobbers_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    good = tmp_path / "graph.svg"
    good.write_text("a good picture")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # no `dot` on it
    line = one_error_line(cli("exercise-a", "--out", good))
    assert "dot" in line and "apt-get install graphviz" in line
    assert good.read_text() == "a good picture"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["graph.svg"]  # no temporary left
    # DOT and JSON need no `dot`.
    r = cli("exercise-a", "--out", tmp_path / "graph.dot")
    assert r.exit_code == 0 and (tmp_path / "graph.dot").read_text().startswith("digraph")


# -- real processes -----------------------------------------------------------------------------

_IMPORTS_AFTER = """
import sys
from tracer.cli import main
sys.argv = ["trace", *sys.argv[1:]]
try:
    main()
except SystemExit:
    pass
print("torch imported:", "torch" in sys.modules, file=sys.stderr)
"""


@pytest.mark.parametrize("args", [["--help"], ["list"], ["--version"], ["exercise-a", "--help"]])
def test_help_and_list_never_import_torch(args: list[str]) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200"}
    r = subprocess.run(
        [sys.executable, "-c", _IMPORTS_AFTER, *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert r.stdout.strip(), r.stderr  # it did answer
    assert r.stderr.strip().splitlines()[-1] == "torch imported: False"


@pytest.mark.slow
def test_the_console_script_draws_exercise_a(tmp_path: Path) -> None:
    r = subprocess.run(
        [TRACE, "exercise-a", "--out", "graph.svg"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    assert "</svg>" in (tmp_path / "graph.svg").read_text()


@pytest.mark.slow
def test_non_editable_install_puts_no_cli_module_in_site_packages(tmp_path: Path) -> None:
    # From a copy: setuptools would reuse the files a build/ folder keeps from earlier builds.
    ignore = shutil.ignore_patterns(
        ".git", "build", "*.egg-info", ".venv", "__pycache__", ".*cache"
    )
    source = Path(shutil.copytree(ROOT, tmp_path / "source", symlinks=True, ignore=ignore))
    target = tmp_path / "site"
    pip = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation"]
    subprocess.run(
        [*pip, "--target", str(target), str(source)], check=True, capture_output=True, timeout=300
    )
    assert not (target / "cli.py").exists()  # no top-level `cli` to clash with other packages
    assert (target / "tracer" / "cli.py").is_file() and not (
        target / "tracer" / "cli.py"
    ).is_symlink()
    env = {**os.environ, "PYTHONPATH": str(target)}
    for args in (["--help"], ["exercise-b", "--out", "g.svg"]):
        r = subprocess.run(
            [str(target / "bin" / "trace"), *args],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert r.returncode == 0, r.stderr
    assert (tmp_path / "g.svg").exists()
    r = subprocess.run(
        [sys.executable, "-c", "import tracer.cli, tracer; print(tracer.__file__)"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert r.stdout.startswith(str(target))
