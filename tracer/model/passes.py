"""One `Pass` per backward call: a recording split where the user's code called backward.

The trace notes where each backward call was made (`Graph.source`) and which pass each
comparison came after (`Check.after`); `passes` splits its recording accordingly and titles
each part with the place in the user's code. `trace run`, `trace notebook` and Jupyter's
`%%trace` draw one picture per Pass.
"""

from __future__ import annotations

from dataclasses import dataclass

from tracer.model.graph import Recording
from tracer.model.location import Location, Locator


@dataclass
class Pass:
    """One backward call: where the code made it, and its own Recording (its graph, the
    manual graphs captured after it, and the comparisons made after it)."""

    number: int
    location: Location | None
    recording: Recording

    @property
    def nodes(self) -> int:
        return len(self.recording.graphs[0].nodes)

    @property
    def passed(self) -> bool | None:
        return self.recording.passed

    def picture_name(self, fmt: str, width: int = 2) -> str:
        """ "01-line12.svg": the pass's number, then where it was called."""
        slug = self.location.slug() if self.location else "pass"
        return f"{self.number:0{width}d}-{slug}.{fmt}"


def passes(recording: Recording, locate: Locator | None = None) -> list[Pass]:
    """One Pass per backward call (see `Recording.per_pass`), titled with where it was made."""
    locate = locate or Locator()
    out: list[Pass] = []
    for part in recording.per_pass():
        number, source = part.graphs[0].number, part.graphs[0].source
        where = None if source is None else locate(*source)
        title = f"backward pass {number}" + (f" at {where}" if where else "")
        part.title = f"{part.title}: {title}" if part.title else title
        out.append(Pass(number, where, part))
    return out
