"""The assembly: a walked graph and its gradient flow, summarised, as a plain-data `Graph`.

Everything the walk and the hooks queued is summarised in one batch (tracer.record.summary),
then each key is replaced by its `TensorData`: no torch object is left in what is returned.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import torch

from tracer.model.graph import Edge, Graph, GraphKind, Saved
from tracer.model.tensor import TensorData
from tracer.record.capture.flow import GradientFlow
from tracer.record.capture.walk import GradFn, GraphWalk, ValueKey


def assemble(
    walk: GraphWalk,
    flow: GradientFlow | None,
    *,
    kind: GraphKind,
    number: int,
    seeds: Sequence[torch.Tensor | None] = (),
    results: Mapping[GradFn, torch.Tensor] | None = None,
) -> Graph:
    """The plain-data graph of `walk`, with the gradients `flow` saw (None: a graph that
    was never run backward, a manual formula's).

    `results` maps a node to the gradient `torch.autograd.grad` returned for it: that call
    does not run the leaves' AccumulateGrad, so their arriving gradient comes from here.
    """
    summary = walk.summary
    add = summary.add
    nodes = walk.nodes
    arrived: dict[int, list[Hashable | None]] = {}
    for step, (node_id, grads) in enumerate(flow.arrivals if flow else (), start=1):
        nodes[node_id].step = step
        if grads is not None:
            arrived[node_id] = grads
    leaf_grads: dict[int, Hashable] = {}
    for node_id, leaf in walk.leaves.items():
        if leaf.grad is not None:
            leaf_grads[node_id] = add(leaf.grad)
            if nodes[node_id].step is not None and node_id not in arrived:
                arrived[node_id] = [leaf_grads[node_id]]  # .grad was None: it is the arrival
    for fn, returned in (results or {}).items():
        found = walk.index.get(fn)
        if found is not None and found not in arrived and returned is not None:
            arrived[found] = [add(returned)]
    sent = flow.sent if flow else {}
    seed_keys = [None if s is None else add(s) for s in seeds]
    summary.run()
    summarised = summary.results

    def data(key: ValueKey) -> TensorData | None:
        if key is None or isinstance(key, TensorData):
            return key
        return summarised[key]

    for node_id, keys in walk.forward_keys.items():
        nodes[node_id].forward = tuple([data(k) for k in keys])
    for node_id, keys in arrived.items():  # keys or None: `data` inline, once per node
        nodes[node_id].grads = tuple([None if k is None else summarised[k] for k in keys])
    for node_id, key in leaf_grads.items():
        nodes[node_id].leaf_grad = data(key)
    for node_id, saved in walk.saved_keys.items():
        nodes[node_id].saved = tuple(
            Saved(entry.name, data(entry.key), entry.text, entry.source) for entry in saved
        )
    for node_id, record in enumerate(walk.records):
        # Later passes through the same graph reuse the summaries; the tensors go.
        if record is not None and record.seen_forward and nodes[node_id].kind == "op":
            record.summarised({i: value for i, value in enumerate(nodes[node_id].forward) if value})
    incoming = walk.incoming
    edges = []
    for src, dst, slot, output in walk.edges:
        grad: TensorData | None = None
        if src in sent:
            grad = data(sent[src][slot]) if slot < len(sent[src]) else None
        elif node_grads := nodes[dst].grads:
            if incoming[(dst, output)] == 1 and output < len(node_grads):
                grad = node_grads[output]
        edges.append(Edge(src, dst, slot, output, grad))
    edges.extend(Edge(e.src, e.constant, e.position) for e in walk.constant_edges)
    return Graph(
        kind=kind,
        number=number,
        nodes=nodes,
        edges=edges,
        roots=walk.roots,
        seeds=[data(k) for k in seed_keys] if seeds else [None] * len(walk.roots),
    )
