"""Which backward passes a trace records (issue 19): `--passes SPEC`, `tracer.trace(passes=...)`,
`%%trace --passes`; library-internal passes as one entry at the user's line; what a run
holds bounded by the selection, not by its steps."""

from __future__ import annotations

import contextlib
import io
import textwrap
from contextlib import redirect_stdout
from pathlib import Path

import pytest
import torch
from conftest import drawn, one_error_line
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

import tracer
from tracer.cli import app
from tracer.model.selection import (
    DEFAULT_PASSES,
    PassSelection,
    parse_passes,
)
from tracer.record.capture import GraphCapture
from tracer.run.jupyter import parse_line
from tracer.view.text import passes_text


def cli(*args: str | Path):
    return CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "250"})


def selected(selection: PassSelection, run: int) -> list[int]:
    return [n for n in range(1, run + 1) if selection.wants(n, run, ended=True)]


# -- the SPEC --------------------------------------------------------------------------------

_PART = st.one_of(
    st.integers(1, 40).map(lambda n: ("number", n)),
    st.integers(1, 5).map(lambda n: ("from end", n)),
    st.tuples(st.integers(1, 20), st.integers(0, 10)).map(lambda r: ("range", r)),
)


@given(
    parts=st.lists(_PART, min_size=1, max_size=5),
    every=st.one_of(st.none(), st.integers(1, 12)),
    run=st.integers(0, 45),
    spaces=st.sampled_from(["", " ", "  "]),
)
def test_a_spec_selects_exactly_the_passes_its_parts_name(
    parts: list, every: int | None, run: int, spaces: str
) -> None:
    texts, expected = [], set()
    for kind, value in parts:
        if kind == "number":
            texts.append(str(value))
            expected.add(value)
        elif kind == "from end":
            texts.append(f"-{value}")
            expected.add(run + 1 - value)
        else:
            first, extra = value
            texts.append(f"{first}{spaces}-{spaces}{first + extra}")
            expected.update(range(first, first + extra + 1))
    if every is not None:
        texts.append(f"every{spaces or ' '}{every}")
        expected.update(range(1, run + 1, every))
    selection = parse_passes(f",{spaces}".join(texts))
    assert selected(selection, run) == sorted(n for n in expected if 1 <= n <= run)
    # While the run goes on, a pass it will select is never dropped on the way.
    for n in selected(selection, run):
        assert all(selection.wants(n, so_far) for so_far in range(n, run + 1))


@pytest.mark.parametrize(
    "spec",
    ["", "0", "1,,2", "every", "every 0", "5-2", "first", "1-", "-1-3", "all,every 2,every 3"],
)
def test_a_bad_spec_is_one_line_listing_the_forms(spec: str, tmp_path: Path) -> None:
    with pytest.raises(tracer.TracerError) as raised:
        parse_passes(spec)
    assert "\n" not in str(raised.value) and "--passes" in str(raised.value)
    script = tmp_path / "s.py"
    script.write_text("print('never run')\n")
    line = one_error_line(cli("run", script, "--out", tmp_path / "o", "--passes", spec))
    assert line == f"error: {raised.value}" and not (tmp_path / "o").exists()


def test_the_default_records_every_pass_of_a_short_run_else_the_first_three_and_the_last() -> None:
    assert selected(DEFAULT_PASSES, 10) == list(range(1, 11))
    assert selected(DEFAULT_PASSES, 12) == [1, 2, 3, 12]
    assert selected(parse_passes("all"), 30) == list(range(1, 31))
    assert selected(parse_passes("every 100"), 250) == [1, 101, 201]
    assert passes_text([1, 2, 3, 2000], 2000) == (
        "recorded passes 1, 2, 3, 2000 of 2000; 1996 ran unrecorded (choose with --passes)"
    )
    assert passes_text([1, 2], 2) is None


# -- a trace ---------------------------------------------------------------------------------


def _loop(steps: int, passes: str | None, held: list[int] | None = None) -> tracer.Trace:
    w = torch.tensor([1.0, -2.0, 0.5], requires_grad=True)
    with tracer.trace(passes=passes) as t:
        for _ in range(steps):
            (w * w).sum().backward()
            if held is not None:
                held.append(len(t.recording.backward_graphs()))
    return t


