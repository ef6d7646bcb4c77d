"""The gradient flow over a run (issue 19, point 2): its numbers against a hand
computation at every step, vanishing and exploding layers marked, its JSON read back, its
chart's elements, and the first law: a training loop computes the same bits with it."""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET

import pytest
import torch
from torch import nn

import tracer
from tracer.model.flow import EXPLODING, VANISHING, GradientFlow, gradient_kind
from tracer.output.flowchart import flow_svg
from tracer.record.gradflow import FlowRecorder
from tracer.record.modules import ModuleTracker

SVG = "{http://www.w3.org/2000/svg}"


def mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3), nn.Sigmoid())


def data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(16, 4, generator=g), torch.rand(16, 3, generator=g)


def train(model: nn.Module, steps: int, hand: dict[str, list] | None = None) -> list[float]:
    """A small training loop with Adam; `hand` collects, per step, each parameter's
    ‖.grad‖, ‖w‖ and ‖w_after − w_before‖/‖w_before‖, computed here with torch's own
    vector_norm, outside any fused call."""
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    x, y = data()
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        loss = nn.functional.mse_loss(model(x), y)
        loss.backward()
        losses.append(loss.item())
        if hand is not None:
            with torch.no_grad():
                params = list(model.parameters())
                hand["grad"].append([torch.linalg.vector_norm(p.grad).item() for p in params])
                hand["data"].append([torch.linalg.vector_norm(p).item() for p in params])
                before = [p.detach().clone() for p in params]
        opt.step()
        if hand is not None:
            with torch.no_grad():
                hand["update"].append(
                    [
                        (torch.linalg.vector_norm(p - b) / torch.linalg.vector_norm(b)).item()
                        for p, b in zip(params, before, strict=True)
                    ]
                )
    return losses


def test_the_flow_is_the_hand_computed_norms_at_every_step() -> None:
    model = mlp()
    hand: dict[str, list] = {"grad": [], "data": [], "update": []}
    with tracer.trace(values=False) as t:
        train(model, 6, hand)
    flow = t.flow
    assert flow.passes == 6 and flow.recorded == [True] * 6
    assert flow.steps == [1, 2, 3, 4, 5, 6]
    names = [name for name, _ in model.named_parameters()]
    assert [p.name for p in flow.parameters] == names
    assert [p.module for p in flow.parameters] == ["0", "0", "2", "2"]
    assert [p.module_class for p in flow.parameters] == ["Linear"] * 4
    for i, p in enumerate(flow.parameters):
        assert p.grad_norm == pytest.approx([step[i] for step in hand["grad"]], rel=1e-6)
        assert p.data_norm == pytest.approx([step[i] for step in hand["data"]], rel=1e-6)
        assert p.grad_to_data() == pytest.approx(
            [g[i] / d[i] for g, d in zip(hand["grad"], hand["data"], strict=True)], rel=1e-6
        )
        assert p.update_to_data() == pytest.approx([s[i] for s in hand["update"]], rel=1e-5)
    # A layer is its parameters taken together: ‖g‖ = √(‖g_weight‖² + ‖g_bias‖²).
    first = flow.layers()[0]
    assert first.label == "0 · Linear"
    assert first.grad_norm[2] == pytest.approx(math.hypot(*hand["grad"][2][:2]), rel=1e-6)


def test_module_outputs_at_recorded_passes_mean_std_and_saturation() -> None:
    model = mlp()
    with tracer.trace(values=False) as t:
        train(model, 1)
    x, _ = data()
    with torch.no_grad():  # the same forward, by hand (the weights as they were: one step later
        torch.manual_seed(0)  # they changed, so rebuild them)
        fresh = mlp()
        hidden = fresh[1](fresh[0](x))
        out = fresh[3](fresh[2](hidden))
    stats = {a.module: a for a in t.flow.activations}
    assert [a.module_class for a in t.flow.activations] == ["Linear", "Tanh", "Linear", "Sigmoid"]
    assert stats["1"].mean == pytest.approx(hidden.mean().item(), rel=1e-5)
    assert stats["1"].std == pytest.approx(hidden.std(correction=0).item(), rel=1e-5)
    assert stats["1"].saturated == pytest.approx((hidden.abs() > 0.99).float().mean().item())
    sigmoid_tails = ((out < 0.01) | (out > 0.99)).float().mean().item()
    assert stats["3"].saturated == pytest.approx(sigmoid_tails)
    assert stats["0"].saturated is None  # a Linear layer does not saturate


