"""Outputs: DOT source (`dot`), Graphviz's layout under a time limit (`graphviz`), files
by suffix (`render`), the step-through page (`page`), its frames for slides (`frames`) and
one picture per pass (`pictures`). Over `view`; every file is written by tracer.files."""
