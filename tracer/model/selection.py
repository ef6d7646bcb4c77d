"""Which backward passes a trace records: `--passes SPEC`, `tracer.trace(passes=SPEC)`.

A SPEC is parsed once (`parse_passes`) into a `PassSelection`, plain data. Its forms,
joined by commas: `3` (pass 3), `-1` (the last pass; `-2` the one before it), `1-5`
(passes 1 to 5), `every 100` (passes 1, 101, 201, …: a loop that counts its steps from 0
and logs `if step % 100 == 0` logs these), `all`. The default (`DEFAULT_PASSES`): every
pass when the run makes at most 10, otherwise the first 3 and the last.

How many passes a run makes is known only when it ends: a pass that might still be
selected (`wants(number, passes_run)`: the last pass, while no later one has come) is
recorded, and dropped as soon as it no longer can be. So what a trace holds is bounded by
the selection (`most_held`), never by the number of steps.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from tracer.errors import TracerError

# The forms a SPEC may take, for the one-line error that lists them.
FORMS = "`1,2,-1` (passes; negative counts from the end), `1-5`, `every 100`, `all`"

# The default records every pass of a run that makes at most this many.
SMALL_RUN = 10


@dataclass(frozen=True)
class PassSelection:
    """The backward passes to record, by number (1 is the first pass the trace saw)."""

    numbers: tuple[int, ...] = ()  # from the start: 1, 2, 3
    ranges: tuple[tuple[int, int], ...] = ()  # (first, last), both included
    from_end: tuple[int, ...] = ()  # 1 is the last pass, 2 the one before it
    every: int | None = None  # passes 1, 1 + every, 1 + 2 * every, …; 1: every pass
    all_up_to: int | None = None  # every pass of a run that makes at most this many
    spec: str = "all"  # as the user wrote it (or "default")

    def wants(self, number: int, passes_run: int, *, ended: bool = False) -> bool:
        """Whether pass `number` is (when the run has `ended` after `passes_run` passes)
        or may still be (while it runs, `passes_run` so far) one of the selection."""
        # Plain loops, no generators: this runs at the end of every pass, selected or not.
        if self.all_up_to is not None and passes_run <= self.all_up_to:
            return True
        if self.every and (number - 1) % self.every == 0:
            return True
        if number in self.numbers:
            return True
        for first, last in self.ranges:
            if first <= number <= last:
                return True
        for k in self.from_end:
            # Counted from the end: while the run goes on, pass `number` is the k-th last
            # if the run ends now or up to k - 1 passes later.
            if (number == passes_run + 1 - k) if ended else (number > passes_run - k):
                return True
        return False

    def may_record(self, number: int) -> bool:
        """Whether pass `number`, as it runs (the latest so far), is to be recorded: it is
        selected, or may still turn out to be (the last)."""
        return self.wants(number, number)

    @property
    def records_every_pass(self) -> bool:
        return self.every == 1

    @property
    def most_held(self) -> int | None:
        """The most passes a trace holds at once under this selection; None when it
        grows with the run (`every`, which selects a share of every run)."""
        if self.every is not None:
            return None
        spans = sum(last - first + 1 for first, last in self.ranges)
        counted = len(self.numbers) + spans + max(self.from_end, default=0)
        return max(counted, self.all_up_to or 0)


DEFAULT_PASSES = PassSelection(
    numbers=(1, 2, 3), from_end=(1,), all_up_to=SMALL_RUN, spec="default"
)

_NUMBER = re.compile(r"^-?\d+$")
_RANGE = re.compile(r"^(\d+)\s*-\s*(\d+)$")
_EVERY = re.compile(r"^every\s+(\d+)$", re.IGNORECASE)


def parse_passes(spec: str) -> PassSelection:
    """The selection a SPEC names; a one-line TracerError listing the forms for any other."""
    numbers: list[int] = []
    ranges: list[tuple[int, int]] = []
    from_end: list[int] = []
    every: int | None = None
    parts = [part.strip() for part in spec.split(",")]
    if not spec.strip() or not all(parts):
        raise TracerError(f"--passes '{spec}': give one or more of {FORMS}, joined by commas")
    for part in parts:
        if part.lower() == "all":
            every = 1
        elif _NUMBER.match(part):
            value = int(part)
            if value == 0:
                raise TracerError(
                    f"--passes '{spec}': there is no pass 0 (1 is the first, -1 the last)"
                )
            (numbers if value > 0 else from_end).append(abs(value))
        elif found := _RANGE.match(part):
            first, last = int(found[1]), int(found[2])
            if not 1 <= first <= last:
                raise TracerError(
                    f"--passes '{spec}': '{part}' is no range: give FIRST-LAST with "
                    "1 ≤ FIRST ≤ LAST"
                )
            ranges.append((first, last))
        elif found := _EVERY.match(part):
            step = int(found[1])
            if step < 1:
                raise TracerError(f"--passes '{spec}': 'every N' needs N ≥ 1")
            if every is not None:
                raise TracerError(f"--passes '{spec}': give `every N` once (or `all`)")
            every = step
        else:
            raise TracerError(
                f"--passes '{spec}': '{part}' is not one of {FORMS}, joined by commas"
            )
    return PassSelection(
        numbers=tuple(sorted(set(numbers))),
        ranges=tuple(sorted(set(ranges))),
        from_end=tuple(sorted(set(from_end))),
        every=every,
        spec=spec.strip(),
    )


def selection_of(passes: str | PassSelection | None) -> PassSelection:
    """What `tracer.trace(passes=...)` takes: a SPEC, a selection, or None (the default)."""
    if passes is None:
        return DEFAULT_PASSES
    if isinstance(passes, PassSelection):
        return passes
    return parse_passes(passes)
