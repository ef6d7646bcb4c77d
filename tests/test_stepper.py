"""The stepper page and the frames: tested in a real browser (Debian's chromium, driven by
Playwright; `setup.sh` installs both), against the trace's own data at every step."""

from __future__ import annotations

import json
import shutil
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import drawn
from playwright.sync_api import Browser, ConsoleMessage, Page, sync_playwright
from pypdf import PdfReader
from typer.testing import CliRunner

import tracer
from cli import app
from tracer.exercises import all_exercises
from tracer.model.graph import Graph, Node, Recording
from tracer.model.options import CaptureOptions
from tracer.output.dot import views
from tracer.output.frames import frame_options, write_frames
from tracer.output.page import page_data, render_html, script_json
from tracer.output.render import EVERY_DEPTH, RenderOptions, render_dot, write
from tracer.view.collapse import SLIDE_BUDGET
from tracer.view.jacobian import jacobian_steps
from tracer.view.steps import engine_order, global_steps, truncated
from tracer.view.text import (
    format_tensor,
    jacobian_lines,
    jacobian_title,
    module_title,
    vjp_verdict,
)

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SHOT_FOR_THE_LEAD = Path("/tmp/stepper-shot.png")


def exercise_b() -> Recording:
    (ex,) = [e for e in all_exercises() if e.slug == "exercise-b"]
    return ex.run()


def shared_subexpression() -> Recording:
    """y is used twice: its node receives two gradients, which the engine sums."""
    x = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64, requires_grad=True)
    with tracer.trace("shared: y = x*x; f = (y + sin y).sum()") as t:
        y = x * x
        f = (y + y.sin()).sum()
        f.backward()
    t.check(x, manual=(2 * x + 2 * x * torch.cos(x * x)).detach(), quiet=True)
    return t.recording


# -- the browser -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


class Opened:
    """A page in the browser, with what it logged, the dialogs and requests it made."""

    def __init__(self, browser: Browser, path: Path) -> None:
        self.page: Page = browser.new_page(viewport={"width": 1600, "height": 900})
        self.errors: list[str] = []
        self.dialogs: list[str] = []
        self.requests: list[str] = []
        self.page.on("console", self._console)
        self.page.on("pageerror", lambda e: self.errors.append(f"page error: {e}"))
        self.page.on("dialog", self._dialog)
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.url = path.resolve().as_uri()
        self.page.goto(self.url)
        self.wait_until("window.tracerStepper !== undefined")

    def _console(self, message: ConsoleMessage) -> None:
        if message.type in ("error", "warning"):
            self.errors.append(f"console {message.type}: {message.text}")

    def _dialog(self, dialog: Any) -> None:
        self.dialogs.append(dialog.message)
        dialog.dismiss()

    def wait_until(self, condition: str, timeout: float = 10) -> None:
        """Poll `condition` (a JS expression): the page's CSP forbids wait_for_function's
        eval, and the page keeps that CSP under test."""
        deadline = time.monotonic() + timeout
        while not self.page.evaluate(f"() => Boolean({condition})"):
            assert time.monotonic() < deadline, f"timed out waiting for {condition}"
            self.page.wait_for_timeout(50)

    def state(self) -> dict[str, Any]:
        return self.page.evaluate(STATE_JS)

    def close(self) -> None:
        self.page.close()


# What the page shows now: the running node, the counter, the panel's gradients, and which
# edges show their gradient label and which leaves their .grad box.
STATE_JS = """() => {
  const text = (e) => (e ? e.textContent : null);
  const running = document.querySelectorAll("g.node.running");
  const out = {};
  for (const d of document.querySelectorAll("[data-role=grad-out]")) {
    const v = d.querySelector("[data-role=grad-out-value]");
    const formula = d.querySelector("[data-role=formula]") !== null;
    out[d.dataset.slot] = {value: text(v), formula};
  }
  const edges = [];
  for (const g of document.querySelectorAll("g.edge")) {
    const label = g.querySelector("text");
    edges.push({
      title: g.querySelector("title").textContent,
      shown: label ? getComputedStyle(label).visibility === "visible" : null,
    });
  }
  const leafBoxes = [...document.querySelectorAll("g.leaf-grad")].filter(
    (g) => getComputedStyle(g).display !== "none").map((g) => g.textContent);
  return {
    position: window.tracerStepper.position,
    running: [...running].map((g) => g.querySelector("title").textContent),
    runningTitle: text(document.getElementById("running-title")),
    counter: text(document.getElementById("counter")),
    gradIn: [...document.querySelectorAll("[data-role=grad-in-value]")].map(text),
    gradOut: out,
    leafGrad: text(document.querySelector("[data-role=leaf-grad] pre")),
    edges,
    leafBoxes,
    done: document.querySelectorAll("g.node .mark.done:not([style*='none'])").length,
  };
}"""


