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
    arrivals = flow.arrivals if flow is not None else ()
    for step, (node_id, _) in enumerate(arrivals, start=1):
        nodes[node_id].step = step
    arrived = {node_id: keys for node_id, keys in arrivals if keys is not None}
    leaf_grads: dict[int, Hashable] = {}
    for node_id, leaf in walk.leaves.items():
        leaf_grad = leaf.grad
        if leaf_grad is not None:
            leaf_grads[node_id] = key = add(leaf_grad)
            if nodes[node_id].step is not None and node_id not in arrived:
                arrived[node_id] = [key]  # .grad was None: it is the arrival
    for fn, returned in (results or {}).items():
        found = walk.index.get(fn)
        if found is not None and found not in arrived and returned is not None:
            arrived[found] = [add(returned)]
    sent = flow.sent if flow is not None else {}
    seed_keys = [None if s is None else add(s) for s in seeds]
    summary.run()
    summarised = summary.results

    def data(key: ValueKey) -> TensorData | None:
        if key is None or isinstance(key, TensorData):
            return key
        return summarised[key]

    records = walk.records
    for node_id, keys in walk.forward_keys.items():
        node = nodes[node_id]
        forward: tuple[TensorData | None, ...]
        if len(keys) == 1:  # nearly every node: one output
            node.forward = forward = (data(keys[0]),)
        else:
            node.forward = forward = tuple([data(k) for k in keys])
        record = records[node_id]
        if record is not None and node.kind == "op" and record.seen_forward:
            # Later passes through the same graph reuse the summaries; the tensors go.
            if len(forward) == 1:
                record.summarised({0: forward[0]} if forward[0] else {})
            else:
                record.summarised({i: value for i, value in enumerate(forward) if value})
    for node_id, keys in arrived.items():  # no TensorData among them: `data` inline
        if len(keys) == 1:  # nearly every node: one output
            key = keys[0]
            nodes[node_id].grads = (None if key is None else summarised[key],)
        else:
            nodes[node_id].grads = tuple([None if k is None else summarised[k] for k in keys])
    for node_id, key in leaf_grads.items():
        nodes[node_id].leaf_grad = summarised[key]
    for node_id, saved in walk.saved_keys.items():
        nodes[node_id].saved = tuple(
            Saved(entry.name, data(entry.key), entry.text, entry.source) for entry in saved
        )
    if flow is not None and flow.jacobians:
        for node_id, jacobians in flow.jacobians.items():
            nodes[node_id].jacobians = tuple(jacobians)
    incoming = walk.incoming
    # An edge into an output that others feed too carries what its source sent (a hook's,
    # above), never the sum that arrived. A cheap test first: few nodes have such an input.
    shared = {dst for (dst, _), count in incoming.items() if count > 1}
    edges = []
    for src, dst, slot, output in walk.edges:
        grad: TensorData | None = None
        sent_keys = sent.get(src)
        if sent_keys is not None:
            if slot < len(sent_keys):
                grad = data(sent_keys[slot])
        elif node_grads := nodes[dst].grads:
            if output < len(node_grads) and (dst not in shared or incoming[(dst, output)] == 1):
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
