"""The gallery: the committed gallery/ is current, rendering is deterministic, build and
--check find what is wrong.

The gallery's `.gv` files are the golden DOT of the exercises. After an intended change of
the pictures, `TRACER_REGEN_GOLDEN=1 pytest tests/test_gallery.py` rewrites gallery/ (as
`trace gallery` does); the tests fail once, saying so, and pass when re-run.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from conftest import REGENERATE, ROOT, assert_text_file
from test_exercises import WRONG
from typer.testing import CliRunner

import tracer.cli as cli
from tracer.exercises import Exercise, all_exercises
from tracer.gallery import README, build_gallery, check_gallery, view
from tracer.output.render import render_dot

EXERCISES = all_exercises()
SLUGS = [e.slug for e in EXERCISES]
GALLERY = ROOT / "gallery"


@pytest.mark.parametrize("ex", EXERCISES, ids=SLUGS)
def test_dot_matches_the_gallery(ex: Exercise) -> None:
    assert_text_file(GALLERY / f"{ex.slug}.gv", render_dot(ex.run(), view(ex)))


def test_the_committed_gallery_is_current() -> None:
    problems = check_gallery(GALLERY, EXERCISES)
    if problems and REGENERATE:
        build_gallery(GALLERY, EXERCISES)
        pytest.fail(f"{GALLERY} was out of date: regenerated, re-run ({problems[0]} ...)")
    assert problems == []


@pytest.mark.parametrize("ex", EXERCISES, ids=SLUGS)
def test_rendering_twice_gives_identical_dot(ex: Exercise) -> None:
    assert render_dot(ex.run()) == render_dot(ex.run())


@pytest.fixture(scope="module")
def gallery(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("gallery")
    done: list[str] = []
    build_gallery(out, EXERCISES, lambda ex: done.append(ex.slug))
    assert done == SLUGS  # the progress callback hears of every exercise, in order
    return out


def _copy(gallery: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(gallery, tmp_path / "gallery"))


@pytest.mark.slow
def test_build_writes_every_picture_and_the_readme(gallery: Path) -> None:
    readme = (gallery / README).read_text(encoding="utf-8")
    for ex in EXERCISES:
        assert (gallery / f"{ex.slug}.svg").read_text().rstrip().endswith("</svg>")
        assert (gallery / f"{ex.slug}.png").read_bytes().startswith(b"\x89PNG")
        assert (gallery / f"{ex.slug}.gv").read_text(encoding="utf-8").startswith("digraph")
        assert f"## {ex.slug}\n" in readme and f"({ex.slug}.png)" in readme
        for text in (ex.formula, ex.manual, ex.source, ex.shapes):
            assert text in readme
    assert "largest error" in readme and "DISAGREE" not in readme
    assert not list(gallery.glob(".*.tmp"))  # no temporary file of the atomic writes is left


def test_check_of_a_fresh_gallery_finds_no_problem(gallery: Path) -> None:
    assert check_gallery(gallery, EXERCISES) == []


def test_check_finds_an_altered_dot_file(gallery: Path, tmp_path: Path) -> None:
    out = _copy(gallery, tmp_path)
    with (out / "gram.gv").open("a", encoding="utf-8") as f:
        f.write("// edited by hand\n")
    [problem] = check_gallery(out, EXERCISES)
    assert "gram.gv" in problem and "out of date" in problem


def test_check_finds_missing_and_stale_files(gallery: Path, tmp_path: Path) -> None:
    out = _copy(gallery, tmp_path)
    (out / "dot.gv").unlink()
    (out / "mlp.png").unlink()
    (out / "gone.gv").write_text("digraph {}\n")
    problems = check_gallery(out, EXERCISES)
    assert len(problems) == 3, problems
    assert any("dot.gv is missing" in p for p in problems)
    assert any("mlp.png is missing" in p for p in problems)
    assert any("gone.gv" in p and "no exercise" in p for p in problems)


def test_check_finds_a_failing_exercise_and_writes_nothing(tmp_path: Path) -> None:
    entries = build_gallery(tmp_path, [WRONG])
    assert [len(e.failures) for e in entries] == [1]
    before = {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()}
    [problem] = check_gallery(tmp_path, [WRONG])
    assert problem.startswith("wrong-cube:") and "DISAGREE" in problem and "[1, 0]" in problem
    assert {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()} == before


def test_check_of_a_missing_folder(tmp_path: Path) -> None:
    [problem] = check_gallery(tmp_path / "nowhere", EXERCISES[:1])
    assert "nowhere" in problem


# -- the command ---------------------------------------------------------------------------

runner = CliRunner()


def test_gallery_command_builds_then_checks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cli.exercises, "all_exercises", lambda: EXERCISES[:2])  # quicker
    out = tmp_path / "g"
    r = runner.invoke(cli.app, ["gallery", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in out.glob("*.gv")) == sorted(f"{s}.gv" for s in SLUGS[:2])
    r = runner.invoke(cli.app, ["gallery", "--out", str(out), "--check"])
    assert r.exit_code == 0, r.output
    assert "up to date" in r.output
    (out / "exercise-b.gv").write_text("digraph {}\n", encoding="utf-8")
    r = runner.invoke(cli.app, ["gallery", "--out", str(out), "--check"])
    assert r.exit_code == 1
    assert "exercise-b.gv is out of date" in r.output
    assert (out / "exercise-b.gv").read_text() == "digraph {}\n"  # --check writes nothing


def test_gallery_command_into_a_file_is_one_error_line(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("")
    r = runner.invoke(cli.app, ["gallery", "--out", str(tmp_path / "f")])
    assert r.exit_code == 2
    assert r.output.strip().startswith("error:") and len(r.output.strip().splitlines()) == 1
