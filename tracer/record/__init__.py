"""Recording: the torch-facing layer. What is installed in torch while a trace is open
(`interception`) and the forward recorder (`forward`); the walk and hooks of autograd's
graph and its assembly into plain data (`capture`); tensors reduced to numbers
(`summary`); what is kept on each `grad_fn` (`node_record`); variable names (`names`) and
module calls (`modules`). Over `output` and below; knows no `Trace`: the trace it reports
to is an `Observer` (see `interception`)."""
