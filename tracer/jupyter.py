"""Jupyter: a trace shows itself inline, and `%load_ext tracer` gives the `%%trace` magic.

    %load_ext tracer

    %%trace t
    z = torch.dot(x, x)
    f = torch.log(1 + z)
    f.backward()
    tracer.check(x, 2 * x / (1 + z))

The cell runs under a trace (its code unchanged, in the notebook's namespace, as any cell),
then shows one picture per backward call in it, with the checks made after that call
(`tracer.check`, or `torch.allclose` on a gradient). The optional NAME keeps the `Trace`
in that variable, to render or check again later. IPython itself is imported only here.
"""

from __future__ import annotations

import ast
import sys
from typing import Any

from tracer.errors import TracerError
from tracer.runner import Locator, Pass, passes
from tracer.session import Trace

_USAGE = "usage: %%trace [NAME]  (NAME: a variable to keep the Trace in)"


def show_passes(passes: list[Pass]) -> None:
    """Display each pass's picture in the notebook (SVG, with a text fallback)."""
    from IPython.display import display

    from tracer.render import render_svg

    if not passes:
        print("no backward pass was run in this cell: nothing to draw")
        return
    for p in passes:
        try:
            svg = render_svg(p.recording)
        except TracerError as e:  # Graphviz missing: say so in one line
            print(f"tracer: {e}", file=sys.stderr)
            return
        display({"image/svg+xml": svg, "text/plain": f"<{p.recording.title}>"}, raw=True)


def trace_cell(shell: Any, line: str, cell: str) -> Any:
    """The `%%trace` cell magic: run the cell under a trace, show its backward passes."""
    from IPython.core.error import UsageError

    name = line.strip()
    if name and not name.isidentifier():
        raise UsageError(_USAGE)
    source = shell.transform_cell(cell)  # IPython syntax (magics, !shell) inside the cell
    tree = shell.transform_ast(shell.compile.ast_parse(source))
    last = None
    if tree.body and isinstance(tree.body[-1], ast.Expr) and not source.rstrip().endswith(";"):
        last = ast.Expression(tree.body.pop().value)  # shown as the cell's value, as usual
    # A cached name: tracebacks then show the cell's lines.
    filename = shell.compile.cache(source, shell.execution_count, raw_code=cell)
    code = shell.compile(tree, filename, "exec")
    locate = Locator(filename, shown=f"In [{shell.execution_count}]")
    t = Trace()
    value = None
    try:
        with t:
            exec(code, shell.user_ns)
            if last is not None:
                value = eval(shell.compile(last, filename, "eval"), shell.user_ns)
    finally:
        if name:
            shell.user_ns[name] = t
        show_passes(passes(t.recording, locate))  # also when the cell raised: those so far
    return value


def load_ipython_extension(ipython: Any) -> None:
    """`%load_ext tracer`: register the `%%trace` cell magic."""

    def trace(line: str, cell: str) -> Any:
        return trace_cell(ipython, line, cell)

    trace.__doc__ = trace_cell.__doc__ + "\n\n" + _USAGE
    ipython.register_magic_function(trace, magic_kind="cell", magic_name="trace")
