"""A check: autograd's gradient of one tensor compared with a hand-derived one (`Check`),
and what made it (`How`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

from tracer.model.tensor import TensorData


class How(str, Enum):
    """What made a check. A `str`, so that it reads and is written to JSON as its value."""

    CHECK = "check"  # tracer.check / Trace.check with a manual result
    ALLCLOSE = "allclose"  # the code's own torch.allclose on a gradient
    EQUALS = "=="  # the code's own elementwise == (x.grad == 4 * x)
    EQUAL = "equal"  # torch.equal
    ISCLOSE = "isclose"  # torch.isclose
    DIFFERENCE = "difference"  # the code's own a - b of a gradient: (dt - t.grad).abs().max()
    RECOGNISED = "recognised"  # a manual result the user's code showed (tracer.checks.manual)
    FINITE_DIFFERENCES = "finite differences"  # tracer.check(x, fn=...): tracer.checks.numeric

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)

    @property
    def users_comparison(self) -> bool:
        """The user's own comparison (allclose, ==, torch.equal, isclose)."""
        return self in (How.ALLCLOSE, How.EQUALS, How.EQUAL, How.ISCLOSE, How.DIFFERENCE)

    @property
    def tolerant(self) -> bool:
        """A comparison with no verdict of its own in the code, or one for bit-exact
        equality: judged within the dtype's tolerance (see `exact`)."""
        return self in (How.EQUALS, How.EQUAL, How.DIFFERENCE)

    @property
    def exact(self) -> bool:
        """A comparison for bit-exact equality (== and torch.equal), which a correct
        formula computed another way may miss by rounding: judged within the dtype's
        tolerance instead, and said to be not bit-exact."""
        return self in (How.EQUALS, How.EQUAL)


@dataclass(frozen=True)
class Check:
    """Autograd's gradient of one tensor compared with the hand-derived one.

    `after` is how many backward passes the trace had recorded when the comparison was
    made (0: before any); `how` is what made it (see `How`), `also` the other ways the
    code compared the same gradient with the same result in the same pass (one check
    however many ways). For the user's own allclose and isclose `passed` is the verdict
    their code saw; an exact comparison (`How.exact`) passes within the dtype's tolerance.
    `node` is the id of the node in backward pass `after` whose gradient it is, when the
    tensor is in that pass (a leaf's AccumulateGrad, or the op that made a non-leaf).
    """

    name: str  # the tensor's variable name ("x"), or "input 0" where it has none
    autograd: TensorData | None  # None when the tensor received no gradient
    manual: TensorData
    max_abs: float  # inf when the shapes differ or there is no gradient
    max_rel: float
    where: tuple[int, ...] | None  # index of the largest absolute error
    rtol: float
    atol: float
    passed: bool
    problem: str | None = None  # why no elementwise comparison was possible
    of: str | None = None  # the name of what was differentiated ("f", "L"), when it has one
    after: int = 0
    how: How = How.CHECK
    also: tuple[How, ...] = ()
    node: int | None = None

    @property
    def ways(self) -> tuple[How, ...]:
        """Every way the code made this check, the first first."""
        return (self.how, *self.also)

    @property
    def bit_exact(self) -> bool:
        """Whether the two gradients are equal element for element."""
        return self.problem is None and self.max_abs == 0.0

    @property
    def within_rounding(self) -> bool:
        """Passed an exact comparison without being bit-exact: a correct formula whose
        rounding differs from autograd's."""
        return self.passed and not self.bit_exact and any(h.exact for h in self.ways)

    @property
    def derivative(self) -> str:
        """ "∂f/∂x", or "∂/∂x" when the differentiated output has no name."""
        return f"∂{self.of or ''}/∂{self.name}"

    def __repr__(self) -> str:
        text = _FORMATTERS.get("text")
        if text is None:  # the text layer was never imported: the plain facts
            return f"<Check {self.derivative}: passed={self.passed}, max_abs={self.max_abs:g}>"
        return f"<Check {text(self)}>"

    def _repr_html_(self) -> str | None:
        html = _FORMATTERS.get("html")
        return None if html is None else html(self)


# How a check reads in the REPL and in Jupyter is the text layer's (tracer.view.text), which
# registers its formatters here when it is imported: the model imports nothing above it.
_FORMATTERS: dict[str, Callable[[Check], str]] = {}


def register_formatters(text: Callable[[Check], str], html: Callable[[Check], str]) -> None:
    """Set the one-line text (`repr`) and the HTML (Jupyter) of every Check."""
    _FORMATTERS["text"] = text
    _FORMATTERS["html"] = html