def lines(t: tracer.TensorData | None) -> str | None:
    return None if t is None else "\n".join(format_tensor(t))


def expected_edge_labels(recording: Recording, position: int) -> dict[str, list[bool]]:
    """Per SVG edge title, in drawing order: whether its gradient label shows at `position`."""
    steps = global_steps(recording)
    shown: dict[str, list[bool]] = defaultdict(list)
    for gi, graph in enumerate(recording.graphs):
        first = min((steps[(gi, n.id)] for n in graph.nodes if (gi, n.id) in steps), default=0)
        for root, seed in zip(graph.roots, graph.seeds, strict=True):
            if seed is not None:
                shown[f"g{gi}seed{root}->g{gi}n{root}"].append(position >= first)
        for e in graph.edges:
            if e.grad is not None:
                sent = steps.get((gi, e.src), len(steps) + 1) <= position
                shown[f"g{gi}n{e.src}->g{gi}n{e.dst}"].append(sent)
    return shown


def assert_step(opened: Opened, recording: Recording, position: int) -> None:
    """The page at `position` shows exactly what the trace recorded for that step."""
    state = opened.state()
    order = engine_order(recording)
    assert state["position"] == position
    assert state["counter"].startswith(f"step {position} / {len(order)}")
    labels: dict[str, list[bool]] = defaultdict(list)
    for edge in state["edges"]:
        if edge["shown"] is not None:
            labels[edge["title"]].append(edge["shown"])
    for title, expected in expected_edge_labels(recording, position).items():
        assert labels[title] == expected, (position, title)
    if position == 0:
        assert state["running"] == [] and state["runningTitle"] is None
        assert state["leafBoxes"] == [] and state["done"] == 0
        return
    gi, node = order[position - 1]
    graph = recording.graphs[gi]
    assert state["running"] == [f"g{gi}n{node.id}"]
    assert state["runningTitle"] == f"▶ running: {tracer.view.text.node_title(node)}"
    assert state["done"] == position - 1  # a ✓ on every node that ran before
    assert state["gradIn"] == [lines(g) for g in node.grads if g is not None]
    if node.kind == "leaf":
        assert state["leafGrad"] == lines(node.leaf_grad)
    else:
        outs = {str(e.slot): lines(e.grad) for e in graph.edges if e.src == node.id}
        assert {slot: v["value"] for slot, v in state["gradOut"].items()} == outs
        assert all(v["formula"] for v in state["gradOut"].values())  # the formula's place
    filled = [
        n
        for i, n in order[:position]
        if n.kind == "leaf" and recording.graphs[i].kind == "backward" and n.leaf_grad
    ]
    assert len(state["leafBoxes"]) == len(filled)
    for box, leaf in zip(state["leafBoxes"], filled, strict=True):
        assert leaf.leaf_grad is not None
        assert "".join(format_tensor(leaf.leaf_grad)).replace(" ", "") in box.replace(" ", "")


@pytest.mark.parametrize("make", [exercise_b, shared_subexpression])
def test_step_through_every_step_with_the_keyboard(
    browser: Browser, tmp_path: Path, make: Any
) -> None:
    recording = make()
    path = write(recording, tmp_path / "graph.html")
    opened = Opened(browser, path)
    total = len(engine_order(recording))
    assert total >= 4
    assert_step(opened, recording, 0)
    for position in range(1, total + 1):
        opened.page.keyboard.press("ArrowRight")
        assert_step(opened, recording, position)
        if position == 2:
            shot = tmp_path / f"{make.__name__}-step2.png"
            opened.page.screenshot(path=str(shot))
            if make is shared_subexpression:
                shutil.copyfile(shot, SHOT_FOR_THE_LEAD)
    opened.page.keyboard.press("ArrowRight")  # past the end: stays on the last step
    assert_step(opened, recording, total)
    for position in range(total - 1, -1, -1):
        opened.page.keyboard.press("ArrowLeft")
        assert_step(opened, recording, position)
    opened.page.keyboard.press("End")
    assert_step(opened, recording, total)
    opened.page.keyboard.press("Home")
    assert_step(opened, recording, 0)
    assert opened.errors == []
    assert opened.requests == [opened.url]  # nothing fetched: the page is self-contained
    opened.close()


