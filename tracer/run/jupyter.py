"""Jupyter: a trace shows itself inline, and `%load_ext tracer` gives the `%%trace` magic.

    %load_ext tracer

    %%trace t
    z = torch.dot(x, x)
    f = torch.log(1 + z)
    f.backward()
    tracer.check(x, 2 * x / (1 + z))

The cell runs under a trace (its code unchanged, in the notebook's namespace, as any cell),
then shows one picture per backward call in it, with the checks made after that call
(`tracer.check`, `torch.allclose` or `==` on a gradient, or a manual result the cell
printed, bound or displayed, recognised by the rule of `tracer.checks.manual`). The optional
NAME keeps the `Trace` in that variable, to render or check again later. Where a trace
is already recording (`trace notebook`, or an enclosing `with tracer.trace()`), the cell
just runs: the outer trace records it. The cell's last value is shown by IPython, as for
any cell (not when the cell ends in `;`). IPython itself is imported only here.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from tracer.errors import TracerError
from tracer.model.location import Locator
from tracer.model.passes import Pass, passes
from tracer.model.selection import PassSelection, parse_passes
from tracer.view.text import passes_text

if TYPE_CHECKING:
    pass

_USAGE = (
    "usage: %%trace [NAME] [--passes SPEC]  (NAME: a variable to keep the Trace in; SPEC: "
    "the backward passes to record, `1,2,-1`, `1-5`, `every 100` or `all`)"
)


def show_passes(found: list[Pass]) -> None:
    """Display each pass's picture in the notebook (SVG, with a text fallback)."""
    from IPython.display import display

    from tracer.output.render import render_svg

    if not found:
        print("no backward pass was run in this cell: nothing to draw")
        return
    for p in found:
        try:
            svg = render_svg(p.recording)
        except TracerError as e:  # Graphviz missing: say so in one line
            print(f"tracer: {e}", file=sys.stderr)
            return
        display({"image/svg+xml": svg, "text/plain": f"<{p.recording.title}>"}, raw=True)


def _cell_number(shell: Any) -> int:
    """The running cell's number, N of In [N] (IPython 9 counts on before the cell runs)."""
    number: int = shell.displayhook.prompt_count
    return number


def compile_body(shell: Any, cell: str) -> tuple[str, Callable[[], Any]]:
    """Compile a cell magic's body as IPython compiles a cell: its file name, and a function
    that runs it and returns its last value (None when it ends in a statement).

    The body's lines keep the cell's line numbers (the `%%` line is line 1), so errors and
    pictures name the line the user sees.
    """
    source = shell.transform_cell(cell)  # IPython syntax (magics, !shell) inside the cell
    tree = shell.transform_ast(shell.compile.ast_parse(source))
    ast.increment_lineno(tree, 1)
    last = None
    if tree.body and isinstance(tree.body[-1], ast.Expr):
        last = ast.Expression(tree.body.pop().value)  # the cell's value, as for any cell
    # A cached name, holding the body one line down: tracebacks show the cell's lines.
    filename = shell.compile.cache("\n" + source, _cell_number(shell), raw_code=cell)
    code = shell.compile(tree, filename, "exec")
    value = None if last is None else shell.compile(last, filename, "eval")

    def run() -> Any:
        exec(code, shell.user_ns)
        return None if value is None else eval(value, shell.user_ns)

    return filename, run


def trace_cell(shell: Any, line: str, cell: str) -> Any:
    """The `%%trace` cell magic: run the cell under a trace, show its backward passes."""
    from IPython.core.error import UsageError

    from tracer.session import Trace

    try:
        name, selection = parse_line(line)
    except TracerError as e:
        raise UsageError(f"{e}\n{_USAGE}") from None
    filename, run = compile_body(shell, cell)
    from tracer.record.interception import current_trace  # torch: only when a cell is traced

    outer = current_trace()
    if outer is not None:  # already recorded by the outer trace: do not trace twice
        if name:
            shell.user_ns[name] = outer
        return run()
    t = Trace(passes=selection)
    try:
        with t:
            return _run_offering(shell, run, cell)
    finally:
        if name:
            shell.user_ns[name] = t
        locate = Locator(filename, shown=f"In [{_cell_number(shell)}]")
        show_passes(passes(t.recording, locate))  # also when the cell raised: those so far
        selected = passes_text(t.recording.recorded_passes(), t.recording.passes_run)
        if selected is not None:
            print(f"note: {selected}")


def parse_line(line: str) -> tuple[str, PassSelection | None]:
    """`%%trace`'s line: the variable to keep the Trace in ("" for none), and the passes
    `--passes SPEC` selects (None: the default); a TracerError for anything else."""
    name, rest = "", line.strip()
    if rest and not rest.startswith("--"):
        name, _, rest = rest.partition(" ")
        rest = rest.strip()
    if name and not name.isidentifier():
        raise TracerError(f"'{name}' is not a variable name")
    if not rest:
        return name, None
    flag, _, spec = rest.partition(" ")
    if flag.startswith("--passes="):
        flag, spec = "--passes", rest.removeprefix("--passes=")
    if flag != "--passes":
        raise TracerError(f"unknown option '{flag}'")
    return name, parse_passes(spec.strip().strip("'\""))


def _run_offering(shell: Any, run: Callable[[], Any], cell: str) -> Any:
    """Run the cell, offering what it prints, binds and displays to tracer.checks.manual, which
    recognises manual results among them."""
    from tracer.run.shown import offer, offer_bindings, watching_prints

    bound = {k: id(v) for k, v in shell.user_ns.items() if not k.startswith("_")}
    with watching_prints():
        value = run()
    offer_bindings(shell.user_ns, bound)
    if not cell.rstrip().endswith(";"):  # IPython shows the value: it is displayed
        offer(value, "displayed")
    return value


def load_ipython_extension(ipython: Any) -> None:
    """`%load_ext tracer`: register the `%%trace` cell magic."""
    from IPython.core.magic import output_can_be_silenced

    @output_can_be_silenced  # a cell ending in `;` shows no value, as any cell
    def trace(line: str, cell: str) -> Any:
        return trace_cell(ipython, line, cell)

    trace.__doc__ = (trace_cell.__doc__ or "") + "\n\n" + _USAGE
    ipython.register_magic_function(trace, magic_kind="cell", magic_name="trace")
