#!/usr/bin/env bash
# Create .venv (Python >= 3.11), install the project into it and build the C++ decode kernels.
# Sourced by speak.sh and test.sh (`. scripts/setup_env.sh run|test`); re-running is cheap: it
# reinstalls only when pyproject.toml changed, and rebuilds the kernels only when their sources did.
#
#   eval "$(./scripts/setup_env.sh --print-env)"
# also picks the models (official weights under GSV_MODEL_DIR or the default cache, else a
# random-weight development model, built once) and prints the `export` lines that put the venv on
# PATH and GSV_MODEL_DIR in the environment: what `dora up` must inherit, since the nodes of
# `dora start` take the daemon's environment. Everything else it says goes to stderr.
#
# torch, when none is installed: GSV_TORCH_SPEC (default torch==2.13.0) from GSV_TORCH_INDEX
# (default PyTorch's CPU-only index; empty: pip's default index, whose Linux x86-64 wheel is the
# CUDA build with ~19 nvidia packages, several GB). Where the CPU index cannot be reached or lacks
# the version, pip's default index is used, saying so. For a GPU, install your CUDA build of torch
# first (or set GSV_TORCH_INDEX=https://download.pytorch.org/whl/cu128).
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
mode="${1:-run}"
print_env=0
if [ "$mode" = "--print-env" ]; then
  print_env=1
  mode=run
  exec 3>&1 1>&2 # stdout is for the export lines only
fi
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

install_torch() {
  local spec="${GSV_TORCH_SPEC:-torch==2.13.0}" index="${GSV_TORCH_INDEX-https://download.pytorch.org/whl/cpu}"
  if [ -n "$index" ]; then
    echo "installing $spec from $index" >&2
    python -m pip install --quiet --retries 1 --timeout 30 --index-url "$index" "$spec" && return 0
    echo "note: $index did not serve $spec; installing it from pip's default index instead" \
      "(on Linux x86-64 that is the CUDA build: several GB)" >&2
  fi
  python -m pip install --quiet "$spec"
}

pyproject="$(sha256sum "$repo/pyproject.toml" | cut -c1-16)"
stamp="$repo/.venv/.installed-$pyproject-$mode"
# The test extra includes every language of the run install: a test install serves both.
if [ ! -f "$stamp" ] && [ ! -f "$repo/.venv/.installed-$pyproject-test" ]; then
  python -m pip install --quiet --upgrade pip
  python -c 'import torch' 2>/dev/null || install_torch
  if [ "$mode" = "test" ]; then
    python -m pip install --quiet -e "$repo[test]"
  else
    python -m pip install --quiet -e "$repo[all-languages]" # ja, ko, yue (docs/languages.md)
  fi
  touch "$stamp"
fi

# The GPT's C++ decode kernels compile once per torch version (~2.5 min of CPU): here, with a
# message, rather than silently inside the first gpt node. Without a compiler the GPT decodes with
# PyTorch's own (slower) kernels; the step says so and the setup goes on.
kernels="$repo/.venv/.kernels-$(cat "$repo"/shared/gpt/*.cpp "$repo"/shared/gpt/*.h | sha256sum | cut -c1-16)"
if [ ! -f "$kernels" ]; then
  echo "the GPT's C++ decode kernels: built once per torch version (~2.5 min of CPU), then loaded" >&2
  if python -m dora_gpt_sovits.gpt.half_matvec; then
    touch "$kernels"
  else
    echo "note: continuing without them: the GPT decodes with PyTorch's kernels, about 2x slower on a CPU" \
      "(install a C++ compiler, e.g. apt-get install g++, and run this again)" >&2
  fi
fi

# Official weights when they resolve (GSV_MODEL_DIR, default ~/.cache/dora-gpt-sovits/pretrained_models),
# else a tiny random-weight development model under models/, built once: sets GSV_MODEL_DIR.
choose_models() {
  local missing
  if missing="$(python -c 'from dora_gpt_sovits.model_paths import ModelsMissing, resolve
try:
    resolve(need=("gpt", "sovits", "bert", "hubert"))
except ModelsMissing as e:
    raise SystemExit(str(e))' 2>&1)"; then
    return 0
  fi
  # Set by hand but incomplete: say what is missing there before falling back.
  [ -z "${GSV_MODEL_DIR:-}" ] || echo "GSV_MODEL_DIR=$GSV_MODEL_DIR: $missing"
  local version="${GSV_VERSION:-v2}"
  export GSV_MODEL_DIR="$repo/models/dev-tiny"
  [ "$version" = v2 ] || GSV_MODEL_DIR="$repo/models/dev-tiny-$version"
  [ -f "$GSV_MODEL_DIR/DEVELOPMENT-MODEL.txt" ] || gsv-devmodel --out "$GSV_MODEL_DIR" --size tiny --version "$version"
  echo "############################################################################"
  echo "# No official weights found: using a DEVELOPMENT model with RANDOM weights. #"
  echo "# The audio will be NOISE, not speech. Run 'gsv-download' for real voices.  #"
  echo "############################################################################"
}

if [ "$print_env" = 1 ]; then
  choose_models
  printf 'export VIRTUAL_ENV=%q\n' "$VIRTUAL_ENV" >&3
  printf 'export PATH=%q:"$PATH"\n' "$VIRTUAL_ENV/bin" >&3
  printf 'export GSV_MODEL_DIR=%q\n' "${GSV_MODEL_DIR:-$HOME/.cache/dora-gpt-sovits/pretrained_models}" >&3
fi