def test_shared_subexpression_shows_the_two_gradients_summed(
    browser: Browser, tmp_path: Path
) -> None:
    recording = shared_subexpression()
    graph = recording.graphs[0]
    (mul,) = [n for n in graph.nodes if n.op == "MulBackward0"]
    arrivals = [e for e in graph.edges if e.dst == mul.id]
    assert len(arrivals) == 2
    opened = Opened(browser, write(recording, tmp_path / "shared.html"))
    opened.page.evaluate(f"window.tracerStepper.goTo({global_steps(recording)[(0, mul.id)]})")
    panel = opened.page.locator("[data-role=grad-in]").inner_text()
    assert "sum of the 2 gradients that arrived" in panel
    for e in arrivals:
        text = lines(e.grad)
        assert text is not None and text in panel
    text = lines(mul.grads[0])
    assert text is not None and text in panel
    assert opened.errors == []
    opened.close()


def test_controls_buttons_slider_and_play(browser: Browser, tmp_path: Path) -> None:
    recording = exercise_b()
    total = len(engine_order(recording))
    opened = Opened(browser, write(recording, tmp_path / "graph.html"))
    page = opened.page
    page.click("#next")
    page.click("#next")
    assert_step(opened, recording, 2)
    page.click("#prev")
    assert_step(opened, recording, 1)
    page.fill("#slider", "3")  # sets the range's value and fires its input event
    assert_step(opened, recording, 3)
    page.click("#first")
    page.select_option("#speed", "400")
    page.click("#play")
    assert page.get_attribute("#play", "aria-pressed") == "true"
    opened.wait_until(f"window.tracerStepper.position === {total}")
    opened.wait_until("document.getElementById('play').getAttribute('aria-pressed') === 'false'")
    assert_step(opened, recording, total)
    # Every control is reachable with Tab, and focus is visible on it (in mid-pass, where
    # none is disabled).
    page.click("#prev")
    reached = set()
    page.focus("#first")
    page.keyboard.press("Shift+Tab")  # focus that the keyboard moves is drawn (focus-visible)
    page.keyboard.press("Tab")
    for _ in range(12):
        reached.add(page.evaluate("document.activeElement.id"))
        outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
        assert outline != "none", page.evaluate("document.activeElement.id")
        page.keyboard.press("Tab")
    assert {"first", "prev", "play", "next", "last", "slider", "speed", "zoom-in"} <= reached
    assert opened.errors == []
    opened.close()


def test_hover_shows_the_full_tensor_and_zoom_and_folding_work(
    browser: Browser, tmp_path: Path
) -> None:
    recording = exercise_b()
    opened = Opened(browser, write(recording, tmp_path / "graph.html"))
    page = opened.page
    page.keyboard.press("End")
    graph = recording.graphs[0]
    (leaf,) = [n for n in graph.nodes if n.kind == "leaf"]
    page.hover(f"g.node:has(> title:text-is('g0n{leaf.id}'))")
    tip = page.locator("#tip")
    assert tip.is_visible()
    text = lines(leaf.leaf_grad)
    assert text is not None and text in tip.inner_text()
    edge = next(e for e in graph.edges if e.grad is not None and e.src == graph.roots[0])
    # A point on the edge's line (its bounding box's centre can miss a curved edge).
    path = page.locator(f"g.edge:has(> title:text-is('g0n{edge.src}->g0n{edge.dst}')) path")
    middle = path.evaluate(
        "p => { const m = p.getPointAtLength(p.getTotalLength() / 2)"
        ".matrixTransform(p.getScreenCTM()); return {x: m.x, y: m.y}; }"
    )
    page.mouse.move(middle["x"], middle["y"])
    text = lines(edge.grad)
    assert text is not None and text in tip.inner_text()
    page.keyboard.press("Escape")
    # Zoom from the keyboard changes the scale; 0 fits again.
    scale = "new DOMMatrix(getComputedStyle(document.getElementById('stage')).transform).a"
    fitted = page.evaluate(scale)
    page.keyboard.press("+")
    assert page.evaluate(scale) > fitted
    page.keyboard.press("-")
    page.keyboard.press("-")
    assert page.evaluate(scale) < fitted
    page.keyboard.press("0")
    assert page.evaluate(scale) == pytest.approx(fitted)
    # Folding the manual graph's cluster hides its nodes; unfolding shows them again.
    manual = page.locator("button.fold", has_text="manual")
    manual.click()
    hidden = "document.querySelectorAll('g.node.folded-away').length"
    assert page.evaluate(hidden) == len(recording.graphs[1].nodes)
    assert page.locator("g.cluster.folded").count() == 1
    manual.click()
    assert page.evaluate(hidden) == 0
    assert opened.errors == []
    opened.close()


