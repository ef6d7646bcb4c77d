"""Running user code under a trace: scripts (`script`), notebooks (`notebook`), Jupyter's
`%%trace` (`jupyter`), what they share (`usercode`) and the tensors the code shows
(`shown`). Over `session`."""
