"""Shared test helpers. Golden files: `TRACER_REGEN_GOLDEN=1 pytest` rewrites them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

GOLDEN = Path(__file__).parent / "golden"
REGENERATE = os.environ.get("TRACER_REGEN_GOLDEN") == "1"


def assert_golden(name: str, text: str) -> None:
    """`text` equals tests/golden/`name`; with TRACER_REGEN_GOLDEN=1 the file is rewritten."""
    path = GOLDEN / name
    if REGENERATE:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        return
    if not path.exists():
        pytest.fail(f"no golden file {path}: run TRACER_REGEN_GOLDEN=1 pytest to create it")
    assert text == path.read_text(encoding="utf-8"), (
        f"{name} differs from its golden file; if the change is intended, "
        "regenerate with TRACER_REGEN_GOLDEN=1 pytest"
    )