# -- escaping: what the user's code names shows as text and runs nothing ------------------

HOSTILE_NAME = "<img src=x onerror=alert(1)>"
HOSTILE_TITLE = "quote \" ' back\\slash </script><script>alert(2)</script> & \u2028 end"


def test_hostile_names_show_as_text_and_run_nothing(browser: Browser, tmp_path: Path) -> None:
    recording = exercise_b()
    graph = recording.graphs[0]
    (leaf,) = [n for n in graph.nodes if n.kind == "leaf"]
    graph.nodes[leaf.id] = replace(leaf, name=HOSTILE_NAME)
    recording.title = HOSTILE_TITLE
    path = write(recording, tmp_path / "hostile.html")
    text = path.read_text(encoding="utf-8")
    data = text[text.index('id="tracer-data">') : text.index("</script>")]
    assert "<img" not in data and "</script" not in data.lower()[1:]
    opened = Opened(browser, path)
    page = opened.page
    assert page.evaluate("document.getElementById('title').textContent") == HOSTILE_TITLE
    assert page.locator("h1#title").is_visible()
    page.keyboard.press("End")  # the leaf runs last
    assert page.locator("#running-title").inner_text() == f"▶ running: {HOSTILE_NAME}"
    assert page.get_by_text(HOSTILE_NAME, exact=True).first.is_visible()
    assert page.locator("img").count() == 0
    page.wait_for_timeout(200)
    assert opened.dialogs == []
    assert opened.errors == []
    opened.close()


def test_page_json_cannot_close_its_script() -> None:
    value = {"s": "</script><!-- & \u2028\u2029 >"}
    text = script_json(value)
    for raw in ("<", ">", "&", "\u2028", "\u2029"):
        assert raw not in text
    assert json.loads(text) == value


def test_exercise_b_page_is_small_and_self_contained(tmp_path: Path) -> None:
    html = render_html(exercise_b())
    size = len(html.encode("utf-8"))
    print(f"exercise-b page: {size / 1000:.1f} KB")
    assert size <= 200_000
    for reference in ("src=", "href=", "@import", "url("):
        assert reference not in html.replace('xmlns="http://www.w3.org/2000/svg"', "")


def test_page_data_holds_the_engine_order() -> None:
    recording = exercise_b()
    data = page_data(recording)
    assert data["steps"] == [[gi, n.id] for gi, n in engine_order(recording)]
    assert data["passed"] is True


# -- the command line and the writers -----------------------------------------------------

runner = CliRunner()