def test_a_saturated_tanh_is_counted() -> None:
    linear = nn.Linear(3, 50)
    layer = nn.Sequential(linear, nn.Tanh())
    with torch.no_grad():
        linear.weight.mul_(100.0)
    with tracer.trace(values=False) as t:
        layer(torch.randn(8, 3)).sum().backward()
    (tanh,) = [a for a in t.flow.activations if a.module_class == "Tanh"]
    assert tanh.saturated is not None and tanh.saturated > 0.8


def test_a_vanishing_chain_and_an_exploding_one_are_marked() -> None:
    torch.manual_seed(0)
    deep = nn.Sequential(*[m for _ in range(30) for m in (nn.Linear(4, 4), nn.Sigmoid())])
    with tracer.trace(values=False) as t:
        deep(torch.randn(2, 4)).sum().backward()
    kinds = {m.label: m.kind for m in t.flow.marks()}
    assert kinds.get("0 · Linear") == "vanishing"  # the first layer: 30 sigmoids below the loss
    assert "58 · Linear" not in kinds  # the last one gets a healthy gradient

    torch.manual_seed(0)
    big = nn.Sequential(nn.Linear(4, 64), nn.Linear(64, 64), nn.Linear(64, 1))
    with torch.no_grad():
        for p in big.parameters():
            p.mul_(1e3)
    with tracer.trace(values=False) as t2:
        big(torch.randn(8, 4)).sum().backward()
    assert {m.kind for m in t2.flow.marks()} == {"exploding"}

    svg = ET.fromstring(flow_svg(t.flow))
    ids = {g.get("id") for g in svg.iter(f"{SVG}g")}
    assert {"vanishing-threshold", "exploding-threshold", "vanishing-marks"} <= ids
    assert "exploding-marks" not in ids
    assert "exploding-marks" in {
        g.get("id") for g in ET.fromstring(flow_svg(t2.flow)).iter(f"{SVG}g")
    }


def test_the_chart_has_one_line_per_layer_and_is_deterministic() -> None:
    model = mlp()
    with tracer.trace(values=False) as t:
        train(model, 3)
    svg = flow_svg(t.flow, "run")
    assert svg == flow_svg(t.flow, "run")
    ids = [g.get("id") for g in ET.fromstring(svg).iter(f"{SVG}g")]
    assert sorted(i for i in ids if i and i.startswith("layer-")) == ["layer-0", "layer-1"]
    assert "0 · Linear" in svg and "2 · Linear" in svg  # the legend, as text


def test_the_json_reads_back_nan_and_inf_included() -> None:
    model = mlp()
    with tracer.trace(values=False) as t:
        train(model, 2)
    flow = t.flow
    flow.parameters[0].grad_norm[1] = math.inf
    flow.parameters[1].grad_norm[0] = math.nan
    text = flow.to_json()
    assert "NaN" in text and "Infinity" in text
    back = GradientFlow.from_json(text)
    assert back.parameters[0].grad_norm[1] == math.inf
    assert math.isnan(back.parameters[1].grad_norm[0])  # type: ignore[arg-type]
    back.parameters[1].grad_norm[0] = flow.parameters[1].grad_norm[0] = 0.0
    assert back == flow
    with pytest.raises(tracer.TracerError, match="not a tracer gradient flow"):
        GradientFlow.from_json('{"recorded": []}')
    assert gradient_kind(math.nan) == "exploding"
    assert gradient_kind(0.0) == "vanishing" and gradient_kind(None) is None
    assert gradient_kind(VANISHING) is None and gradient_kind(EXPLODING) is None


