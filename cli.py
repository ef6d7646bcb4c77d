"""The `trace` command (the code is tracer/cli.py, installed with the package)."""

from tracer.cli import app, main

__all__ = ["app", "main"]

if __name__ == "__main__":
    main()