def test_cli_writes_the_page(tmp_path: Path) -> None:
    out = tmp_path / "graph.html"
    result = runner.invoke(app, ["exercise-b", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert out.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")


def test_trace_run_writes_pages(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    script = tmp_path / "lesson.py"
    script.write_text(
        "import torch\nx = torch.ones(3, requires_grad=True)\n(x * x).sum().backward()\n",
        encoding="utf-8",
    )
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["run", str(script), "--out", "pics", "--format", "html"])
    assert result.exit_code == 0, result.output
    (name,) = drawn(tmp_path / "pics")
    page = tmp_path / "pics" / name
    assert "tracer-data" in page.read_text(encoding="utf-8")


def test_gallery_writes_a_page_per_exercise(tmp_path: Path) -> None:
    from tracer.gallery import build_gallery

    (ex,) = [e for e in all_exercises() if e.slug == "dot"]
    build_gallery(tmp_path, [ex])
    assert "tracer-data" in (tmp_path / "dot.html").read_text(encoding="utf-8")


def test_frames_are_the_recording_truncated_at_each_step() -> None:
    recording = shared_subexpression()
    order = engine_order(recording)
    steps = global_steps(recording)
    for k in range(len(order) + 1):
        frame = truncated(recording, k)
        graph = frame.graphs[0]
        for node in graph.nodes:
            ran = steps.get((0, node.id), 99) <= k
            original = recording.graphs[0].node(node.id)
            assert node.grads == (original.grads if ran else (None,) * len(original.grads))
            assert node.leaf_grad == (original.leaf_grad if ran else None)
        for edge, original_edge in zip(graph.edges, recording.graphs[0].edges, strict=True):
            assert edge.grad == (original_edge.grad if steps.get((0, edge.src), 99) <= k else None)
        assert (graph.seeds[0] is None) == (k == 0)
        assert frame.graphs[1:] == recording.graphs[1:]  # manual graphs stay whole
        options = frame_options(recording, k, RenderOptions(detail="slide"))
        dot = render_dot(frame, options)
        if k:
            gi, node = order[k - 1]
            assert options.highlight == frozenset({(gi, node.id)})
            outlined = [line for line in dot.splitlines() if 'color="#000000"' in line]
            assert len(outlined) == 1 and f"g{gi}n{node.id} [" in outlined[0]
            assert "penwidth=6" in outlined[0]
            assert f"step {k} / {len(order)}: ▶ running" in frame.title
        else:
            assert "penwidth=6" not in dot
    assert recording.graphs[0].nodes[0].grads[0] is not None  # the original is untouched


def test_cli_frames_svg_png_and_pdf(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    frames = len(engine_order(exercise_b())) + 1
    result = runner.invoke(app, ["exercise-b", "--frames", "svg-frames", "--detail", "slide"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "svg-frames").iterdir()) == [
        f"step-{k:02d}.svg" for k in range(frames)
    ]
    assert not (tmp_path / "graph.svg").exists()  # only the frames, unless --out is given
    result = runner.invoke(app, ["exercise-b", "--frames", "png", "--format", "png"])
    assert result.exit_code == 0, result.output
    assert (
        all(p.read_bytes().startswith(b"\x89PNG") for p in (tmp_path / "png").iterdir())
        and len(list((tmp_path / "png").iterdir())) == frames
    )
    result = runner.invoke(app, ["exercise-b", "--frames", "steps.pdf", "--out", "g.svg"])
    assert result.exit_code == 0, result.output
    assert len(PdfReader(tmp_path / "steps.pdf").pages) == frames
    assert (tmp_path / "g.svg").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--frames", "f", "--format", "gif"], "'gif' is not one of 'svg', 'png'"),
        (["--frames", "missing/steps.pdf"], "does not exist"),
        (["--frames", "frame.svg"], "looks like a file name"),
    ],
)
def test_cli_frames_mistakes_are_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str], message: str
) -> None:
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["exercise-b", *args])
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output
    assert list(tmp_path.iterdir()) == []


def test_write_frames_needs_a_backward_pass(tmp_path: Path) -> None:
    recording = exercise_b()
    recording.graphs = [g for g in recording.graphs if g.kind == "manual"]
    with pytest.raises(tracer.TracerError, match="nothing to step through"):
        write_frames(recording, tmp_path / "frames")


# -- a large graph: 24 transformer layers ---------------------------------------------------


