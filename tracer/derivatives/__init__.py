"""Derivatives: torch's own formula table (`formulas`, from derivatives.yaml) and the
chain-rule step of each drawn node (`chainrule`), on plain data. Over `model`."""
