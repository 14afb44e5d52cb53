#!/usr/bin/env bash
# Install node-hub's Python nodes each into its own virtual environment, .hub-venvs/<node>/, so that
# their pins (dora-vad's and whisper's numpy<2, qwen's transformers<=4.52, whisper/qwen's torchaudio)
# never touch the environment our gsv-* nodes run in, nor each other.
#
#   scripts/setup_hub_nodes.sh [NODE ...]     default: every hub node of dataflows/voice-assistant.yml
#                                             (installed side by side, one venv each)
#
# dataflows/voice-assistant.yml calls this as each hub node's `build:` and starts the node from
# `.hub-venvs/<node>/bin/<node>`. Re-running is cheap: a node is reinstalled only when what it asks
# for changed. Settings (environment):
#   GSV_HUB_NODE_VERSION   hub node release (0.5.0, the one docs/voice-assistant.md describes)
#   GSV_DORA_RS_SPEC       the dora Python API in each venv; it must match the dora CLI/daemon (1.1)
#   GSV_TORCH_SPEC         torch for dora-vad (torch==2.13.0, as scripts/setup_env.sh)
#   GSV_HUB_TORCHAUDIO_SPEC torch/torchvision/torchaudio for dora-distil-whisper and dora-qwen
#   GSV_HUB_TORCH_INDEX    a PyTorch wheel index for those installs, e.g.
#                          https://download.pytorch.org/whl/cpu (CPU builds; PyPI's Linux x86_64
#                          torch is a CUDA build of several GB)
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venvs="$repo/.hub-venvs"
python="${PYTHON:-python3}"
version="${GSV_HUB_NODE_VERSION:-0.5.0}"
dora_rs="${GSV_DORA_RS_SPEC:-dora-rs>=1.1,<1.2}"
all_nodes=(dora-microphone dora-vad dora-distil-whisper dora-qwen dora-pyaudio)

die() {
  echo "error: setup_hub_nodes: $*" >&2
  exit 1
}

# What a node needs besides itself: a torch pinned first (so the node's own `torch>=…` cannot pull
# another build), and the modules whose import proves the environment works (`.main`: what the
# node runs at start, e.g. dora-vad loads its bundled model; whisper's and qwen's would download
# their models, so only their packages are imported).
torch_of() {
  case "$1" in
    dora-vad) echo "${GSV_TORCH_SPEC:-torch==2.13.0}" ;;
    dora-distil-whisper | dora-qwen) echo "${GSV_HUB_TORCHAUDIO_SPEC:-torch==2.9.1 torchvision==0.24.1 torchaudio==2.9.1}" ;;
    dora-microphone | dora-pyaudio) echo "" ;;
    *) die "unknown hub node '$1' (known: ${all_nodes[*]})" ;;
  esac
}

imports_of() {
  case "$1" in
    dora-vad) echo "dora numpy pyarrow torch silero_vad dora_vad.main" ;;
    dora-pyaudio) echo "dora numpy pyarrow pyaudio dora_pyaudio.main" ;;
    dora-microphone) echo "dora numpy pyarrow sounddevice dora_microphone.main" ;;
    dora-distil-whisper) echo "dora numpy pyarrow torch transformers dora_distil_whisper" ;;
    dora-qwen) echo "dora numpy pyarrow torch transformers dora_qwen" ;;
  esac
}

# Pins the node's own metadata gets wrong: dora-microphone, dora-vad and dora-distil-whisper ask for
# numpy<2, but let pip take pyarrow 26, which refuses to import beside NumPy 1.
pins_of() {
  case "$1" in
    dora-microphone | dora-vad | dora-distil-whisper) echo "pyarrow<26" ;;
    *) echo "" ;;
  esac
}

hint_of() {
  case "$1" in
    dora-pyaudio) echo "PyAudio builds from source: it needs a C compiler and PortAudio's headers (Debian: apt-get install portaudio19-dev)" ;;
    dora-microphone) echo "sounddevice needs the PortAudio library (Debian: apt-get install libportaudio2)" ;;
    *) echo "see the pip output above" ;;
  esac
}

install_node() {
  local node="$1" env="$venvs/$1"
  local torch
  torch="$(torch_of "$node")"
  local index=()
  [ -n "${GSV_HUB_TORCH_INDEX:-}" ] && index=(--index-url "$GSV_HUB_TORCH_INDEX")
  local want="$node==$version|$dora_rs|$torch|$(pins_of "$node")|${GSV_HUB_TORCH_INDEX:-}"
  local stamp
  stamp="$env/.installed-$(printf '%s' "$want" | sha256sum | cut -c1-16)"
  if [ -f "$stamp" ]; then
    echo "$node: up to date in $env"
    return
  fi
  echo "$node: installing into $env"
  rm -rf "$env"
  "$python" -m venv "$env"
  "$env/bin/python" -m pip install --quiet --upgrade pip
  local constraints="$env/torch-constraints.txt"
  : >"$constraints"
  if [ -n "$torch" ]; then
    # shellcheck disable=SC2086  # the spec is a list of requirements
    "$env/bin/python" -m pip install --quiet "${index[@]}" $torch || die "$node: could not install $torch"
    # Held fixed while the node installs: a pin of the node's that disagrees fails here, loudly,
    # instead of replacing torch with another (CUDA) build.
    "$env/bin/python" -m pip freeze | grep -iE '^(torch|torchvision|torchaudio)==' >"$constraints" || true
  fi
  # shellcheck disable=SC2046  # the pins are a list of requirements
  "$env/bin/python" -m pip install --quiet -c "$constraints" "$dora_rs" "$node==$version" $(pins_of "$node") ||
    die "$node: pip install failed; $(hint_of "$node")"
  local module
  for module in $(imports_of "$node"); do
    "$env/bin/python" -c "import $module" >/dev/null 2>&1 ||
      die "$node: 'import $module' fails in $env: $("$env/bin/python" -c "import $module" 2>&1 | tail -1); $(hint_of "$node")"
  done
  [ -x "$env/bin/$node" ] || die "$node: no console script $env/bin/$node"
  touch "$stamp"
  echo "$node: ready ($env/bin/$node)"
}

"$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null ||
  die "Python >= 3.11 is required for dora-rs 1.1 (found: $("$python" --version 2>&1)); set PYTHON=python3.11"
mkdir -p "$venvs"
nodes=("$@")
[ ${#nodes[@]} -gt 0 ] || nodes=("${all_nodes[@]}")
# In parallel: most of the time goes to downloads and unpacking, not to one core.
pids=()
for node in "${nodes[@]}"; do
  install_node "$node" &
  pids+=($!)
done
failed=0
for pid in "${pids[@]}"; do
  wait "$pid" || failed=1
done
exit "$failed"
