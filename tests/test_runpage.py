"""The run's page (issue 19, point 3), `index.html` beside the pictures of `trace run`: in
Debian's Chromium, its pass table, the inline chart, and links that resolve to files
written beside it; and the first law on a whole training script, run as `python` and as
`trace run`."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
import torch
from conftest import drawn
from playwright.sync_api import Browser
from test_observer_programs import run_both, same_bits
from test_script import cli
from test_stepper import browser  # noqa: F401 (the fixture: one Chromium for this module)

from tracer.model.flow import GradientFlow

TRAINING = """
import sys
import torch
from torch import nn

torch.manual_seed(0)
model = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 1))
opt = torch.optim.Adam(model.parameters(), lr=0.01)
X = torch.randn(64, 4)
y = X.sum(1, keepdim=True).sin()
losses = []
for step in range(STEPS):
    opt.zero_grad()
    loss = nn.functional.mse_loss(model(X), y)
    loss.backward()
    opt.step()
    losses.append(loss.detach().clone())
w = model[2].weight.grad
torch.allclose(w, w.clone())
if len(sys.argv) > 1:
    state = {k: v.clone() for k, v in model.state_dict().items()}
    optimizer = {
        f"{i}.{k}": v.clone()
        for i, s in opt.state_dict()["state"].items()
        for k, v in s.items()
    }
    torch.save({"losses": torch.stack(losses), **state, **optimizer}, sys.argv[1])
"""


def training(steps: int) -> str:
    return textwrap.dedent(TRAINING).replace("STEPS", str(steps))


def test_trace_run_writes_the_flow_and_the_page(tmp_path: Path) -> None:
    (tmp_path / "train.py").write_text(training(3), encoding="utf-8")
    out = tmp_path / "out"
    result = cli("run", tmp_path / "train.py", "--out", out)
    assert result.exit_code == 0, result.output
    assert "gradient flow: 2 layer(s) over 3 backward pass(es), 3 optimizer step(s)" in (
        result.output
    )
    assert f"the run's page: {out / 'index.html'}" in result.output
    assert drawn(out) == ["01-line15.svg", "02-line15.svg", "03-line15.svg"]
    for n in (1, 2, 3):
        assert (out / f"0{n}-line15.html").read_text(encoding="utf-8").startswith("<!DOCTYPE")
    flow = GradientFlow.from_json((out / "gradient-flow.json").read_text(encoding="utf-8"))
    assert flow.passes == 3 and [p.name for p in flow.parameters] == [
        "0.weight",
        "0.bias",
        "2.weight",
        "2.bias",
    ]
    raw = json.loads((out / "gradient-flow.json").read_text(encoding="utf-8"))
    assert raw["vanishing_below"] == 1e-7 and raw["exploding_above"] == 1e4


@pytest.mark.slow
def test_the_page_in_chromium(tmp_path: Path, browser: Browser) -> None:  # noqa: F811
    (tmp_path / "train.py").write_text(training(3), encoding="utf-8")
    out = tmp_path / "out"
    assert cli("run", tmp_path / "train.py", "--out", out).exit_code == 0
    page = browser.new_page()
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.goto((out / "index.html").as_uri())
    rows = page.locator("#passes tbody tr")
    assert rows.count() == 3
    first = [c.strip() for c in rows.nth(0).locator("td").all_inner_texts()]
    where = f"{tmp_path / 'train.py'}:15"
    assert first == ["1", where, first[2], "—", "01-line15.svg", "01-line15.html"]
    assert int(first[2]) > 5  # the pass's node count, as the terminal prints it
    # The chart is inline: its layers' lines and both thresholds are in the page itself.
    chart = page.locator("#flow-chart svg")
    assert chart.count() == 1 and chart.bounding_box()["width"] > 300  # type: ignore[index]
    for gid in ("layer-0", "layer-1", "vanishing-threshold", "exploding-threshold"):
        assert page.locator(f"#flow-chart svg g#{gid}").count() == 1, gid
    # Every link resolves to a file written beside the page.
    hrefs = page.locator("a").evaluate_all("links => links.map(a => a.getAttribute('href'))")
    assert len(hrefs) >= 8
    for href in hrefs:
        assert (out / href).is_file(), href
    assert page.locator("#activations tbody tr").count() == 9  # 3 modules at 3 passes
    assert requests == [(out / "index.html").as_uri()]  # nothing fetched: self-contained
    page.close()


@pytest.mark.slow
def test_a_training_script_computes_the_same_bits_under_trace_run(tmp_path: Path) -> None:
    plain, traced, printed = run_both(tmp_path, training(20))
    assert plain.keys() == traced.keys() and len(plain) > 8
    for name, value in plain.items():
        assert same_bits(value, traced[name]), name
    assert "gradient flow: 2 layer(s) over 20 backward pass(es)" in printed
    assert isinstance(plain["losses"], torch.Tensor)