def test_every_100_records_passes_1_101_201() -> None:
    t = _loop(250, "every 100")
    assert t.recording.recorded_passes() == [1, 101, 201]
    assert t.recording.passes_run == 250
    assert [g.number for g in t.recording.backward_graphs()] == [1, 101, 201]


@pytest.mark.parametrize(("spec", "numbers"), [("-1", [20]), ("1,-2", [1, 19]), ("-3", [18])])
def test_from_the_end_a_rolling_buffer_never_holds_more_than_the_selection(
    spec: str, numbers: list[int]
) -> None:
    held: list[int] = []
    t = _loop(20, spec, held)
    bound = parse_passes(spec).most_held
    assert bound is not None and max(held) <= bound
    assert held[-1] == bound  # each candidate was recorded while it might be selected
    assert t.recording.recorded_passes() == numbers


def test_the_default_holds_at_most_ten_passes_and_keeps_1_2_3_and_the_last() -> None:
    held: list[int] = []
    t = _loop(40, None, held)
    assert max(held) == 10 and held[10:] == [4] * 30
    assert t.recording.recorded_passes() == [1, 2, 3, 40]


def test_an_unselected_pass_installs_nothing_and_keeps_no_forward_value(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    hooked: list[int] = []
    original = GraphCapture.hook

    def counting(self: GraphCapture, every_edge: bool = False) -> None:
        hooked.append(1)
        original(self, every_edge)

    monkeypatch.setattr(GraphCapture, "hook", counting)
    w = torch.tensor([1.0, 2.0], requires_grad=True)
    seen = []  # per pass: whether the forward recorder kept values, the captures hooked
    with tracer.trace(passes="2") as t:
        for _ in range(3):
            recorder = t.forward_recorder
            assert recorder is not None
            keeping = not recorder.paused  # set as the pass before ended
            y = torch.sin(w * 3)
            before = len(hooked)
            y.sum().backward()
            seen.append((keeping, len(hooked) - before))
    assert seen == [(False, 0), (True, 1), (False, 0)]
    [graph] = t.recording.backward_graphs()
    assert graph.number == 2
    [sin] = [n for n in graph.nodes if n.op == "SinBackward0"]
    assert sin.forward and sin.forward[0] is not None  # kept: pass 2 was wanted


def test_a_training_step_not_selected_runs_with_no_module_hook_and_no_mode() -> None:
    """Between the optimizer steps of passes that are not selected, torch has no global
    module hook (it takes its fast path) and no torch-function mode of tracer's; both are
    back for the forward pass of a selected pass, whose nodes are placed in modules."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    module = torch.nn.modules.module
    seen = []  # per step, as its forward starts: (global module hooks, function modes)

    def look(m: torch.nn.Module, args: tuple) -> None:
        if m is model:
            modes = torch._C._len_torch_function_stack()
            seen.append((len(module._global_forward_pre_hooks), modes))

    handle = model.register_forward_pre_hook(look)
    try:
        with tracer.trace(passes="1,5") as t:
            for _ in range(6):
                optimizer.zero_grad()
                model(torch.randn(2, 3)).sum().backward()
                optimizer.step()
    finally:
        handle.remove()
    assert not module._global_forward_pre_hooks and not module._global_forward_hooks
    # Steps 1 and 5 are selected: hooks and the recorder's mode on; 2-4 and 6 off.
    on = [hooks > 0 and modes > 0 for hooks, modes in seen]
    assert on == [True, False, False, False, True, False]
    assert [g.number for g in t.recording.backward_graphs()] == [1, 5]
    fifth = t.recording.backward_graphs()[1]
    placed = {fifth.modules[n.module].name for n in fifth.nodes if n.module is not None}
    assert {"0", "2"} <= placed  # the Linear layers, by their names
    assert {p.name for p in t.flow.parameters} == {"0.weight", "0.bias", "2.weight", "2.bias"}
    assert len(t.flow.parameters[0].grad_norm) == 6 and None not in t.flow.parameters[0].grad_norm


def test_the_flow_keeps_module_outputs_of_the_passes_kept_alone() -> None:
    """Under the default, each pass after the 10th is recorded while it might be the last:
    when the next comes, its module outputs leave the flow with it."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1))
    with tracer.trace() as t:
        for _ in range(30):
            model(torch.randn(2, 3)).sum().backward()
    flow = t.flow
    assert [n for n, kept in enumerate(flow.recorded, start=1) if kept] == [1, 2, 3, 30]
    assert sorted({a.pass_number for a in flow.activations}) == [1, 2, 3, 30]
    assert len(flow.activations) == 4 * 3  # three leaf modules at each kept pass


def test_checks_after_an_unrecorded_pass_are_not_held() -> None:
    w = torch.tensor([1.0, 2.0], requires_grad=True)
    with tracer.trace(passes="1") as t:
        for _ in range(5):
            w.grad = None
            (w * w).sum().backward()
            tracer.check(w, 2 * w, quiet=True)
    assert [c.after for c in t.recording.checks] == [1]


def test_gradcheck_is_one_entry_at_the_users_line() -> None:
    x = torch.randn(3, dtype=torch.float64, requires_grad=True)
    with tracer.trace() as t:
        assert torch.autograd.gradcheck(lambda v: (v * v.sin()).sum(), (x,))
        assert torch.autograd.gradgradcheck(lambda v: (v * v.sin()).sum(), (x,))
        (x * x).sum().backward()
    assert t.recording.recorded_passes() == [1]
    assert t.recording.passes_run == 1
    entries = {e.function: e for e in t.recording.unrecorded}
    assert set(entries) == {"gradcheck", "gradgradcheck"}
    for entry in entries.values():
        assert entry.kind == "library" and entry.passes > 1
        assert entry.source is not None and entry.source[0] == __file__
    again = tracer.Recording.from_json(t.recording.to_json())
    assert again == t.recording


def test_observer_a_training_loop_under_the_default_selection_computes_the_same() -> None:
    def train(traced: bool) -> tuple[list[torch.Tensor], list[float]]:
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        x, y = torch.randn(16, 6), torch.randint(0, 2, (16,))
        losses = []

        def loop() -> None:
            for _ in range(14):
                opt.zero_grad()
                loss = torch.nn.functional.cross_entropy(model(x), y)
                loss.backward()
                opt.step()
                losses.append(loss.item())

        if traced:
            with tracer.trace() as t:
                loop()
            assert t.recording.recorded_passes() == [1, 2, 3, 14]
        else:
            loop()
        return [p.detach().clone() for p in model.parameters()], losses

    plain, traced = train(False), train(True)
    assert plain[1] == traced[1]
    for a, b in zip(plain[0], traced[0], strict=True):
        assert torch.equal(a.view(-1).view(torch.int32), b.view(-1).view(torch.int32))


# -- trace run, trace notebook, %%trace --------------------------------------------------------

TWELVE = """
import torch
w = torch.tensor([1.0, 2.0], requires_grad=True)
for step in range(12):
    loss = (w * w).sum()
    loss.backward()
    with torch.no_grad():
        w -= 0.1 * w.grad
    w.grad = None
"""


def test_trace_run_draws_1_2_3_12_of_twelve_and_says_so(tmp_path: Path) -> None:
    script = tmp_path / "twelve.py"
    script.write_text(TWELVE)
    r = cli("run", script, "--out", tmp_path / "pics")
    assert r.exit_code == 0, r.output
    names = drawn(tmp_path / "pics")
    assert names == ["01-line6.svg", "02-line6.svg", "03-line6.svg", "12-line6.svg"]
    assert "recorded passes 1, 2, 3, 12 of 12; 8 ran unrecorded (choose with --passes)" in r.stdout
    r = cli("run", script, "--out", tmp_path / "all", "--passes", "all")
    assert r.exit_code == 0 and len(drawn(tmp_path / "all")) == 12
    assert "unrecorded" not in r.stdout
    r = cli("run", script, "--out", tmp_path / "none", "--passes", "20")
    line = one_error_line(r)
    assert "no backward pass was recorded" in line and "12 ran unrecorded" in line


def test_trace_notebook_takes_passes(tmp_path: Path) -> None:
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(TWELVE.strip())]
    path = tmp_path / "twelve.ipynb"
    path.write_text(nbformat.writes(nb))
    r = cli("notebook", path, "--out", tmp_path / "pics", "--passes", "2,-1")
    assert r.exit_code == 0, r.output
    assert drawn(tmp_path / "pics") == [
        "02-cell1-line5.svg",
        "12-cell1-line5.svg",
    ]
    assert "recorded passes 2, 12 of 12; 10 ran unrecorded" in r.stdout


