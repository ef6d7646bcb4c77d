#!/usr/bin/env bash
# Sets tracer up on a fresh machine, and is safe to run again:
#   1. Graphviz's `dot` (Debian's graphviz package) when it is missing;
#   2. a virtual environment in .venv with the pinned CPU build of torch, installed first so
#      that pyproject's `torch>=` range is already satisfied (a range alone pulls a CUDA build);
#   3. Debian's chromium when it is missing: the tests drive it (through Playwright) to check
#      the stepper page in a real browser;
#   4. tracer itself (editable) with its test tools.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

if ! command -v dot >/dev/null 2>&1; then
    if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
        echo "setup: installing Graphviz (apt-get install graphviz)"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq graphviz >/dev/null
    elif command -v apt-get >/dev/null 2>&1 && command -v sudo >/dev/null 2>&1; then
        echo "setup: installing Graphviz (sudo apt-get install graphviz)"
        sudo apt-get update -qq
        sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq graphviz >/dev/null
    else
        echo "setup: Graphviz's \`dot\` is missing and cannot be installed from here." >&2
        echo "setup: install it (Debian/Ubuntu: apt-get install graphviz; macOS: brew install graphviz; conda: conda install graphviz), then run ./setup.sh again." >&2
        exit 1
    fi
fi

if ! command -v chromium >/dev/null 2>&1; then
    if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
        echo "setup: installing Chromium for the browser tests (apt-get install chromium)"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
    elif command -v apt-get >/dev/null 2>&1 && command -v sudo >/dev/null 2>&1; then
        echo "setup: installing Chromium for the browser tests (sudo apt-get install chromium)"
        sudo apt-get update -qq
        sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
    else
        echo "setup: Chromium is missing and cannot be installed from here; tracer works" >&2
        echo "setup: without it, but the browser tests need it (Debian/Ubuntu: apt-get install chromium)." >&2
    fi
fi

if [ ! -x .venv/bin/python ]; then
    echo "setup: creating .venv"
    python3 -m venv .venv
fi
# pip's notes about this machine's local package index are noise here: drop them.
pip() { .venv/bin/python -m pip --disable-pip-version-check -q "$@" 2>&1 | sed '/^WARNING: Location/d'; }
if ! .venv/bin/python -c 'import torch, sys; sys.exit(torch.__version__.split("+")[0] != "2.13.0")' 2>/dev/null; then
    echo "setup: installing torch 2.13.0 (CPU)"
    pip install torch==2.13.0
fi
echo "setup: installing tracer and its test tools"
pip install -e ".[dev]"
.venv/bin/python -c 'import tracer, torch, graphviz, typer' # fail here, not later, if anything is missing
echo "setup: done (activate with: source .venv/bin/activate)"
