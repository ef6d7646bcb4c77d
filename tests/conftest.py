"""Shared test helpers.

Slow tests (`@pytest.mark.slow`: a fresh Python with torch, pip install, a Jupyter kernel,
a real browser, a long chain)
run with `pytest --slow`, as the README's test command and CI do; plain `pytest` leaves
them out (and says how many it deselected).

Golden files: `TRACER_REGEN_GOLDEN=1 pytest` rewrites those that differ, and those tests
still fail ("regenerated, re-run"), so a regeneration never passes unseen.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = Path(__file__).parent / "golden"
# What `trace run` and `trace notebook` write beside the pictures (tests/test_runpage.py).
RUN_FILES = {"index.html", "gradient-flow.svg", "gradient-flow.json"}
REGENERATE = os.environ.get("TRACER_REGEN_GOLDEN") == "1"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--slow", action="store_true", help="also run the slow tests")


# Fixtures whose tests are slow by nature: a real browser (Chromium through Playwright).
SLOW_FIXTURES = {"browser"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
    if config.getoption("--slow"):
        return
    slow = [item for item in items if item.get_closest_marker("slow")]
    if slow:
        config.hook.pytest_deselected(items=slow)
        items[:] = [item for item in items if not item.get_closest_marker("slow")]


def one_error_line(result, code: int = 2) -> str:
    """The CLI's answer to a mistake: exit `code`, one `error:` line, no traceback."""
    assert result.exit_code == code, (result.exit_code, result.output, result.exception)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output
    return lines[0]


def assert_text_file(path: Path, text: str) -> None:
    """`text` equals the file at `path`; with TRACER_REGEN_GOLDEN=1 a differing or missing
    file is rewritten, and the test fails all the same, asking for a re-run."""
    old = path.read_text(encoding="utf-8") if path.exists() else None
    if old == text:
        return
    if REGENERATE:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        pytest.fail(f"{path} differed: regenerated, re-run the tests")
    if old is None:
        pytest.fail(f"no golden file {path}: run TRACER_REGEN_GOLDEN=1 pytest to create it")
    assert text == old, (
        f"{path.name} differs from its golden file {path}; if the change is intended, "
        "regenerate with TRACER_REGEN_GOLDEN=1 pytest"
    )


def assert_golden(name: str, text: str) -> None:
    """`text` equals tests/golden/`name` (see assert_text_file)."""
    assert_text_file(GOLDEN / name, text)


def drawn(folder: Path) -> list[str]:
    """The pictures in `folder`: not the run's page, its gradient flow, nor the
    step-through page written beside each picture (see tests/test_runpage.py)."""
    names = {p.name for p in folder.iterdir()}
    return sorted(
        n
        for n in names
        if n not in RUN_FILES
        and not (n.endswith(".html") and any(o.startswith(n[:-4]) and o != n for o in names))
    )
