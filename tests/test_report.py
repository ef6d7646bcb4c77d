"""One check, in words: `report.check_line` in each style, and Check's repr for Jupyter."""

from __future__ import annotations

from tracer.model.check import Check, How
from tracer.model.tensor import TensorData
from tracer.view.text import check_html, check_line, format_check


def _tensor(*values: float) -> TensorData:
    return TensorData((len(values),), "float64", values, 1.0, min(values), max(values))


def _check(passed: bool, max_abs: float, problem: str | None = None) -> Check:
    return Check(
        name="x",
        autograd=_tensor(1.0, 2.0),
        manual=_tensor(1.0, 2.5),
        max_abs=max_abs,
        max_rel=max_abs / 2.5,
        where=(1,),
        rtol=1e-7,
        atol=1e-7,
        passed=passed,
        problem=problem,
        of="f",
        how=How.ALLCLOSE,
    )


def test_each_style() -> None:
    agree, disagree = _check(True, 3e-17), _check(False, 0.5)
    assert check_line(agree) == "∂f/∂x: autograd vs manual: ✓ agree (largest error < 1e-12)"
    assert check_line(disagree, "picture").endswith("✗ DISAGREE (largest error 0.5)")
    assert check_line(disagree, "exact") == (
        "∂f/∂x: ✗ DISAGREE, largest error 0.5 absolute at [1], 0.2 relative "
        "(rtol 1e-07, atol 1e-07)"
    )
    assert check_line(agree, "brief") == "✓ x (allclose)"
    assert check_line(disagree, "brief") == "✗ x (allclose)"
    shapes = _check(False, float("inf"), problem="shapes differ: [2] and [3]")
    assert check_line(shapes, "exact") == "∂f/∂x: ✗ DISAGREE: shapes differ: [2] and [3]"
    assert check_line(shapes, "picture").endswith("✗ DISAGREE: shapes differ: [2] and [3]")


def test_the_report_uses_the_same_words() -> None:
    report = format_check(_check(False, 0.5))
    assert "largest error 0.5 absolute at [1], 0.2 relative" in report
    assert report.splitlines()[-1] == "  ✗ DISAGREE"


def test_repr_is_one_readable_line() -> None:
    text = repr(_check(False, 0.5))
    assert text.startswith("<Check ∂f/∂x: ✗ DISAGREE, largest error 0.5") and "\n" not in text
    assert "TensorData" not in text


def test_html_shows_the_verdict_both_tensors_and_the_error() -> None:
    page = _check(False, 0.5, problem=None)._repr_html_()
    assert page == check_html(_check(False, 0.5))
    for text in ("✗ DISAGREE", "autograd", "manual", "[1.0000, 2.5000]", "largest error 0.5"):
        assert text in page
    named = Check(**{**_check(True, 0.0).__dict__, "name": "<img>"})
    html = named._repr_html_()
    assert html is not None and "<img>" not in html and "&lt;img&gt;" in html
