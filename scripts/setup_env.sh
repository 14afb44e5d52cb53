#!/usr/bin/env bash
# Create .venv (Python >= 3.11) and install the project into it; sourced by speak.sh and test.sh.
# Re-running is cheap: it reinstalls only when pyproject.toml changed.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-python3}"
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "error: Python >= 3.11 is required (found: $("$python" --version 2>&1)); set PYTHON=python3.11" >&2
  exit 1
fi
if [ ! -x "$repo/.venv/bin/python" ]; then
  "$python" -m venv "$repo/.venv"
fi
# shellcheck disable=SC1091
. "$repo/.venv/bin/activate"
stamp="$repo/.venv/.installed-$(sha256sum "$repo/pyproject.toml" | cut -c1-16)-${1:-run}"
if [ ! -f "$stamp" ]; then
  python -m pip install --quiet --upgrade pip
  # A CPU build of torch when none is installed; bring your own CUDA build before running this for GPUs.
  python -c 'import torch' 2>/dev/null || python -m pip install --quiet "${GSV_TORCH_SPEC:-torch==2.13.0}"
  if [ "${1:-run}" = "test" ]; then
    python -m pip install --quiet -e "$repo[test]"
  else
    python -m pip install --quiet -e "$repo[all-languages]"  # ja, ko, yue (docs/languages.md)
  fi
  touch "$stamp"
fi
