"""Outputs: DOT source (`dot`), Graphviz's layout under a time limit (`graphviz`), files
written atomically (`files`), files by suffix (`render`), the step-through page (`page`),
its frames for slides (`frames`) and one picture per pass (`pictures`). Over `view`."""
