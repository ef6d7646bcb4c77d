// The stepper page: steps through a backward pass recorded by tracer.
//
// Plain data in, nothing computed: the JSON (#tracer-data) holds every text the page shows,
// formatted in Python by tracer.view.text; the SVG is Graphviz's picture of the recording, whose
// nodes carry <title>g0n3</title> (graph 0, node 3) and edges <title>g0n1->g0n2</title>
// (seed edges start at g0seed{root}). This script shows, hides and highlights. Every text
// from the data is put in with textContent, never as markup.
(() => {
  "use strict";

  const data = JSON.parse(document.getElementById("tracer-data").textContent);
  const SVG_NS = "http://www.w3.org/2000/svg";
  const $ = (id) => document.getElementById(id);
  const viewport = $("viewport");
  const stage = $("stage");
  const svg = stage.querySelector("svg");
  const graphLayer = svg.querySelector("g.graph") || svg;
  const total = data.steps.length;
  let position = 0;

  // ---- small DOM helpers --------------------------------------------------------------

  function el(tag, className, text) {
    const e = document.createElement(tag);
    if (className) e.className = className;
    if (text !== undefined && text !== null) e.textContent = text;
    return e;
  }
  function svgEl(tag, attrs) {
    const e = document.createElementNS(SVG_NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
    return e;
  }
  // A tensor as text: its values when it has them, else its summary.
  function tensorLines(t) {
    return t.lines ? t.lines : [t.summary];
  }
  function tensorBlock(t, kind) {
    const pre = el("pre", "tensor" + (kind ? " " + kind : ""), tensorLines(t).join("\n"));
    return pre;
  }
  // ---- quiz mode (data.quiz): a gradient stays hidden until the student reveals it ------

  const revealed = new Set(); // keys of the gradients revealed so far
  function answerIsRight(typed, numbers) {
    const found = (typed.match(/[-+]?(?:\d+\.?\d*|\.\d+)(?:e[-+]?\d+)?/gi) || []).map(Number);
    if (found.length !== numbers.length) return { right: false, count: found.length };
    const { rtol, atol } = data.quiz;
    const close = found.filter((v, i) => Math.abs(v - numbers[i]) <= atol + rtol * Math.abs(numbers[i]));
    return { right: close.length === numbers.length, close: close.length };
  }
  // A gradient for the panel: shown, or (in a quiz, until revealed) a question.
  function gradBlock(t, key) {
    if (!data.quiz || revealed.has(key)) return tensorBlock(t);
    const box = el("div", "quiz");
    box.dataset.quiz = key;
    const reveal = () => { revealed.add(key); box.replaceWith(tensorBlock(t)); };
    if (t.numbers) {
      const input = el("input");
      input.type = "text";
      input.placeholder = `your answer: ${t.numbers.length} number${t.numbers.length > 1 ? "s" : ""}`;
      input.setAttribute("aria-label", "your answer");
      const check = el("button", null, "Check");
      check.type = "button";
      const said = el("div", "quiz-verdict");
      said.setAttribute("role", "status");
      const judge = () => {
        const r = answerIsRight(input.value, t.numbers);
        if (r.right) { said.textContent = "✓ right"; said.className = "quiz-verdict right"; }
        else if (r.close === undefined) {
          said.textContent = `✗ give ${t.numbers.length} number${t.numbers.length > 1 ? "s" : ""} (you gave ${r.count})`;
          said.className = "quiz-verdict wrong";
        } else {
          said.textContent = `✗ not quite: ${r.close} of ${t.numbers.length} right`;
          said.className = "quiz-verdict wrong";
        }
      };
      check.addEventListener("click", judge);
      input.addEventListener("keydown", (ev) => { ev.stopPropagation(); if (ev.key === "Enter") judge(); });
      box.append(input, check, said);
    } else {
      box.appendChild(el("div", "pending-text", "hidden: work it out, then reveal it"));
    }
    const show = el("button", "reveal", "Reveal");
    show.type = "button";
    show.addEventListener("click", reveal);
    box.appendChild(show);
    return box;
  }
  function hiddenInQuiz(key) {
    return data.quiz && !revealed.has(key);
  }

  function block(label, ...children) {
    const div = el("div", "block");
    div.appendChild(el("div", "label", label));
    for (const c of children) if (c) div.appendChild(c);
    return div;
  }

  // ---- the model: data joined to the SVG ------------------------------------------------

  const svgNodes = new Map(); // "g0n3" -> <g class="node">
  const svgEdges = new Map(); // "g0n1->g0n2" -> [<g class="edge">, ...] in drawing order
  for (const g of svg.querySelectorAll("g.node")) {
    const t = g.querySelector(":scope > title");
    if (t) svgNodes.set(t.textContent, g);
  }
  for (const g of svg.querySelectorAll("g.edge")) {
    const t = g.querySelector(":scope > title");
    if (!t) continue;
    const key = t.textContent;
    if (!svgEdges.has(key)) svgEdges.set(key, []);
    svgEdges.get(key).push(g);
  }

  const nodeKey = (gi, id) => `g${gi}n${id}`;
  const stepOf = new Map(); // node key -> 1-based position in the engine's order
  data.steps.forEach(([gi, id], k) => stepOf.set(nodeKey(gi, id), k + 1));

  const nodes = new Map(); // key -> {gi, node, graph, el, key, step, ins: [], outs: []}
  const edges = []; // {gi, edge, el, src, dst, revealAt, seed}
  const reveals = Array.from({ length: total + 1 }, () => []); // step -> items it reveals
  const itemOfEl = new Map(); // svg element -> node or edge item (for hover)

  data.graphs.forEach((graph, gi) => {
    for (const node of graph.nodes) {
      const key = nodeKey(gi, node.id);
      const item = {
        type: "node", gi, graph, node, key, el: svgNodes.get(key) || null,
        step: stepOf.get(key) || null, ins: [], outs: [],
      };
      nodes.set(key, item);
      if (item.el) itemOfEl.set(item.el, item);
    }
    const seen = new Map();
    for (const edge of graph.edges) {
      const key = `${nodeKey(gi, edge.src)}->${nodeKey(gi, edge.dst)}`;
      const n = seen.get(key) || 0;
      seen.set(key, n + 1);
      const src = nodes.get(nodeKey(gi, edge.src));
      const dst = nodes.get(nodeKey(gi, edge.dst));
      const item = {
        type: "edge", gi, edge, src, dst, seed: null, key: `${key}#${n}`,
        el: (svgEdges.get(key) || [])[n] || null,
        revealAt: edge.grad && src.step ? src.step : null,
      };
      edges.push(item);
      src.outs.push(item);
      dst.ins.push(item);
    }
    const firstStep = Math.min(
      ...graph.nodes.map((n) => stepOf.get(nodeKey(gi, n.id)) || Infinity));
    graph.roots.forEach((root, r) => {
      const seed = graph.seeds[r];
      if (!seed) return;
      const dst = nodes.get(nodeKey(gi, root));
      const key = `g${gi}seed${root}->${dst.key}`;
      const item = {
        type: "edge", gi, edge: null, src: null, dst, seed, key,
        el: (svgEdges.get(key) || [])[0] || null,
        revealAt: Number.isFinite(firstStep) ? firstStep : null,
      };
      edges.push(item);
      dst.ins.unshift(item);
    });
  });

  // Edges whose gradient has not been sent yet: grey, label hidden; revealed at their step.
  for (const e of edges) {
    if (e.el) itemOfEl.set(e.el, e);
    if (e.revealAt === null) continue;
    if (e.el) e.el.classList.add("pending");
    reveals[e.revealAt].push({ el: e.el });
  }

  // Each node's outline (the first shape of its group) takes the running highlight.
  for (const item of nodes.values()) {
    if (!item.el) continue;
    const outline = item.el.querySelector(":scope > path, :scope > polygon, :scope > ellipse");
    if (outline) outline.classList.add("outline");
    item.el.setAttribute("tabindex", "0");
    item.el.setAttribute("role", "button");
    item.el.setAttribute("aria-label", item.node.title);
  }
  for (const e of edges) {
    if (!e.el) continue;
    e.el.setAttribute("tabindex", "0");
    e.el.setAttribute("role", "button");
    e.el.setAttribute("aria-label", edgeTitle(e));
  }

  // Leaves' .grad: a box under the leaf, shown once the leaf's AccumulateGrad has run.
  function leafGradOf(item) {
    return item.node.leafGrad || (item.node.grads.length ? item.node.grads[0] : null);
  }
  for (const item of nodes.values()) {
    if (item.node.kind !== "leaf" || !item.step || !item.el || !leafGradOf(item)) continue;
    item.leafBox = null; // made on first reveal (needs the node's box)
    reveals[item.step].push({ leaf: item });
  }

  // The picture's box, and the shift of Graphviz's top group (translate(4 H)), to keep the
  // boxes this script adds inside the picture.
  const vbox = svg.viewBox.baseVal || { x: 0, y: 0 };
  const shiftMatrix = graphLayer.transform && graphLayer.transform.baseVal.consolidate();
  const graphShift = shiftMatrix ? { x: shiftMatrix.matrix.e, y: shiftMatrix.matrix.f } : { x: 0, y: 0 };
  function bbox(element) {
    try { return element.getBBox(); } catch (_) { return null; }
  }
  // A node's box in the picture's coordinates; cached, since reading it forces a layout of
  // the whole SVG when anything changed (goTo reads all it needs before changing anything).
  function boxOf(item) {
    if (item.box === undefined) item.box = item.el ? bbox(item.el) : null;
    return item.box;
  }
  function leafBox(item) {
    if (item.leafBox) return item.leafBox;
    const b = boxOf(item);
    const g = svgEl("g", { class: "leaf-grad pending" });
    const key = item.node.leafGrad ? `${item.node.name || "leaf"}.grad = ` : "grad = ";
    const values = tensorLines(leafGradOf(item));
    const lines = values.map((l, i) => (i === 0 ? key : " ".repeat(key.length)) + l);
    const lineHeight = 10.5;
    const width = Math.max(...lines.map((l) => l.length)) * 5.45 + 8;
    const height = lines.length * lineHeight + 5;
    // Under the leaf, clear of a running node's thick outline, and inside the picture.
    const x = b ? Math.max(vbox.x - graphShift.x + 2, b.x + b.width / 2 - width / 2) : 0;
    const y = b ? b.y + b.height + 6 : 0;
    g.appendChild(svgEl("rect", { x, y, width, height, rx: 3 }));
    lines.forEach((line, i) => {
      const t = svgEl("text", { x: x + 4, y: y + 11 + i * lineHeight });
      t.setAttribute("xml:space", "preserve");
      t.textContent = line;
      g.appendChild(t);
    });
    graphLayer.appendChild(g);
    item.leafBox = g;
    return g;
  }

  // ✓ on done nodes and ▶ on the running one: made when first needed.
  function mark(item, kind) {
    const field = kind === "run" ? "runMark" : "doneMark";
    if (!item[field]) {
      const b = boxOf(item);
      if (!b) return null;
      const t = svgEl("text", {
        class: `mark ${kind}`,
        x: kind === "run" ? b.x - 18 : b.x + b.width + 3,
        y: kind === "run" ? b.y + b.height / 2 + 6 : b.y + 14,
      });
      t.textContent = kind === "run" ? "▶" : "✓";
      item.el.appendChild(t);
      item[field] = t;
    }
    return item[field];
  }

  // ---- stepping --------------------------------------------------------------------------

  const stepItems = data.steps.map(([gi, id]) => nodes.get(nodeKey(gi, id)));

  // The steps the page shows: the engine's, with consecutive steps inside one folded
  // cluster merged into one (the box's step: it ends where its last node ran). With
  // nothing folded, one per engine step. `position` stays the engine's step.
  let runs = [];
  function computeRuns() {
    runs = [];
    stepItems.forEach((item, k) => {
      const box = boxOfItem(item);
      const last = runs[runs.length - 1];
      if (last && last.box === box && box !== item) last.end = k + 1;
      else runs.push({ box, start: k + 1, end: k + 1 });
    });
  }
  // The shown step holding the engine's `position` (0: before backward), and that run.
  function runIndex(pos = position) {
    if (pos <= 0) return 0;
    let lo = 0, hi = runs.length - 1;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (runs[mid].end < pos) lo = mid + 1; else hi = mid;
    }
    return lo + 1;
  }
  function currentRun() {
    return position > 0 ? runs[runIndex() - 1] || null : null;
  }
  // Move by shown steps: a folded box is one.
  function stepTo(index) {
    index = Math.max(0, Math.min(runs.length, index));
    goTo(index === 0 ? 0 : runs[index - 1].end);
  }
  function stepBy(delta) {
    stepTo(runIndex() + delta);
  }

  function setRevealed(entry, shown) {
    if (entry.el) entry.el.classList.toggle("pending", !shown);
    if (entry.leaf) leafBox(entry.leaf).classList.toggle("pending", !shown);
  }
  function setDone(item, done) {
    const m = done ? mark(item, "done") : item.doneMark;
    if (m) m.style.display = done ? "" : "none";
  }
  let running = null;
  function setRunning(item) {
    if (running) {
      running.el && running.el.classList.remove("running");
      if (running.runMark) running.runMark.style.display = "none";
      for (const e of running.ins) e.el && e.el.classList.remove("flow-in");
      for (const e of running.outs) e.el && e.el.classList.remove("flow-out");
    }
    running = item;
    if (!item) return;
    if (item.el) {
      item.el.classList.add("running");
      const m = mark(item, "run");
      if (m) m.style.display = "";
    }
    for (const e of item.ins) if (e.el && (e.seed || e.edge.grad)) e.el.classList.add("flow-in");
    for (const e of item.outs) if (e.el && e.edge.grad) e.el.classList.add("flow-out");
    markFoldedRunning();
  }

  function goTo(target, { follow = true, force = false } = {}) {
    target = Math.max(0, Math.min(total, target | 0));
    if (!force && target === position && running === (stepItems[target - 1] || null)) return;
    const from = position;
    // Reads first (node boxes, for the marks and .grad boxes), then only writes.
    const lo = Math.max(Math.min(from, target), 1), hi = Math.max(from, target);
    for (let k = lo; k <= hi; k++) {
      boxOf(stepItems[k - 1]);
      for (const r of reveals[k]) if (r.leaf) boxOf(r.leaf);
    }
    if (target > from) {
      for (let k = from + 1; k <= target; k++) for (const r of reveals[k]) setRevealed(r, true);
      for (let k = Math.max(from, 1); k < target; k++) setDone(stepItems[k - 1], true);
    } else {
      for (let k = from; k > target; k--) for (const r of reveals[k]) setRevealed(r, false);
      for (let k = Math.max(target, 1); k < from; k++) setDone(stepItems[k - 1], false);
    }
    position = target;
    setRunning(stepItems[position - 1] || null);
    showControls();
    showStep();
    if (follow && running) followRunning();
    document.body.dataset.position = String(position);
  }

  // Keep the running node in view, or the title of the folded box it runs in (a box can be
  // larger than the screen: its title says what runs).
  function followRunning() {
    const run = currentRun();
    const folded = run && run.box !== running ? run.box : null;
    const title = folded && folded.cover ? folded.cover.querySelector("text") : null;
    const box = folded ? (title && bbox(title)) || folded.box : boxOf(running);
    if (box) keepBoxInView(box);
  }

  // ---- the controls --------------------------------------------------------------------

  const slider = $("slider");
  slider.max = String(total);
  function showControls() {
    const shown = runIndex(), steps = runs.length;
    slider.max = String(steps);
    slider.value = String(shown);
    slider.setAttribute("aria-valuetext", `step ${shown} of ${steps}`);
    $("counter").textContent = `step ${shown} / ${steps}` + (shown === 0 ? " · forward graph" : "");
    $("first").disabled = $("prev").disabled = position === 0;
    $("next").disabled = $("last").disabled = position === total;
  }
  let timer = null;
  function setPlaying(on) {
    if (on && position === total) goTo(0);
    if (timer) { clearInterval(timer); timer = null; }
    if (on) {
      timer = setInterval(() => {
        if (position >= total) setPlaying(false); else stepBy(1);
      }, Number($("speed").value));
    }
    const play = $("play");
    play.setAttribute("aria-pressed", on ? "true" : "false");
    play.textContent = on ? "⏸ Pause" : "▶ Play";
  }
  $("first").addEventListener("click", () => goTo(0));
  $("prev").addEventListener("click", () => stepBy(-1));
  $("next").addEventListener("click", () => stepBy(1));
  $("last").addEventListener("click", () => goTo(total));
  $("play").addEventListener("click", () => setPlaying(!timer));
  $("speed").addEventListener("change", () => { if (timer) setPlaying(true); });
  slider.addEventListener("input", () => stepTo(Number(slider.value)));
  $("zoom-in").addEventListener("click", () => zoomBy(1.25));
  $("zoom-out").addEventListener("click", () => zoomBy(0.8));
  $("zoom-fit").addEventListener("click", () => fit());

  // ---- the side panel ------------------------------------------------------------------

  function nodeTitle(item) {
    return item ? item.node.title : "";
  }
  function edgeTitle(e) {
    if (e.seed) return `seed → ${nodeTitle(e.dst)}`;
    return `${nodeTitle(e.src)} → ${nodeTitle(e.dst)} (input ${e.edge.slot})`;
  }
  function passNote(item) {
    const passes = data.graphs.filter((g) => g.kind === "backward").length;
    const label = data.graphs[item.gi].label;
    return passes > 1 ? ` · ${label}, engine step ${item.node.step}` : "";
  }

  function showStep() {
    const box = $("step-info");
    box.replaceChildren();
    const heading = el("h2", null, position === 0 ? "Before backward" : `Step ${runIndex()} of ${runs.length}`);
    box.appendChild(heading);
    if (!running) {
      box.appendChild(el("p", null,
        "The forward graph, as autograd recorded it. Press → (Next) to start the backward pass: " +
        "the seed gradient enters the output, then the engine runs one node per step."));
      for (const e of edges) {
        if (!e.seed) continue;
        box.appendChild(block(`seed for ${nodeTitle(e.dst)}`, tensorBlock(e.seed)));
      }
      showLeaves();
      return;
    }
    const run = currentRun();
    if (run && run.box !== running) {
      showBoxStep(box, run);
      showLeaves();
      return;
    }
    const n = running.node;
    const head = el("p", "running");
    head.id = "running-title";
    head.textContent = `▶ running: ${n.title}`;
    box.appendChild(head);
    const what = n.kind === "leaf"
      ? `${n.op}: adds the gradient that arrived to ${n.name ? n.name + ".grad" : "the leaf's .grad"}`
      : `${n.op}: the chain rule for this op, from the gradient of its output to its inputs`;
    box.appendChild(el("p", "where", what + passNote(running)));

    n.forward.forEach((t, i) => {
      if (t) box.appendChild(block(n.forward.length > 1 ? `forward value ${i}` : "forward value", tensorBlock(t, "value")));
    });
    if (n.saved.length) {
      const list = el("div");
      for (const s of n.saved) {
        const row = el("div", "sub");
        if (s.tensor && !s.source) {
          row.textContent = `${s.name} =`;
          list.appendChild(row);
          list.appendChild(tensorBlock(s.tensor, "plain"));
        } else {
          row.textContent = `${s.name} = ${s.source ?? s.text ?? ""}`;
          list.appendChild(row);
        }
      }
      box.appendChild(block("saved for backward", list));
    }
    showGradIn(box, running);
    if (n.kind === "leaf") {
      const g = leafGradOf(running);
      if (g) {
        const b = block(n.leafGrad ? `${n.name ? n.name + ".grad" : ".grad"} is now` : "gradient returned", gradBlock(g, `${running.key}:leaf`));
        b.dataset.role = "leaf-grad";
        box.appendChild(b);
      }
    } else {
      showGradOut(box, running);
    }
    showLeaves();
  }

  // A folded cluster's step: the nodes it ran, the gradients that entered it and those
  // that left it (the texts are the data's; edges are told apart by their ends).
  function showBoxStep(box, run) {
    const c = run.box;
    const head = el("p", "running");
    head.id = "running-title";
    head.textContent = `▶ running: ${c.label}`;
    box.appendChild(head);
    const count = run.end - run.start + 1;
    const span = count > 1 ? `engine steps ${run.start}–${run.end}` : `engine step ${run.start}`;
    box.appendChild(el("p", "where",
      `a folded box: ${count} of its ${c.members.size} nodes run here (${span}); ` +
      "click it, or unfold it in the panel, to step through them one by one"));
    const crossing = (e) => e.edge && e.edge.grad && c.members.has(e.src) !== c.members.has(e.dst);
    const ins = [], outs = [];
    for (let k = run.start; k <= run.end; k++) {
      const item = stepItems[k - 1];
      for (const e of item.ins) if (e.seed || crossing(e)) ins.push(e);
      for (const e of item.outs) if (crossing(e)) outs.push(e);
    }
    const into = el("div");
    into.dataset.role = "box-in";
    for (const e of ins) {
      into.appendChild(el("div", "sub", e.seed ? `the seed, into ${nodeTitle(e.dst)}` : `from ${nodeTitle(e.src)} into ${nodeTitle(e.dst)}`));
      into.appendChild(e.seed ? tensorBlock(e.seed) : gradBlock(e.edge.grad, `${e.key}:sent`));
    }
    box.appendChild(block(ins.length ? "gradients in" : "no gradient entered it in these steps", into));
    const out = el("div");
    out.dataset.role = "box-out";
    for (const e of outs) {
      const div = el("div", "slot");
      div.appendChild(el("div", null, `${nodeTitle(e.src)} → ${nodeTitle(e.dst)} (input ${e.edge.slot})`));
      const pre = gradBlock(e.edge.grad, `${e.key}:sent`);
      pre.dataset.role = "box-out-value";
      div.appendChild(pre);
      out.appendChild(div);
    }
    box.appendChild(block(outs.length ? "gradients that left it" : "no gradient left it in these steps", out));
  }

  function showGradIn(box, item) {
    const n = item.node;
    const arrivals = item.ins.filter((e) => e.seed || (e.edge && e.edge.grad));
    const outputs = Math.max(n.grads.length, 1);
    for (let o = 0; o < outputs; o++) {
      const here = arrivals.filter((e) => e.seed || e.edge.dstOutput === o);
      const label = outputs > 1 ? `gradient in (output ${o})` : "gradient in";
      const div = block(label);
      div.dataset.role = "grad-in";
      div.dataset.output = String(o);
      if (here.length > 1) {
        for (const e of here) {
          div.appendChild(el("div", "sub", e.seed ? "seed" : `from ${nodeTitle(e.src)}:`));
          div.appendChild(e.seed ? tensorBlock(e.seed) : gradBlock(e.edge.grad, `${e.key}:sent`));
        }
        div.appendChild(el("div", "sub", `sum of the ${here.length} gradients that arrived:`));
      } else if (here.length === 1) {
        div.appendChild(el("div", "sub", here[0].seed ? "the seed" : `from ${nodeTitle(here[0].src)}`));
      }
      const g = n.grads[o];
      if (g) {
        const pre = gradBlock(g, `${item.key}:in:${o}`);
        pre.dataset.role = "grad-in-value";
        div.appendChild(pre);
      } else {
        div.appendChild(el("div", "pending-text", "none arrived"));
      }
      box.appendChild(div);
    }
  }

  function showGradOut(box, item) {
    const n = item.node;
    const outs = [...item.outs].sort((a, b) => a.edge.slot - b.edge.slot);
    const list = el("div");
    for (const e of outs) {
      const slot = e.edge.slot;
      const name = n.slotNames && n.slotNames[slot] ? ` (${n.slotNames[slot]})` : "";
      const div = el("div", "slot" + (e.edge.grad ? "" : " none"));
      div.dataset.role = "grad-out";
      div.dataset.slot = String(slot);
      div.appendChild(el("div", null, `input ${slot}${name} → ${nodeTitle(e.dst)}`));
      // The chain-rule formula of this slot (tracer.formulas); empty when there is none.
      const formula = el("div", "formula", n.formulas && n.formulas[slot] ? n.formulas[slot] : "");
      formula.dataset.role = "formula";
      div.appendChild(formula);
      if (e.edge.grad) {
        const pre = gradBlock(e.edge.grad, `${e.key}:sent`);
        pre.dataset.role = "grad-out-value";
        div.appendChild(pre);
      } else {
        div.appendChild(el("div", "pending-text",
          e.edge.constant ? "no gradient: a constant (needs no grad)" : "no gradient sent"));
      }
      // (an edge to a constant carries its position among the op's arguments, not a slot)
      const jacobian = !e.edge.constant && (n.jacobians || []).find((j) => j.slot === slot);
      if (jacobian) div.appendChild(jacobianBlock(jacobian, `${e.key}:sent`));
      list.appendChild(div);
    }
    box.appendChild(block(outs.length ? "gradients out, per input" : "no inputs", list));
  }

  // The local Jacobian of one input slot, vᵀJ, and whether the gradient sent is vᵀJ (the
  // texts from tracer.view.text; in a quiz, vᵀJ and the verdict wait for the reveal).
  function jacobianBlock(j, key) {
    const box = el("details", "jacobian");
    box.open = true;
    box.dataset.role = "jacobian";
    box.appendChild(el("summary", null, j.title));
    const matrix = el("pre", "tensor plain matrix", j.matrix.join("\n"));
    matrix.dataset.role = "jacobian-matrix";
    box.appendChild(matrix);
    if (j.product) {
      box.appendChild(el("div", "sub", "vᵀJ, v = the gradient in:"));
      const product = gradBlock(j.product, key);
      product.dataset.role = "vjp";
      box.appendChild(product);
    }
    if (!hiddenInQuiz(key)) {
      const verdict = el("p", "vjp-verdict" + (j.agrees === false ? " disagree" : ""), j.verdict);
      verdict.dataset.role = "vjp-verdict";
      box.appendChild(verdict);
    }
    return box;
  }

  function showLeaves() {
    const box = $("leaves");
    box.replaceChildren();
    const leaves = [...nodes.values()].filter(
      (i) => i.node.kind === "leaf" && data.graphs[i.gi].kind === "backward");
    if (!leaves.length) return;
    const wrap = leaves.length > 12 ? el("details") : el("div");
    const title = `Leaves' .grad (${leaves.filter((i) => i.step && i.step <= position).length} of ${leaves.length} filled in)`;
    if (wrap.tagName === "DETAILS") wrap.appendChild(el("summary", null, title));
    else wrap.appendChild(el("h2", null, title));
    const list = el("ul", "leaf-list");
    for (const item of leaves) {
      const li = el("li");
      li.dataset.leaf = item.key;
      const filled = item.step && item.step <= position && leafGradOf(item);
      li.appendChild(el("div", null, `${filled ? "✓" : "·"} ${item.node.title}.grad`));
      if (filled) li.appendChild(gradBlock(leafGradOf(item), `${item.key}:leaf`));
      else li.appendChild(el("div", "pending-text",
        item.step ? `fills in at step ${item.step}` : "receives no gradient in this pass"));
      list.appendChild(li);
    }
    wrap.appendChild(list);
    box.appendChild(wrap);
  }

  function showChecks() {
    const verdict = $("verdict");
    if (data.passed === true) { verdict.textContent = "✓ autograd and manual agree"; verdict.className = "agree"; }
    if (data.passed === false) { verdict.textContent = "✗ autograd and manual DISAGREE"; verdict.className = "disagree"; }
    const reports = $("check-reports");
    if (data.grades) {
      // The grade sheet: the checks in the engine's order, then where a disagreement starts.
      const table = el("table", "grades");
      table.id = "grade-sheet";
      const head = el("tr");
      for (const c of data.grades.columns) head.appendChild(el("th", null, c));
      table.appendChild(head);
      for (const row of data.grades.rows) {
        const tr = el("tr", row.passed ? "agree" : "disagree");
        for (const c of row.cells) tr.appendChild(el("td", null, c));
        table.appendChild(tr);
      }
      reports.appendChild(table);
      for (const f of data.grades.first) reports.appendChild(el("p", "first-disagreement", f));
    }
    for (const c of data.checks) {
      reports.appendChild(el("p", null, `${c.passed ? "✓" : "✗"} ${c.headline}`));
      reports.appendChild(el("pre", "tensor plain", c.report));
    }
    for (const p of data.problems) reports.appendChild(el("p", null, `⚠ ${p}`));
    if (!data.checks.length && !data.problems.length) $("checks").hidden = true;
    else if (data.passed === false || data.problems.length) $("checks").open = true;
  }

  // ---- hover, tap and focus: the full tensor of a node or edge -------------------------

  const tip = $("tip");
  let pinned = null;
  function tipContent(item) {
    const parts = [];
    const title = (t) => parts.push(el("div", "tip-title", t));
    const text = (t, cls) => parts.push(el("div", cls || "sub", t));
    const tensor = (label, t, kind) => {
      text(label);
      parts.push(el("div", "sub", t.summary));
      if (t.lines) parts.push(tensorBlock(t, kind));
    };
    if (item.type === "edge") {
      title(edgeTitle(item));
      const g = item.seed || (item.edge && item.edge.grad);
      if (item.edge && item.edge.constant) text("no gradient: the input is a constant");
      else if (!g) text("no gradient on this edge");
      else if (item.revealAt !== null && item.revealAt > position) text(`gradient sent at step ${item.revealAt}`, "pending-text");
      else if (!item.seed && hiddenInQuiz(`${item.key}:sent`)) text("gradient sent: reveal it in the panel", "pending-text");
      else tensor(item.seed ? "seed gradient" : "gradient sent down this edge", g);
      return parts;
    }
    const n = item.node;
    title(n.title);
    text([n.kind, n.op, n.dtype, n.shape].filter(Boolean).join(" · "));
    if (item.step) text(`runs at step ${item.step}`);
    if (n.origin) text(`made by ${n.origin}`);
    n.forward.forEach((t, i) => { if (t) tensor(n.forward.length > 1 ? `forward value ${i}` : "forward value", t, "value"); });
    const reached = item.step && item.step <= position;
    if (n.kind === "leaf" && leafGradOf(item)) {
      if (reached && hiddenInQuiz(`${item.key}:leaf`)) text(".grad: reveal it in the panel", "pending-text");
      else if (reached) tensor(n.leafGrad ? ".grad" : "gradient", leafGradOf(item));
      else text(item.step ? `.grad fills in at step ${item.step}` : "no gradient in this pass", "pending-text");
    } else if (n.kind === "op" && n.grads.some(Boolean)) {
      if (reached) n.grads.forEach((t, i) => {
        if (!t) return;
        const label = n.grads.length > 1 ? `gradient in ${i}` : "gradient in";
        if (hiddenInQuiz(`${item.key}:in:${i}`)) text(`${label}: reveal it in the panel`, "pending-text");
        else tensor(label, t);
      });
      else text(`receives its gradient by step ${item.step}`, "pending-text");
    }
    for (const s of n.saved) {
      if (s.tensor && !s.source) tensor(`saved ${s.name}`, s.tensor, "plain");
      else text(`saved ${s.name} = ${s.source ?? s.text ?? ""}`);
    }
    return parts;
  }
  function showTip(item, x, y) {
    tip.replaceChildren(...tipContent(item));
    tip.hidden = false;
    const w = tip.offsetWidth, h = tip.offsetHeight;
    const left = Math.min(x + 16, window.innerWidth - w - 8);
    const top = y + 16 + h > window.innerHeight ? Math.max(8, y - h - 16) : y + 16;
    tip.style.left = `${Math.max(8, left)}px`;
    tip.style.top = `${top}px`;
  }
  function hideTip() {
    tip.hidden = true;
    tip.classList.remove("pinned");
    pinned = null;
  }
  function itemAt(target) {
    const g = target && target.closest && target.closest("g.node, g.edge");
    return g ? itemOfEl.get(g) || null : null;
  }
  svg.addEventListener("pointermove", (ev) => {
    if (pinned || dragging) return;
    const item = itemAt(ev.target);
    if (item) showTip(item, ev.clientX, ev.clientY); else hideTip();
  });
  svg.addEventListener("pointerleave", () => { if (!pinned) hideTip(); });
  function tapped(ev) {
    const item = itemAt(ev.target);
    if (!item) { hideTip(); return; }
    if (pinned === item) { hideTip(); return; }
    showTip(item, ev.clientX, ev.clientY);
    tip.classList.add("pinned");
    pinned = item;
  }
  svg.addEventListener("focusin", (ev) => {
    const item = itemAt(ev.target);
    if (!item) return;
    item.el.classList.add("svg-focus");
    keepInView(item.el);
    const r = item.el.getBoundingClientRect();
    showTip(item, r.right, r.top);
  });
  svg.addEventListener("focusout", (ev) => {
    const item = itemAt(ev.target);
    if (item) item.el.classList.remove("svg-focus");
    if (!pinned) hideTip();
  });

  // ---- pan and zoom --------------------------------------------------------------------

  const view = { x: 0, y: 0, s: 1 };
  const vb = svg.viewBox.baseVal;
  const svgWidth = vb && vb.width ? vb.width : svg.getBBox().width;
  const svgHeight = vb && vb.height ? vb.height : svg.getBBox().height;
  svg.setAttribute("width", String(svgWidth));
  svg.setAttribute("height", String(svgHeight));
  function apply() {
    stage.style.transform = `translate(${view.x}px, ${view.y}px) scale(${view.s})`;
  }
  // The viewport's size, read on load and on resize only (reading it after a change would
  // force a layout of the whole picture).
  let viewportSize = { w: viewport.clientWidth, h: viewport.clientHeight };
  function fit() {
    viewportSize = { w: viewport.clientWidth, h: viewport.clientHeight };
    const { w, h } = viewportSize;
    view.s = Math.min(w / svgWidth, h / svgHeight) * 0.96;
    view.x = (w - svgWidth * view.s) / 2;
    view.y = (h - svgHeight * view.s) / 2;
    apply();
  }
  // The first view: the whole graph when it can be read so; else a readable scale at the
  // top of the graph, where the output (and so the first step) is.
  function initialView() {
    fit();
    if (view.s >= 0.45) return;
    view.s = 0.9;
    view.x = (viewportSize.w - svgWidth * view.s) / 2;
    view.y = 10;
    apply();
  }
  function zoomBy(factor, cx, cy) {
    const { w, h } = viewportSize;
    cx = cx ?? w / 2; cy = cy ?? h / 2;
    const s = Math.max(0.02, Math.min(40, view.s * factor));
    view.x = cx - ((cx - view.x) * s) / view.s;
    view.y = cy - ((cy - view.y) * s) / view.s;
    view.s = s;
    apply();
  }
  function panBy(dx, dy) { view.x += dx; view.y += dy; apply(); }
  // Bring an element into the viewport (centred) when it is not wholly visible.
  function keepInView(element) {
    const r = element.getBoundingClientRect();
    const v = viewport.getBoundingClientRect();
    const margin = 20;
    if (r.left >= v.left + margin && r.right <= v.right - margin &&
        r.top >= v.top + margin && r.bottom <= v.bottom - margin) return;
    panBy(v.left + v.width / 2 - (r.left + r.width / 2), v.top + v.height / 2 - (r.top + r.height / 2));
  }
  // The same for a box in the picture's coordinates, by arithmetic: no layout is forced.
  function keepBoxInView(b) {
    const { w, h } = viewportSize;
    const left = view.x + (b.x + graphShift.x - vbox.x) * view.s;
    const top = view.y + (b.y + graphShift.y - vbox.y) * view.s;
    const right = left + b.width * view.s, bottom = top + b.height * view.s;
    const margin = 20;
    if (left >= margin && right <= w - margin && top >= margin && bottom <= h - margin) return;
    panBy(w / 2 - (left + right) / 2, h / 2 - (top + bottom) / 2);
  }
  viewport.addEventListener("wheel", (ev) => {
    ev.preventDefault();
    const v = viewport.getBoundingClientRect();
    zoomBy(Math.exp(-ev.deltaY * 0.0015), ev.clientX - v.left, ev.clientY - v.top);
  }, { passive: false });
  let dragging = false;
  let drag = null;
  viewport.addEventListener("pointerdown", (ev) => {
    if (ev.button !== 0) return;
    drag = { x: ev.clientX, y: ev.clientY, moved: false };
  });
  window.addEventListener("pointermove", (ev) => {
    if (!drag) return;
    const dx = ev.clientX - drag.x, dy = ev.clientY - drag.y;
    if (!drag.moved && Math.hypot(dx, dy) < 5) return;
    drag.moved = true;
    dragging = true;
    viewport.classList.add("dragging");
    drag.x = ev.clientX; drag.y = ev.clientY;
    panBy(dx, dy);
  });
  window.addEventListener("pointerup", (ev) => {
    if (!drag) return;
    const wasTap = !drag.moved;
    drag = null;
    dragging = false;
    viewport.classList.remove("dragging");
    if (wasTap && viewport.contains(ev.target)) tapped(ev);
  });
  window.addEventListener("resize", () => fit());

  // ---- folding clusters (Graphviz `cluster_*` subgraphs) --------------------------------
  //
  // A graph's cluster (when the picture holds several graphs) and each module call's. Which
  // nodes a cluster holds comes from the data (a node's module call and the calls' parents),
  // and so does how the page opens: folded as the pictures collapse module calls
  // (tracer.output.dot.views). A folded cluster is one box: its nodes are hidden, it covers
  // them, and stepping steps over it as one step (see `runs`).

  const svgClusters = new Map(); // "cluster_g0m3" -> <g class="cluster">
  for (const g of svg.querySelectorAll("g.cluster")) {
    const t = g.querySelector(":scope > title");
    if (t && t.textContent.startsWith("cluster_")) svgClusters.set(t.textContent, g);
  }
  const clusters = [];
  const clusterOfModule = new Map(); // "g0m3" -> its cluster (or the nearest drawn one above)
  function addCluster(name, label, folded, parent, members) {
    const g = svgClusters.get(name);
    if (!g) return parent;
    const c = { el: g, name, label, folded, parent, members, box: null, cover: null };
    clusters.push(c);
    return c;
  }
  data.graphs.forEach((graph, gi) => {
    const all = new Set(graph.nodes.map((n) => nodes.get(nodeKey(gi, n.id))));
    const top = addCluster(`cluster_g${gi}`, graph.label, !!graph.folded, null, all);
    const inside = new Map(); // call id -> the node items in it, its calls' included
    for (const n of graph.nodes) {
      for (let m = n.module; m !== null && m !== undefined; m = graph.modules[m].parent) {
        if (!inside.has(m)) inside.set(m, new Set());
        inside.get(m).add(nodes.get(nodeKey(gi, n.id)));
      }
    }
    for (const call of graph.modules || []) { // parents come before their calls
      const above = call.parent === null ? top : clusterOfModule.get(`g${gi}m${call.parent}`);
      const c = addCluster(call.cluster, call.title, call.folded, above, inside.get(call.id) || new Set());
      clusterOfModule.set(`g${gi}m${call.id}`, c);
    }
  });
  // The clusters a node sits in, outermost first.
  function chainOf(item) {
    const chain = [];
    const graph = data.graphs[item.gi];
    for (let m = item.node.module; m !== null && m !== undefined; m = graph.modules[m].parent) {
      const c = clusterOfModule.get(`g${item.gi}m${m}`);
      if (c && chain[0] !== c) chain.unshift(c);
    }
    const top = clusters.find((c) => c.name === `cluster_g${item.gi}`);
    if (top && chain[0] !== top) chain.unshift(top);
    return chain;
  }
  for (const item of nodes.values()) item.chain = chainOf(item);
  // The box a node is drawn in now: the outermost folded cluster around it, or itself.
  function boxOfItem(item) {
    return item.chain.find((c) => c.folded) || item;
  }
  function foldedAbove(c) {
    for (let p = c.parent; p; p = p.parent) if (p.folded) return true;
    return false;
  }
  function makeCover(c) {
    if (c.cover) return;
    const shape = c.el.querySelector(":scope > path, :scope > polygon");
    const b = (c.box = bbox(shape || c.el));
    if (!b) return;
    const cover = svgEl("g", { class: "fold-cover" });
    cover.appendChild(svgEl("rect", { x: b.x, y: b.y, width: b.width, height: b.height, rx: 6 }));
    // The layout is the open graph's: a box takes the room its nodes take, and its title
    // grows with it (to fill its width, at most a third of its height), to read when the
    // whole picture is fitted to the screen.
    const words = `▸ ${c.label} (${c.members.size} nodes: click to open)`;
    const size = Math.max(14, Math.min(b.width / (words.length * 0.62), b.height / 3));
    const text = svgEl("text", { x: b.x + size * 0.4, y: b.y + size * 1.2 });
    text.style.fontSize = `${size}px`;
    text.textContent = words;
    cover.appendChild(text);
    cover.addEventListener("click", (ev) => { ev.stopPropagation(); toggleFold(c); });
    c.el.appendChild(cover);
    c.cover = cover;
  }
  function applyFolds() {
    for (const c of clusters) if (c.folded) makeCover(c);
    for (const item of nodes.values()) {
      const away = boxOfItem(item) !== item;
      if (item.el) item.el.classList.toggle("folded-away", away);
      if (item.leafBox) item.leafBox.classList.toggle("folded-away", away);
    }
    // An edge inside one box goes; one between two boxes (or a box and a node) stays.
    for (const e of edges) {
      if (!e.el) continue;
      const a = e.src ? boxOfItem(e.src) : null, b = e.dst ? boxOfItem(e.dst) : null;
      e.el.classList.toggle("folded-away", (a === null || a !== e.src) && a === b);
    }
    for (const c of clusters) {
      c.el.classList.toggle("folded-away", foldedAbove(c));
      c.el.classList.toggle("folded", c.folded);
    }
    computeRuns();
    markFoldedRunning();
    showClusters();
  }
  function markFoldedRunning() {
    const box = currentRun() ? currentRun().box : null;
    for (const c of clusters) c.el.classList.toggle("has-running", box === c);
  }
  function toggleFold(c) {
    c.folded = !c.folded;
    applyFolds();
    // Stay where the pass is: on the step (a node's, or a box's) holding this position.
    const run = currentRun();
    goTo(run ? run.end : position, { follow: false, force: true });
  }
  for (const c of clusters) {
    for (const t of c.el.querySelectorAll(":scope > text")) t.addEventListener("click", (ev) => { ev.stopPropagation(); toggleFold(c); });
  }
  function showClusters() {
    const box = $("clusters");
    box.replaceChildren();
    if (!clusters.length) return;
    const wrap = clusters.length > 12 ? el("details") : el("div");
    const title = `Clusters and modules (${clusters.filter((c) => c.folded).length} of ${clusters.length} folded)`;
    wrap.appendChild(el(wrap.tagName === "DETAILS" ? "summary" : "h2", null, title));
    for (const c of clusters) {
      const b = el("button", "fold", `${c.folded ? "▸ Unfold" : "▾ Fold"}: ${c.label}`);
      b.type = "button";
      b.setAttribute("aria-pressed", c.folded ? "true" : "false");
      b.dataset.cluster = c.name;
      b.addEventListener("click", () => { toggleFold(c); box.querySelector(`[data-cluster="${CSS.escape(c.name)}"]`).focus(); });
      const p = el("p");
      p.appendChild(b);
      wrap.appendChild(p);
    }
    if (wrap.tagName === "DETAILS") wrap.open = box.dataset.open === "true";
    wrap.addEventListener("toggle", () => { box.dataset.open = String(wrap.open); });
    box.appendChild(wrap);
  }

  // ---- the keyboard ---------------------------------------------------------------------

  document.addEventListener("keydown", (ev) => {
    if (ev.ctrlKey || ev.metaKey || ev.altKey) return;
    const t = ev.target;
    const inControl = t instanceof HTMLInputElement || t instanceof HTMLSelectElement;
    const onButton = t instanceof HTMLButtonElement;
    const k = ev.key;
    if (ev.shiftKey && k.startsWith("Arrow")) {
      const d = 60;
      panBy(k === "ArrowLeft" ? d : k === "ArrowRight" ? -d : 0, k === "ArrowUp" ? d : k === "ArrowDown" ? -d : 0);
      ev.preventDefault();
      return;
    }
    if (inControl && (k.startsWith("Arrow") || k === "Home" || k === "End" || k === "PageUp" || k === "PageDown")) return;
    let handled = true;
    if (k === "ArrowRight" || k === "PageDown") stepBy(1);
    else if (k === "ArrowLeft" || k === "PageUp") stepBy(-1);
    else if (k === "Home") goTo(0);
    else if (k === "End") goTo(total);
    else if (k === " " && !onButton && !inControl) setPlaying(!timer);
    else if (k === "+" || k === "=") zoomBy(1.25);
    else if (k === "-" || k === "_") zoomBy(0.8);
    else if (k === "0") fit();
    else if (k === "c" || k === "C") { if (running) followRunning(); }
    else if (k === "Escape") hideTip();
    else handled = false;
    if (handled) ev.preventDefault();
  });

  // ---- start -----------------------------------------------------------------------------

  showChecks();
  applyFolds();
  initialView();
  position = -1; // force the first draw
  goTo(0, { follow: false });
  window.tracerStepper = {
    goTo, stepTo, get position() { return position; }, total,
    get step() { return runIndex(); }, get steps() { return runs.length; },
  };
})();