def test_an_optimizers_own_tensors_are_named_by_the_code() -> None:
    """Tutorial style: no nn.Module, raw tensors handed to an optimizer."""
    torch.manual_seed(0)
    w = torch.randn(3, requires_grad=True)
    b = torch.zeros(1, requires_grad=True)
    opt = torch.optim.SGD([w, b], lr=0.1)
    x = torch.randn(5, 3)
    with tracer.trace(values=False) as t:
        for _ in range(3):
            opt.zero_grad()
            ((x @ w + b) ** 2).mean().backward()
            assert w.grad is not None
            grad = w.grad.norm().item()
            opt.step()
    flow = t.flow
    assert [p.name for p in flow.parameters] == ["w", "b"]
    # Seen at the first step, just after pass 1: that pass's gradient is read there.
    assert flow.parameters[0].grad_norm[0] is not None
    assert flow.parameters[0].grad_norm[2] == pytest.approx(grad, rel=1e-6)
    assert all(u is not None for u in flow.parameters[0].update_to_data())


def test_an_unrecorded_pass_keeps_its_norms_but_not_its_module_outputs() -> None:
    model = nn.Sequential(nn.Linear(2, 2), nn.Tanh())
    tracker = ModuleTracker()
    recorder = FlowRecorder(tracker, lambda t: None, print, selects=lambda n: n != 2)
    tracker.enter(model)  # the module hooks' work, by hand
    tracker.exit(model)
    for number in (1, 2, 3):
        assert recorder.wants_outputs() == (number != 2)
        out = model(torch.ones(1, 2))
        recorder.module_output(model[1], out)
        out.sum().backward()
        recorder.after_pass(number, recorded=number != 2)
    flow = recorder.flow
    assert flow.recorded == [True, False, True]
    assert [a.pass_number for a in flow.activations] == [1, 3]
    assert all(g is not None for g in flow.parameters[0].grad_norm)


def test_the_flow_changes_nothing_and_leaves_no_hook() -> None:
    from torch.optim.optimizer import _global_optimizer_post_hooks, _global_optimizer_pre_hooks

    plain = train(mlp(), 5)
    plain_params = [p.detach().clone() for p in mlp().parameters()]
    model = mlp()
    with tracer.trace() as t:
        traced = train(model, 5)
    assert traced == plain  # bit for bit, every loss
    untraced_model = mlp()
    train(untraced_model, 5)
    for a, b in zip(model.parameters(), untraced_model.parameters(), strict=True):
        assert torch.equal(a, b)
    assert len(plain_params) == 4
    assert not _global_optimizer_pre_hooks and not _global_optimizer_post_hooks
    assert t.flow.passes == 5

    with pytest.raises(ZeroDivisionError), tracer.trace():
        opt = torch.optim.SGD(mlp().parameters(), lr=0.1)
        opt.step()
        raise ZeroDivisionError
    assert not _global_optimizer_pre_hooks and not _global_optimizer_post_hooks


def test_the_users_modes_see_the_same_calls_in_a_training_step() -> None:
    """The flow's norms, copies and module statistics are hidden from the user's own
    dispatch and function modes: they see a training step's calls as untraced."""
    from test_observer import Calls, NamesSeen, assert_nothing_left, maybe_traced

    def program(traced: bool) -> tuple[list[str], list[str], list[float]]:
        model = mlp()
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        x, y = data()
        calls, names = Calls(), NamesSeen()
        with maybe_traced(traced), names, calls:
            for _ in range(2):
                opt.zero_grad()
                nn.functional.mse_loss(model(x), y).backward()
                opt.step()
        return calls.seen, names.seen, [p.sum().item() for p in model.parameters()]

    assert program(True) == program(False)
    assert_nothing_left()


def test_a_change_between_the_pass_and_the_step_is_seen() -> None:
    """Norms are read again when a parameter's version moved (here: scaled in place after
    backward, before the step), so ‖w_before‖ is the parameter the step started from."""
    model = nn.Linear(3, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with tracer.trace(values=False) as t:
        for _ in range(2):
            opt.zero_grad()
            model(torch.ones(4, 3)).sum().backward()
            at_pass = torch.linalg.vector_norm(model.weight).item()
            with torch.no_grad():
                model.weight.mul_(2.0)
            before = model.weight.detach().clone()
            opt.step()
            change = torch.linalg.vector_norm(model.weight - before).item()
    weight = t.flow.parameters[0]
    assert weight.data_norm[-1] == pytest.approx(at_pass, rel=1e-6)
    assert weight.update_base[-1] == pytest.approx(2 * at_pass, rel=1e-6)
    assert weight.update_norm[-1] == pytest.approx(change, rel=1e-6)
