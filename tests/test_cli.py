"""The `trace` command driven end to end, as a user runs it: real processes, real `dot`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TRACE = str(Path(sys.executable).parent / "trace")


def trace(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [TRACE, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


def test_exercise_a_writes_a_real_svg(tmp_path: Path) -> None:
    r = trace("exercise-a", "--out", "graph.svg", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
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
    r = trace("exercise-b", "--out", f"graph.{suffix}", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    data = (tmp_path / f"graph.{suffix}").read_bytes()
    assert data.startswith(starts)
    if suffix in ("dot", "json"):
        assert b"SqueezeBackward4" in data and b"SinBackward0" in data


def test_list_shows_the_exercises_with_formulas(tmp_path: Path) -> None:
    r = trace("list", cwd=tmp_path, env={**os.environ, "COLUMNS": "200"})
    assert r.returncode == 0
    assert "exercise-a" in r.stdout and "exercise-b" in r.stdout and "log(1 + z)" in r.stdout


def one_error_line(r: subprocess.CompletedProcess) -> str:
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    return lines[0]


def test_unknown_exercise_names_the_known_ones(tmp_path: Path) -> None:
    line = one_error_line(trace("exercise-z", "--out", "g.svg", cwd=tmp_path))
    assert "exercise-z" in line and "exercise-a" in line and "exercise-b" in line


def test_unknown_suffix_lists_the_supported_ones(tmp_path: Path) -> None:
    line = one_error_line(trace("exercise-a", "--out", "g.bmp", cwd=tmp_path))
    assert ".bmp" in line and ".svg" in line and ".json" in line
    assert not (tmp_path / "g.bmp").exists()


def test_unwritable_paths(tmp_path: Path) -> None:
    line = one_error_line(trace("exercise-a", "--out", "no/such/dir/g.svg", cwd=tmp_path))
    assert "does not exist" in line
    line = one_error_line(trace("exercise-a", "--out", str(tmp_path), cwd=tmp_path))
    assert "directory" in line
    # /proc refuses new files even to root, whose permission bits are never in the way.
    line = one_error_line(trace("exercise-a", "--out", "/proc/graph.svg", cwd=tmp_path))
    assert "cannot write /proc/graph.svg" in line


def test_missing_dot_says_how_to_install_and_clobbers_nothing(tmp_path: Path) -> None:
    good = tmp_path / "graph.svg"
    good.write_text("a good picture")
    env = {**os.environ, "PATH": str(Path(sys.executable).parent)}  # no `dot` on it
    line = one_error_line(trace("exercise-a", "--out", "graph.svg", cwd=tmp_path, env=env))
    assert "dot" in line and "apt-get install graphviz" in line
    assert good.read_text() == "a good picture"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["graph.svg"]  # no temporary left
    # DOT and JSON need no `dot`.
    r = trace("exercise-a", "--out", "graph.dot", cwd=tmp_path, env=env)
    assert r.returncode == 0 and (tmp_path / "graph.dot").read_text().startswith("digraph")


def test_non_editable_install_gives_a_working_trace(tmp_path: Path) -> None:
    target = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(target),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    assert (target / "cli.py").exists() and (target / "tracer" / "render.py").exists()
    env = {**os.environ, "PYTHONPATH": str(target)}
    code = "import cli, tracer; print(tracer.__file__)"
    r = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert r.stdout.startswith(str(target))
    r = subprocess.run(
        [str(target / "bin" / "trace"), "exercise-b", "--out", "g.svg"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "g.svg").exists()
