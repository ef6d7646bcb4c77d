"""Rendering to files: every user string reaches every format as text, files get the mode a
new file would, a lone graph has no cluster around it, and Graphviz runs under a limit."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
import torch

import tracer
from tracer.errors import TracerError
from tracer.output.render import render_dot, write

HOSTILE = [
    "odd\\",  # an odd number of backslashes at the end
    'quote"d',
    "expand\\G\\N\\L",  # Graphviz escapes, expanded in labels unless doubled
    "ctrl\x01\x1b",
    "surrogate\udc80",
    "w" * 10_000,
    "<img src=x onerror=alert(1)>",
]


def hostile_recording() -> tracer.Recording:
    x = torch.tensor([1.0, 2.0], requires_grad=True)
    with tracer.trace('title "quoted" \\N') as t:
        y = x
        tensors = {}
        for i in range(len(HOSTILE)):
            y = y * (i + 2.0)
            tensors[f"v{i}"] = y
        t.name_tensors(tensors)
        y.sum().backward()
    # Names need not be identifiers: a namespace with odd keys (a dict from user code)
    # gives such names. The recording is plain data: give its nodes the hostile ones.
    hostile = {f"v{i}": name for i, name in enumerate(HOSTILE)}
    for node in t.recording.graphs[0].nodes:
        if node.name in hostile:
            node.name = hostile[node.name]
    assert sum(node.name in HOSTILE for node in t.recording.graphs[0].nodes) == len(HOSTILE)
    return t.recording


def test_every_user_string_reaches_every_format_as_text(tmp_path: Path) -> None:
    recording = hostile_recording()
    dot = render_dot(recording)
    assert "expand\\\\G\\\\N\\\\L" in dot  # doubled: Graphviz shows one backslash, expands none
    assert "<B>odd\\\\</B>" in dot  # the backslash cannot swallow the tag after it
    assert "&lt;img src=x onerror=alert(1)&gt;" in dot and "<img" not in dot
    assert "ctrl\\\\x01\\\\x1b" in dot and "\x01" not in dot
    assert "w" * 10_000 not in dot  # cut: Graphviz cannot lay out an overwide node
    for suffix in ("svg", "png", "pdf", "dot", "json", "html"):
        write(recording, tmp_path / f"hostile.{suffix}")  # none raises
    svg = (tmp_path / "hostile.svg").read_text(encoding="utf-8")
    texts = svg.replace("&#160;", " ")
    for shown in ("odd\\", "quote&quot;d", "expand\\G\\N\\L", "ctrl\\x01\\x1b", "&lt;img src"):
        assert shown in texts, shown
    # Strict UTF-8 and standard JSON (what jq reads): the lone surrogate is a \\u escape.
    raw = json.loads((tmp_path / "hostile.json").read_bytes().decode("utf-8", "strict"))
    names = {n["name"] for n in raw["graphs"][0]["nodes"]}
    assert "odd\\" in names and "w" * 10_000 in names  # the data keeps the full name
    assert "surrogate\udc80" in names
    page = (tmp_path / "hostile.html").read_bytes().decode("utf-8", "strict")
    assert "surrogate\\udc80" in page  # escaped in the page's data, read back by JavaScript
    assert "<img src=x" not in page


def test_a_lone_graph_has_no_cluster_and_several_do() -> None:
    x = torch.tensor([1.0, 2.0], dtype=torch.float64, requires_grad=True)
    with tracer.trace() as t:
        (x * x).sum().backward()
    assert "subgraph cluster_" not in render_dot(t.recording)
    assert "autograd: backward pass 1" in render_dot(t.recording)  # in the heading instead
    with tracer.trace() as t:
        (x * x).sum().backward()
        t.check(x, 2 * x, quiet=True)  # a manual graph beside autograd's
    assert render_dot(t.recording).count("subgraph cluster_") == 2


def test_graphviz_runs_under_a_time_limit(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    x = torch.tensor([1.0], requires_grad=True)
    with tracer.trace() as t:
        y = x
        for _ in range(300):
            y = y * 1.0
        y.sum().backward()
    monkeypatch.setenv("TRACER_DOT_TIMEOUT", "0.001")
    good = tmp_path / "graph.svg"
    good.write_text("a good picture")
    with pytest.raises(TracerError) as raised:
        t.render(good)
    message = str(raised.value)
    assert "did not lay out" in message and ".dot or .json" in message
    assert good.read_text() == "a good picture"  # nothing clobbered
    t.render(tmp_path / "graph.dot")  # needs no layout, no limit


def test_files_get_the_mode_a_new_file_would(tmp_path: Path) -> None:
    x = torch.tensor([1.0], requires_grad=True)
    with tracer.trace() as t:
        (x * 2).sum().backward()
    old = os.umask(0o077)
    try:
        fresh = t.render(tmp_path / "fresh.dot")
    finally:
        os.umask(old)
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o600  # 0666 less the umask
    existing = tmp_path / "existing.dot"
    existing.write_text("old")
    existing.chmod(0o640)
    t.render(existing)
    assert stat.S_IMODE(existing.stat().st_mode) == 0o640  # an existing file keeps its mode
    assert existing.read_text() != "old"


def test_a_symlinked_output_writes_the_file_it_points_to(tmp_path: Path) -> None:
    x = torch.tensor([1.0], requires_grad=True)
    with tracer.trace() as t:
        (x * 2).sum().backward()
    link = tmp_path / "link.dot"
    link.symlink_to(tmp_path / "target.dot")  # dangling until written
    t.render(link)
    assert link.is_symlink() and (tmp_path / "target.dot").read_text().startswith("digraph")
