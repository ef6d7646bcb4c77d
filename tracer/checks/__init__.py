"""Checks: autograd's gradient compared with a result (`compare`), finite differences as a
second oracle (`numeric`), the user's own comparisons (`comparisons`: allclose, ==, equal,
isclose) and the rule that recognises a manual result the code showed (`manual`). Each
gets what it needs as arguments (the recording, a naming function, the pass's
gradients), never a `Trace`. Over `record`."""
