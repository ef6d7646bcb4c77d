"""The plain-data graph, torch-free: `Recording`, `Graph`, `Node`, `Edge`, `TensorData`,
`Check`; what a trace records (`CaptureOptions`); JSON; one `Pass` per backward call; where
code is (`location`). Every layer above reads these; this layer imports none of them."""
