"""Real models: qualified parameter names, module clusters, the collapsed view, pictures
that fit a slide, one pass at a time, accumulated leaves, torch's sentinels."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

import tracer
from cli import app
from tracer.errors import TracerError
from tracer.exercises import get
from tracer.model.graph import Graph, Recording
from tracer.output.dot import RenderOptions, dot_source, views
from tracer.view.collapse import EVERY_DEPTH, SLIDE_BUDGET, SLIDE_ROWS, collapse, levels
from tracer.view.text import module_title


class MLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(3, 16)
        self.fc2 = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(x)))


def _train(steps: int = 3, zero_grad: bool = False) -> tracer.Trace:
    """A training loop: an MLP, SGD, cross-entropy; no zero_grad, so .grad accumulates."""
    torch.manual_seed(0)
    model = MLP()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    loss_fn = nn.CrossEntropyLoss()
    X, y = torch.randn(8, 3), torch.randint(0, 4, (8,))
    with tracer.trace() as t:
        for _name, p in model.named_parameters():  # noqa: B007 - `p` stays bound: fc2.bias
            pass
        for _ in range(steps):
            if zero_grad:
                opt.zero_grad()
            loss = loss_fn(model(X), y)
            loss.backward()
            opt.step()
    assert p is model.fc2.bias
    return t


def _encoder(layers: int = 4) -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(
        d_model=16, nhead=2, dim_feedforward=32, dropout=0.0, batch_first=True
    )
    model = nn.TransformerEncoder(layer, num_layers=layers, enable_nested_tensor=False)
    return model, torch.randn(2, 5, 16)


@pytest.fixture(scope="module")
def encoder_graph() -> Graph:
    model, X = _encoder()
    with tracer.trace() as t:
        model(X).square().mean().backward()
    return t.graphs[0]


def _leaf_names(graph: Graph) -> set[str | None]:
    return {n.name for n in graph.leaves()}


# -- names -------------------------------------------------------------------------------


def test_parameters_get_qualified_names_and_a_for_loop_does_not_win() -> None:
    graph = _train(steps=1).graphs[0]
    assert _leaf_names(graph) == {"fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"}
    assert not any(n.name == "p" for n in graph.nodes)
    names = {n.name for n in graph.nodes if n.kind == "constant"}
    assert names == {"X", "y"}  # frame names where no module name exists


def test_deep_names_and_module_calls(encoder_graph: Graph) -> None:
    assert "layers.3.self_attn.in_proj_weight" in _leaf_names(encoder_graph)
    titles = {module_title(c, encoder_graph.modules) for c in encoder_graph.modules}
    assert "layers.3 · TransformerEncoderLayer" in titles
    assert "TransformerEncoder" in titles  # the outermost module: its class


def test_frame_names_still_name_plain_tensors() -> None:
    x = torch.tensor([1.0, 2.0], requires_grad=True)
    with tracer.trace() as t:
        f = (x * x).sum()
        f.backward()
    assert _leaf_names(t.graphs[0]) == {"x"}
    assert t.graphs[0].modules == []


def test_module_hooks_are_removed_whatever_raised() -> None:
    hooks = torch.nn.modules.module
    before = (len(hooks._global_forward_pre_hooks), len(hooks._global_forward_hooks))
    with pytest.raises(ZeroDivisionError), tracer.trace():
        MLP()(torch.randn(2, 3))
        assert len(hooks._global_forward_hooks) == before[1] + 1
        raise ZeroDivisionError
    assert (len(hooks._global_forward_pre_hooks), len(hooks._global_forward_hooks)) == before


def test_a_module_that_raises_leaves_the_stack_sound() -> None:
    class Broken(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            raise ValueError("broken")

    model = MLP()
    with tracer.trace() as t:
        with pytest.raises(ValueError):
            Broken()(torch.randn(2, 3))
        model(torch.randn(2, 3)).sum().backward()
    calls = {c.name: c.parent for c in t.graphs[0].modules}
    assert calls == {"": None, "fc1": 0, "fc2": 0}


def test_the_tracer_does_not_change_the_gradients() -> None:
    def grads(traced: bool) -> list[torch.Tensor | None]:
        model, X = _encoder(2)
        if traced:
            with tracer.trace():
                model(X).square().mean().backward()
        else:
            model(X).square().mean().backward()
        return [p.grad for p in model.parameters()]

    for a, b in zip(grads(False), grads(True), strict=True):
        assert a is not None and b is not None and torch.equal(a, b)


# -- modules and clusters --------------------------------------------------------------------


def test_inner_ops_of_a_composite_land_in_their_module(encoder_graph: Graph) -> None:
    modules = encoder_graph.modules
    attention = [n for n in encoder_graph.nodes if "ScaledDotProduct" in n.op]
    assert len(attention) == 4  # the recorder never saw them: inside the MHA call
    for node in attention:
        assert node.module is not None and modules[node.module].cls == "MultiheadAttention"
    in_proj = next(n for n in encoder_graph.nodes if n.name == "layers.2.self_attn.in_proj_weight")
    assert modules[in_proj.module].name == "layers.2.self_attn"  # type: ignore[index]
    loss = encoder_graph.node(encoder_graph.roots[0])
    assert loss.module is None  # .square().mean() is the user's code, outside the model


def test_clusters_in_the_dot(encoder_graph: Graph) -> None:
    dot = dot_source(Recording(graphs=[encoder_graph]), RenderOptions(depth=EVERY_DEPTH))
    assert dot.count("subgraph cluster_") == len(encoder_graph.modules)
    assert "layers.3 · TransformerEncoderLayer" in dot
    assert "layers.0.self_attn · MultiheadAttention" in dot


def test_repeated_calls_are_told_apart() -> None:
    fc = nn.Linear(2, 2)
    x = torch.randn(1, 2)
    with tracer.trace() as t:
        fc(torch.tanh(fc(x))).sum().backward()
    graph = t.graphs[0]
    titles = sorted(module_title(c, graph.modules) for c in graph.modules)
    assert titles == ["fc (call 1) · Linear", "fc (call 2) · Linear"]
    assert "fc (call 2) · Linear" in dot_source(t.recording)


def test_values_false_still_groups_by_module(encoder_graph: Graph) -> None:
    model, X = _encoder()
    with tracer.trace(values=False) as t:
        model(X).square().mean().backward()
    cheap = t.graphs[0]
    assert [c.name for c in cheap.modules] == [c.name for c in encoder_graph.modules]
    layer_of = {n.name: cheap.modules[n.module].name for n in cheap.leaves()}  # type: ignore[index]
    assert layer_of["layers.1.linear2.weight"] == "layers.1.linear2"


class Tangled(nn.Module):
    """What a plain walk of submodules gets wrong: a weight tied across modules, a
    submodule registered twice, a buffer, empty (None) entries."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(10, 4)
        self.body = nn.Sequential(nn.Linear(4, 4), nn.Tanh(), nn.Linear(4, 4))
        self.again = self.body
        self.head = nn.Linear(4, 10, bias=False)
        self.head.weight = self.embed.weight
        self.register_buffer("scale", torch.tensor(2.0))
        self.register_buffer("unset", None)
        self.register_parameter("missing", None)
        self.register_module("absent", None)

    def forward(self, i: torch.Tensor) -> torch.Tensor:
        return self.head(self.again(self.body(self.embed(i))) * self.scale)