def test_trace_run_notes_gradcheck_once(tmp_path: Path) -> None:
    script = tmp_path / "check.py"
    script.write_text(
        textwrap.dedent("""
        import torch
        x = torch.randn(4, dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradcheck(torch.sin, (x,))
        torch.sin(x).sum().backward()
        """)
    )
    r = cli("run", script, "--out", tmp_path / "pics")
    assert r.exit_code == 0, r.output
    assert len(drawn(tmp_path / "pics")) == 1
    [note] = [line for line in r.stdout.splitlines() if line.startswith("note: gradcheck")]
    assert note.startswith(f"note: gradcheck at {script}:4: ") and "backward passes" in note


def test_the_cell_magic_line() -> None:
    assert parse_line("") == ("", None)
    assert parse_line("t") == ("t", None)
    assert parse_line("t --passes 1,-1") == ("t", parse_passes("1,-1"))
    assert parse_line("--passes='every 5'") == ("", parse_passes("every 5"))
    for bad in ("1t", "t --depth 3", "--passes x"):
        with pytest.raises(tracer.TracerError):
            parse_line(bad)


def test_the_cell_magic_records_the_passes_asked_for() -> None:
    from IPython.testing.globalipapp import get_ipython

    shell = get_ipython()
    shell.run_line_magic("load_ext", "tracer")
    shell.user_ns["torch"] = torch
    out = io.StringIO()
    with redirect_stdout(out):
        shell.run_cell_magic("trace", "kept --passes -1", TWELVE)
    t = shell.user_ns["kept"]
    assert t.recording.recorded_passes() == [12]
    assert "recorded pass 12 of 12; 11 ran unrecorded" in out.getvalue()


