#!/usr/bin/env bash
# Sets tracer up on a fresh machine, and is safe to run again:
#   1. Graphviz's `dot` (Debian's graphviz package) when it is missing;
#   2. a virtual environment in .venv with the pinned torch 2.13.0, installed first so that
#      pyproject's `torch>=` range is already satisfied (a range alone pulls a CUDA build),
#      from the index in TRACER_TORCH_INDEX when it is set (for torch only: where pip's default
#      index serves CUDA builds, point it at PyTorch's CPU index, see the README), then says
#      which build .venv has (CPU, CUDA or ROCm); a torch other than 2.13.0 is replaced;
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
# Prints which torch build .venv has ("setup: torch 2.13.0+cpu (CPU build)"); fails when
# torch is missing or is not 2.13.0. (Right after torch's install numpy is not there yet, and
# torch's warning about it is noise.)
torch_build='
import sys, warnings
warnings.filterwarnings("ignore", message="Failed to initialize NumPy")
import torch
if torch.__version__.split("+")[0] != "2.13.0":
    sys.exit(f"setup: torch {torch.__version__} is installed, not 2.13.0")
cuda, hip = torch.version.cuda, getattr(torch.version, "hip", None)
build = f"CUDA {cuda}" if cuda else f"ROCm {hip}" if hip else "CPU"
print(f"setup: torch {torch.__version__} ({build} build)")
'
if build_line=$(.venv/bin/python -c "$torch_build" 2>/dev/null); then
    echo "$build_line"
    if [ -n "${TRACER_TORCH_INDEX:-}" ]; then
        echo "setup: torch 2.13.0 was already installed, so TRACER_TORCH_INDEX was not used (to install from it: rm -rf .venv, then run ./setup.sh again)"
    fi
else
    if [ -n "${TRACER_TORCH_INDEX:-}" ]; then
        echo "setup: installing torch 2.13.0 from TRACER_TORCH_INDEX ($TRACER_TORCH_INDEX)"
        pip install --index-url "$TRACER_TORCH_INDEX" torch==2.13.0
    else
        echo "setup: installing torch 2.13.0 from pip's default index (where it serves CUDA builds, set TRACER_TORCH_INDEX: see the README)"
        pip install torch==2.13.0
    fi
    .venv/bin/python -c "$torch_build"
fi
echo "setup: installing tracer and its test tools"
pip install -e ".[dev]"
.venv/bin/python -c 'import tracer, torch, graphviz, typer' # fail here, not later, if anything is missing
echo "setup: done (activate with: source .venv/bin/activate)"
