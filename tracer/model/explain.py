"""Errors explained: what tracer can say of an error the traced code raised, as plain data
(the words are tracer.view.text's `inplace_error_text`)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class InPlaceError:
    """A backward that failed because a tensor some node saved was changed in place after.

    `name` is the tensor's variable name, `op` the in-place op that changed it ("mul_")
    and `where` the user's line that ran it (file name as in the code, line), each None
    when not seen (with `values=False` the forward is not watched). `made_by` is the op
    that made the tensor ("SigmoidBackward0"), `needed_by` the node that saved it and
    needed it as it was when it ran, `expected` and `actual` its versions then and now.
    """

    name: str | None
    op: str | None
    where: tuple[str, int] | None
    made_by: str
    needed_by: str | None
    expected: int
    actual: int