def test_a_paused_recorder_leaves_the_users_own_mode_seeing_what_it_sees_untraced() -> None:
    from torch.overrides import TorchFunctionMode, _get_current_function_mode_stack

    class Noting(TorchFunctionMode):
        def __init__(self) -> None:
            super().__init__()
            self.seen: list[str] = []

        def __torch_function__(self, func, types, args=(), kwargs=None):
            self.seen.append(getattr(func, "__name__", "?"))
            return func(*args, **(kwargs or {}))

    def run(traced: bool) -> tuple[list[str], torch.Tensor]:
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1))
        x = torch.randn(5, 3)
        outer = Noting()
        with outer:
            trace = tracer.trace(passes="2,4") if traced else None
            if trace is not None:
                trace.__enter__()
            inner = Noting()
            try:
                for step in range(6):
                    with inner if step % 2 else contextlib.nullcontext():
                        model(x).sum().backward()
            finally:
                if trace is not None:
                    trace.__exit__(None, None, None)
        assert _get_current_function_mode_stack() == []
        if trace is not None:
            assert trace.recording.recorded_passes() == [2, 4]
        first = model[0]
        assert isinstance(first, torch.nn.Linear) and first.weight.grad is not None
        return [*outer.seen, "|", *inner.seen], first.weight.grad.clone()

    plain, traced = run(False), run(True)
    assert plain[0] == traced[0]
    assert torch.equal(plain[1], traced[1])


def test_a_pass_is_drawn_by_its_number_and_an_unrecorded_one_is_named_so() -> None:
    t = _loop(12, None)
    assert t.pass_recording(12).graphs[0].number == 12
    with pytest.raises(
        tracer.TracerError,
        match=r"pass 5 recorded \(see passes=\): this trace has passes 1, 2, 3, 12",
    ):
        t.pass_recording(5)
    with pytest.raises(
        tracer.TracerError, match="no backward pass 13: this trace has passes 1, 2, 3, 12"
    ):
        t.pass_recording(13)