@pytest.mark.slow
def test_a_large_page_steps_without_freezing(browser: Browser, tmp_path: Path) -> None:
    torch.manual_seed(0)
    layer = torch.nn.TransformerEncoderLayer(
        d_model=64, nhead=4, dim_feedforward=128, batch_first=True
    )
    model = torch.nn.TransformerEncoder(layer, num_layers=24, enable_nested_tensor=False)
    batch = torch.randn(4, 32, 64)
    with tracer.trace("24-layer transformer encoder") as t:
        loss = model(batch).pow(2).mean()
        loss.backward()
    recording = t.recording
    nodes = len(recording.graphs[0].nodes)
    assert nodes >= 1500
    # Every node, a step each (by default it opens folded to fit a slide: a few boxes).
    path = write(recording, tmp_path / "big.html", RenderOptions(depth=EVERY_DEPTH))
    print(f"{nodes} nodes, page {path.stat().st_size / 1e6:.1f} MB")
    opened = Opened(browser, path)
    total = len(engine_order(recording))
    # A step touches what it shows, not the page: the number of changes one step makes to
    # the document (classes, texts, panel rows, as a MutationObserver counts them) stays far
    # below the number of nodes, so stepping costs the same on any size of graph. (Counted,
    # not timed: this machine's timings are noise.)
    touched = """(target) => {
      const seen = [];
      const observer = new MutationObserver((records) => seen.push(...records));
      observer.observe(document.body, {subtree: true, attributes: true, childList: true,
                                       characterData: true});
      window.tracerStepper.goTo(target);
      seen.push(...observer.takeRecords());
      observer.disconnect();
      return seen.length;
    }"""
    # Each single step from the one before it (1 after 0, 2 after 1, …, the middle ones).
    singles = [1, 2, 3, total // 2, total // 2 + 1]
    opened.page.evaluate("(k) => window.tracerStepper.goTo(k)", total // 2 - 1)
    opened.page.evaluate("(k) => window.tracerStepper.goTo(k)", 0)
    changes = []
    for k in singles:
        opened.page.evaluate("(k) => window.tracerStepper.goTo(k)", k - 1)
        changes.append(opened.page.evaluate(touched, k))
    print(f"{nodes} nodes; changes made by one step: {changes}")
    assert max(changes) < nodes / 20
    opened.page.evaluate("(k) => window.tracerStepper.goTo(k)", 0)
    opened.page.keyboard.press("ArrowRight")
    opened.wait_until("window.tracerStepper.position === 1")
    assert_step(opened, recording, 1)
    assert opened.errors == []
    opened.close()


def test_quiz_hides_every_gradient_until_revealed_and_checks_an_answer(
    browser: Browser, tmp_path: Path
) -> None:
    recording = shared_subexpression()
    path = write(recording, tmp_path / "quiz.html", RenderOptions(quiz=True))
    svg = path.read_text(encoding="utf-8").split("<svg", 1)[1].split("</svg>", 1)[0]
    graph = recording.graphs[0]
    for edge in graph.edges:  # the picture gives no gradient away
        assert edge.grad is not None
        text = lines(edge.grad)
        assert text is not None and text.split("\n")[0] not in svg
    opened = Opened(browser, path)
    (mul,) = [n for n in graph.nodes if n.op == "MulBackward0"]
    opened.page.evaluate(f"window.tracerStepper.goTo({global_steps(recording)[(0, mul.id)]})")
    grad_in = opened.page.locator("[data-role=grad-in-value]")
    assert grad_in.get_attribute("data-quiz") is not None  # a question, not the value
    answer = lines(mul.grads[0])
    assert answer is not None and answer not in opened.page.locator("#panel").inner_text()
    box = grad_in.locator("input")
    box.fill("1, 2")  # too few numbers
    grad_in.get_by_role("button", name="Check").click()
    assert "give 3 numbers (you gave 2)" in grad_in.inner_text()
    assert mul.grads[0] is not None and mul.grads[0].values is not None
    right = [round(v, 4) for v in mul.grads[0].values]
    box.fill(", ".join(str(v + 1) for v in right))
    grad_in.get_by_role("button", name="Check").click()
    assert "not quite: 0 of 3 right" in grad_in.inner_text()
    box.fill("[" + ", ".join(f"{v:.4f}" for v in right) + "]")  # as the page would print it
    box.press("Enter")
    assert "✓ right" in grad_in.inner_text()
    grad_in.get_by_role("button", name="Reveal").click()
    assert answer in opened.page.locator("[data-role=grad-in]").inner_text()
    # Revealed stays revealed: away and back.
    opened.page.keyboard.press("Home")
    opened.page.evaluate(f"window.tracerStepper.goTo({global_steps(recording)[(0, mul.id)]})")
    assert answer in opened.page.locator("[data-role=grad-in]").inner_text()
    assert opened.errors == []
    opened.close()


def test_a_page_without_quiz_is_as_before() -> None:
    recording = exercise_b()
    assert "quiz" not in page_data(recording)
    assert render_html(recording) == render_html(recording, quiz=False)


def test_the_page_shows_the_grade_sheet(browser: Browser, tmp_path: Path) -> None:
    from tracer.view.grades import format_grade_sheet

    (ex,) = [e for e in all_exercises() if e.slug == "backprop-by-hand"]
    recording = ex.run()
    opened = Opened(browser, write(recording, tmp_path / "lesson.html"))
    opened.page.locator("#checks summary").click()
    rows = opened.page.locator("#grade-sheet tr").all_inner_texts()
    sheet = format_grade_sheet(recording.graphs[0], recording.checks).splitlines()
    assert len(rows) == len(sheet) == 14  # the columns, then 13 checks
    for shown, printed in zip(rows[1:], sheet[1:], strict=True):
        assert shown.split() == printed.split()  # the same texts as the terminal's
    assert opened.errors == []
    opened.close()


# -- the Jacobian panel -----------------------------------------------------------------------


def test_each_small_step_shows_its_jacobian_and_that_the_gradient_sent_is_vjp(
    browser: Browser, tmp_path: Path
) -> None:
    (ex,) = [e for e in all_exercises() if e.slug == "exercise-b"]
    recording = ex.run(CaptureOptions(jacobians=True))
    opened = Opened(browser, write(recording, tmp_path / "jacobians.html"))
    order = engine_order(recording)
    panels = 0
    for gi, node in order:
        opened.page.keyboard.press("ArrowRight")
        shown = opened.page.evaluate(JACOBIANS_JS)
        steps = jacobian_steps(node, recording.graphs[gi])
        assert [s["slot"] for s in shown] == [str(s.jacobian.slot) for s in steps], node.op
        for panel, step in zip(shown, steps, strict=True):
            assert panel["title"] == jacobian_title(step)
            assert panel["matrix"] == "\n".join(jacobian_lines(step))
            assert step.product is not None
            assert panel["product"] == "\n".join(format_tensor(step.product))
            assert panel["verdict"] == vjp_verdict(step) and panel["verdict"].startswith("✓")
            panels += 1
        assert node.kind == "op" or shown == []  # a leaf's AccumulateGrad has none
    mv = next(n for _, n in order if n.op == "MvBackward0")  # A x: J is A, 10 × 5
    assert mv.jacobians[0].matrix.shape == (10, 5)
    assert panels == 3  # sin, the add (x only: b needs no grad), A x
    assert opened.errors == []
    opened.close()


JACOBIANS_JS = """() => [...document.querySelectorAll("[data-role=grad-out]")].flatMap((slot) =>
  [...slot.querySelectorAll("[data-role=jacobian]")].map((j) => ({
    slot: slot.dataset.slot,
    title: j.querySelector("summary").textContent,
    matrix: j.querySelector("[data-role=jacobian-matrix]").textContent,
    product: j.querySelector("[data-role=vjp]").textContent,
    verdict: j.querySelector("[data-role=vjp-verdict]").textContent,
  })))"""


def test_the_command_lines_page_has_the_jacobians(tmp_path: Path) -> None:
    out = tmp_path / "graph.html"
    result = runner.invoke(app, ["exercise-a", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "J = ∂out/∂in" in out.read_text(encoding="utf-8")


# -- a model's page: folded at the slide depth, a box a step ------------------------------------


class Block(torch.nn.Module):
    """A GPT block: layer norm, causal self-attention, layer norm, MLP, residuals."""

    def __init__(self, d: int, heads: int) -> None:
        super().__init__()
        self.ln1 = torch.nn.LayerNorm(d)
        self.qkv = torch.nn.Linear(d, 3 * d)
        self.proj = torch.nn.Linear(d, d)
        self.ln2 = torch.nn.LayerNorm(d)
        self.mlp = torch.nn.Sequential(
            torch.nn.Linear(d, 4 * d), torch.nn.GELU(), torch.nn.Linear(4 * d, d)
        )
        self.heads = heads

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(d, dim=2)
        q, k, v = (z.view(b, t, self.heads, d // self.heads).transpose(1, 2) for z in (q, k, v))
        att = (q @ k.transpose(-2, -1)) / (d // self.heads) ** 0.5
        att = att.masked_fill(torch.ones(t, t).triu(1).bool(), float("-inf")).softmax(-1)
        y = (att @ v).transpose(1, 2).reshape(b, t, d)
        x = x + self.proj(y)
        return x + self.mlp(self.ln2(x))


class TinyGPT(torch.nn.Module):
    """Token and position embeddings, two blocks, a final layer norm, the LM head."""

    def __init__(self, vocab: int = 11, d: int = 8, context: int = 4) -> None:
        super().__init__()
        self.tok = torch.nn.Embedding(vocab, d)
        self.pos = torch.nn.Embedding(context, d)
        self.blocks = torch.nn.ModuleList([Block(d, 2) for _ in range(2)])
        self.ln_f = torch.nn.LayerNorm(d)
        self.head = torch.nn.Linear(d, vocab, bias=False)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.tok(idx) + self.pos(torch.arange(idx.shape[1]))
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln_f(x))


def tiny_gpt() -> Recording:
    torch.manual_seed(0)
    model = TinyGPT()
    idx = torch.randint(0, 11, (2, 4))
    with tracer.trace("tiny GPT", jacobians=True) as t:
        logits = model(idx)
        loss = torch.nn.functional.cross_entropy(logits.view(-1, 11), idx.view(-1))
        loss.backward()
    return t.recording


def box_of(graph: Graph, node: Node, expanded: frozenset[int]) -> tuple[str, int]:
    """The box a node is drawn in: the outermost call on its chain not expanded, or itself."""
    chain = []
    call = node.module
    while call is not None:
        chain.append(call)
        call = graph.modules[call].parent
    for call in reversed(chain):
        if call not in expanded:
            return ("module", call)
    return ("node", node.id)


def expected_steps(graph: Graph, expanded: frozenset[int]) -> list[tuple[str, int]]:
    """The shown steps: the engine's, consecutive ones in one folded box merged; each as
    the running title and the engine step it ends at."""
    steps: list[tuple[str, int]] = []
    last = None
    for k, node in enumerate(graph.steps, start=1):
        box = box_of(graph, node, expanded)
        if box == last and box[0] == "module":
            steps[-1] = (steps[-1][0], k)
            continue
        last = box
        title = (
            module_title(graph.modules[box[1]], graph.modules)
            if box[0] == "module"
            else tracer.view.text.node_title(node)
        )
        steps.append((title, k))
    return steps


VISIBLE_BOXES_JS = """() =>
  [...document.querySelectorAll("g.node:not(.folded-away)")].filter(
    (g) => !g.querySelector("title").textContent.includes("seed")).length +
  document.querySelectorAll("g.cluster.folded:not(.folded-away)").length"""


def test_a_models_page_opens_at_the_slide_depth_and_steps_its_boxes(
    browser: Browser, tmp_path: Path
) -> None:
    recording = tiny_gpt()
    graph = recording.graphs[0]
    assert len(graph.nodes) >= 100
    (view,) = views(recording)  # the pictures' own choice of depth
    assert view.collapsed and view.boxes <= SLIDE_BUDGET
    opened = Opened(browser, write(recording, tmp_path / "gpt.html"))
    page = opened.page
    assert page.evaluate(VISIBLE_BOXES_JS) == view.boxes
    steps = expected_steps(graph, view.expanded)
    assert len(steps) < len(graph.steps)
    assert page.evaluate("window.tracerStepper.steps") == len(steps)
    for k, (title, end) in enumerate(steps, start=1):
        page.keyboard.press("ArrowRight")
        assert page.evaluate("window.tracerStepper.position") == end
        assert page.locator("#counter").inner_text() == f"step {k} / {len(steps)}"
        assert page.locator("#running-title").inner_text() == f"▶ running: {title}"
    page.keyboard.press("Home")
    # A folded block: its step shows the gradient that left it.
    block = next(c for c in graph.modules if c.name == "blocks.1")
    k = next(k for k, (title, _) in enumerate(steps, 1) if title.startswith("blocks.1 "))
    page.evaluate(f"window.tracerStepper.stepTo({k})")
    left = page.locator("[data-role=box-out-value]").all_inner_texts()
    members = {n.id for n in graph.nodes if box_of(graph, n, view.expanded) == ("module", block.id)}
    out = [e for e in graph.edges if e.src in members and e.dst not in members and e.grad]
    assert left and left == [lines(e.grad) for e in out]
    # A click on the box opens it: its calls show, and stepping steps them.
    page.keyboard.press("Home")
    cover = f"g.cluster:has(> title:text-is('cluster_g0m{block.id}')) .fold-cover"
    page.locator(cover).click()
    opened_up = view.expanded | {block.id}
    boxes = {box_of(graph, n, opened_up) for n in graph.nodes}
    assert page.evaluate(VISIBLE_BOXES_JS) == len(boxes) > view.boxes
    assert page.evaluate("window.tracerStepper.steps") == len(expected_steps(graph, opened_up))
    for title, end in expected_steps(graph, opened_up):
        page.keyboard.press("ArrowRight")
        assert page.evaluate("window.tracerStepper.position") == end
        assert page.locator("#running-title").inner_text() == f"▶ running: {title}"
    # A click on its title folds it again (the whole picture in view first: 0 fits it).
    page.keyboard.press("0")
    page.locator(f"g.cluster:has(> title:text-is('cluster_g0m{block.id}')) > text").first.click()
    assert page.evaluate(VISIBLE_BOXES_JS) == view.boxes
    assert page.evaluate("window.tracerStepper.steps") == len(steps)
    assert page.evaluate("window.tracerStepper.position") == len(graph.steps)  # stays at the end
    assert opened.errors == []
    opened.close()


def test_a_models_page_at_every_depth_steps_every_node() -> None:
    recording = tiny_gpt()
    data = page_data(recording, depth=EVERY_DEPTH)
    assert not any(m["folded"] for m in data["graphs"][0]["modules"])
    data = page_data(recording)
    folded = {m["id"] for m in data["graphs"][0]["modules"] if m["folded"]}
    (view,) = views(recording)
    assert folded == {c.id for c in recording.graphs[0].modules} - view.expanded