@pytest.mark.parametrize("values", [True, False])
def test_names_and_parameter_counts_are_torchs(values: bool) -> None:
    model = Tangled()
    with tracer.trace(values=values) as t:
        model(torch.tensor([1, 2, 3])).sum().backward()
    for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
        assert t.name_of(tensor) == name
    modules = dict(model.named_modules())
    calls = t.graphs[0].modules
    assert {c.name for c in calls} == {"", "embed", "body", "body.0", "body.1", "body.2", "head"}
    for call in calls:
        assert call.params == sum(p.numel() for p in modules[call.name].parameters()), call


def test_a_lazy_module_is_recorded() -> None:
    model = nn.Sequential(nn.Linear(3, 4), nn.LazyLinear(2))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a tracer warning: a module call was not recorded
        with tracer.trace() as t:
            model(torch.randn(2, 3)).sum().backward()
    assert [c.name for c in t.graphs[0].modules] == ["", "0", "1"]
    weight = model[1].weight
    assert isinstance(weight, torch.Tensor) and t.name_of(weight) == "1.weight"


class Aside(nn.Module):
    """Makes a node it does not return, after its last inner call."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(3, 3)
        self.b = nn.Linear(3, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.b(torch.relu(self.a(x)))
        self.penalty = out.abs().mean()  # made inside, returned through an attribute
        return out


def test_values_false_places_every_node_where_values_true_does() -> None:
    def modules_of_ops(values: bool) -> list[tuple[str, str | None]]:
        torch.manual_seed(0)
        model, x = Aside(), torch.randn(2, 3, requires_grad=True)
        with tracer.trace(values=values) as t:
            h = model.a(x)
            outside = x.exp().sum()  # the user's, between two calls: in no module
            y = model.b(h)
            (y.sum() + outside + model(x).sum() + model.penalty).backward()
        graph = t.graphs[0]
        return [
            (
                n.op,
                None if n.module is None else module_title(graph.modules[n.module], graph.modules),
            )
            for n in graph.nodes
            if n.kind == "op"
        ]

    placed = modules_of_ops(values=False)
    assert placed == modules_of_ops(values=True)
    assert ("ExpBackward0", None) in placed
    assert ("AbsBackward0", "Aside") in placed


def test_json_round_trip_keeps_modules_and_grad_before() -> None:
    recording = _train().recording
    back = Recording.from_json(recording.to_json())
    assert back == recording
    assert back.graphs[1].modules and back.graphs[1].leaves()[0].grad_before is not None
    assert "modules" in json.loads(recording.to_json())["graphs"][0]


# -- collapse -------------------------------------------------------------------------------


def test_collapse_at_every_depth_keeps_the_gradients(encoder_graph: Graph) -> None:
    full = encoder_graph
    deepest = max(levels(full.modules))
    for depth in range(deepest + 1):
        view = collapse(full, depth=depth)
        graph = view.graph
        boxes = [n for n in graph.nodes if n.kind == "module"]
        assert bool(boxes) == (depth < deepest)
        for box in boxes:
            call = full.modules[box.module]  # type: ignore[index]
            assert levels(full.modules)[call.id] == depth + 1
            assert graph.modules[call.id].params == call.params
            inside = [n for n in full.nodes if _within(full, n.module, call.id)]
            first = min(inside, key=lambda n: n.id)  # where the gradient enters it
            entering = [e for e in graph.edges if e.dst == box.id and e.grad is not None]
            seeds = [s for r, s in zip(graph.roots, graph.seeds, strict=True) if r == box.id]
            arriving = [e.grad for e in entering] + seeds
            # One way in: the gradient the module's first node received. Several (norm1's
            # output feeds the residual add and linear1): the same parts as in full.
            parts = [e.grad for e in full.in_edges(first.id)]
            assert arriving == [first.grads[0]] or sorted(arriving, key=_norm) == sorted(
                parts, key=_norm
            ), (depth, call.name)
        for edge in graph.edges:  # every gradient drawn is one the full graph holds
            if edge.grad is not None:
                assert any(edge.grad == e.grad for e in full.edges) or any(
                    edge.grad in n.grads for n in full.nodes
                )
        shown = [n for n in graph.nodes if n.kind != "module"]
        assert len(shown) + sum(1 for n in full.nodes if _boxed(full, n, view.expanded)) == len(
            full.nodes
        )


def _norm(t) -> float:
    return t.norm


def _within(graph: Graph, module: int | None, call: int) -> bool:
    while module is not None:
        if module == call:
            return True
        module = graph.modules[module].parent
    return False


def _boxed(graph: Graph, node, expanded: frozenset[int]) -> bool:
    module = node.module
    while module is not None:
        if module not in expanded:
            return True
        module = graph.modules[module].parent
    return False


def test_depth_one_draws_one_box_per_layer(encoder_graph: Graph) -> None:
    view = collapse(encoder_graph, depth=1)
    boxes = sorted(n.name for n in view.graph.nodes if n.kind == "module")  # type: ignore[type-var]
    assert boxes == [f"layers.{i} · TransformerEncoderLayer" for i in range(4)]
    dot = dot_source(Recording(graphs=[encoder_graph]), RenderOptions(depth=1))
    assert "2,224 parameters" in dot and dot.count("subgraph cluster_") == 1


def test_focus_opens_one_module_and_collapses_the_rest(encoder_graph: Graph) -> None:
    view = collapse(encoder_graph, focus="layers.2.self_attn")
    names = {n.name for n in view.graph.nodes}
    assert "layers.2.self_attn.in_proj_weight" in names
    assert "layers.1 · TransformerEncoderLayer" in names
    assert "layers.2.linear1 · Linear" in names  # a sibling of the focus: one box
    assert "layers.1.self_attn.in_proj_weight" not in names
    with pytest.raises(TracerError, match=r"no module named 'nope'.*layers\.2\.self_attn"):
        collapse(encoder_graph, focus="nope")


def test_a_large_graph_is_drawn_at_the_deepest_depth_that_fits(encoder_graph: Graph) -> None:
    assert len(encoder_graph.nodes) > SLIDE_BUDGET
    [view] = views(Recording(graphs=[encoder_graph]))
    assert view.auto and view.depth == 1 and view.boxes <= SLIDE_BUDGET
    deeper = collapse(encoder_graph, depth=2)
    assert deeper.boxes > SLIDE_BUDGET or _too_tall(deeper.graph)
    dot = dot_source(Recording(graphs=[encoder_graph]))
    assert "modules nested deeper than 1 are drawn as one box each" in dot
    assert "--depth 2" in dot


def _too_tall(graph: Graph) -> bool:
    from tracer.view.collapse import _rows

    return _rows(list(range(len(graph.nodes))), graph.edges) > SLIDE_ROWS


def test_a_small_model_is_drawn_in_full() -> None:
    graph = _train(steps=1).graphs[0]
    [view] = views(Recording(graphs=[graph]))
    assert not view.collapsed and view.graph is graph


# -- one value, written once --------------------------------------------------------------


def test_a_gradient_on_one_edge_is_not_written_again_in_the_node() -> None:
    recording = _train(steps=1).recording
    dot = dot_source(recording, RenderOptions("full"))
    graph = recording.graphs[0]
    relu = next(n for n in graph.nodes if n.op == "ReluBackward0")
    [edge] = graph.in_edges(relu.id)
    assert edge.grad == relu.grads[0]
    line = next(x for x in dot.splitlines() if x.strip().startswith(f"g0n{relu.id} [label"))
    assert ">grad<" not in line  # on its edge only
    leaf = next(n for n in graph.nodes if n.name == "fc1.weight")
    leaf_line = next(x for x in dot.splitlines() if x.strip().startswith(f"g0n{leaf.id} [label"))
    assert ".grad = the gradient on its edge" in leaf_line


def test_the_slide_view_summarises_large_tensors() -> None:
    recording = _train(steps=1).recording
    slide = dot_source(recording, RenderOptions("slide"))
    assert "16×3 ‖·‖" in slide  # fc1.weight's gradient, one line
    full = dot_source(recording, RenderOptions("full"))
    assert "16×3 ‖·‖" not in full


# -- passes and accumulated leaves -----------------------------------------------------------


def test_render_one_pass(tmp_path: Path) -> None:
    t = _train()
    t.render(tmp_path / "two.dot", pass_=2)
    dot = (tmp_path / "two.dot").read_text()
    assert "backward pass 2" in dot and "backward pass 1" not in dot
    assert "subgraph cluster_g1" not in dot  # one graph
    with pytest.raises(TracerError, match="no backward pass 4: this trace has passes 1 to 3"):
        t.render(tmp_path / "four.dot", pass_=4)
    assert not (tmp_path / "four.dot").exists()


def test_accumulated_leaves_say_so_with_both_numbers() -> None:
    t = _train()
    first, second, _ = t.graphs
    for leaf in first.leaves():
        assert leaf.grad_before is None
    for leaf in second.leaves():
        before = next(n for n in first.leaves() if n.name == leaf.name).leaf_grad
        assert leaf.grad_before == before  # what .grad held: pass 1's
        assert leaf.leaf_grad is not None and leaf.leaf_grad != leaf.grads[0]
    dot = dot_source(t.pass_recording(2), RenderOptions("full"))
    assert dot.count("accumulated: previous + this pass") == 4
    assert dot.count(">previous<") == 4 and dot.count(">.grad<") == 4
    assert "accumulated" not in dot_source(t.pass_recording(1))


def test_zero_grad_means_nothing_accumulated() -> None:
    t = _train(zero_grad=True)
    assert all(leaf.grad_before is None for g in t.graphs for leaf in g.leaves())
    assert "accumulated" not in dot_source(t.recording)


# -- torch's sentinels ----------------------------------------------------------------------


def test_saved_sentinel_prints_as_written() -> None:
    z = torch.randn(3, 4, requires_grad=True)
    y = torch.tensor([1, 0, 3])
    with tracer.trace(saved=True) as t:
        nn.CrossEntropyLoss()(z, y).backward()
    nll = next(n for n in t.graphs[0].nodes if n.op == "NllLossBackward0")
    saved = {s.name: s.text for s in nll.saved}
    assert saved["ignore_index"] == "-100"
    assert "saved ignore_index = -100" in dot_source(t.recording, RenderOptions(saved=True))


# -- the gallery's real models and the command line -------------------------------------------


@pytest.mark.parametrize("slug", ["cnn", "transformer-layer"])
def test_real_model_exercises(slug: str) -> None:
    recording = get(slug).run()
    assert recording.passed is True
    graph = recording.graphs[0]
    assert graph.modules
    [view] = views(recording, RenderOptions("slide"))
    assert view.boxes <= SLIDE_BUDGET
    names = {n.name for n in view.graph.nodes}
    checked = {c.name for c in recording.checks}
    assert checked <= names  # the checked layer is drawn, not hidden in a box


def test_cli_depth_and_focus(tmp_path: Path) -> None:
    runner = CliRunner()
    r = runner.invoke(app, ["transformer-layer", "--out", str(tmp_path / "a.dot"), "--depth", "1"])
    assert r.exit_code == 0, r.output
    assert "note: backward pass 1: modules nested deeper than 1" in r.stdout
    r = runner.invoke(
        app, ["transformer-layer", "--out", str(tmp_path / "b.dot"), "--focus", "encoder.norm1"]
    )
    assert r.exit_code == 0, r.output
    assert "encoder.norm1.weight" in (tmp_path / "b.dot").read_text()
    r = runner.invoke(app, ["transformer-layer", "--out", str(tmp_path / "c.dot"), "--depth", "x"])
    assert r.exit_code == 2 and "--depth" in r.stderr and "Traceback" not in r.output
    r = runner.invoke(app, ["cnn", "--out", str(tmp_path / "d.dot"), "--focus", "nope"])
    assert r.exit_code == 2 and "no module named 'nope'" in r.stderr
    assert not (tmp_path / "d.dot").exists()


def test_trace_run_on_a_training_loop(tmp_path: Path) -> None:
    script = tmp_path / "train.py"
    script.write_text(
        "import torch\nfrom torch import nn\ntorch.manual_seed(0)\n"
        "model = nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 2))\n"
        "opt = torch.optim.SGD(model.parameters(), lr=0.1)\n"
        "X, y = torch.randn(4, 3), torch.tensor([0, 1, 1, 0])\n"
        "for step in range(3):\n"
        "    loss = nn.functional.cross_entropy(model(X), y)\n"
        "    loss.backward()\n"
        "    opt.step()\n"
    )
    out = tmp_path / "pics"
    r = CliRunner().invoke(app, ["run", str(script), "--out", str(out), "--format", "dot"])
    assert r.exit_code == 0, r.output
    third = (out / "03-line9.dot").read_text()
    assert "2.weight" in third and "0 · Linear" in third
    assert "accumulated: previous + this pass" in third
