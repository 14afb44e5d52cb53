#!/usr/bin/env bash
# Install (first run only) and speak a text through the default dataflow.
#   ./scripts/speak.sh "你好，世界。Hello world."
# Audio goes to the speaker when PortAudio and an output device exist, otherwise to out/speech.wav.
# Without official weights (see `gsv-download`), a random-weight DEVELOPMENT model is built and used:
# the graph runs end to end, but the audio is noise.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
. scripts/setup_env.sh run
export GSV_TEXT="${1:-${GSV_TEXT:-}}"
if ! python -c 'from dora_gpt_sovits.model_paths import resolve; resolve(need=("gpt","sovits","bert","hubert"))' 2>/dev/null; then
  export GSV_MODEL_DIR="$repo/models/dev-tiny"
  [ -f "$GSV_MODEL_DIR/DEVELOPMENT-MODEL.txt" ] || gsv-devmodel --out "$GSV_MODEL_DIR" --size tiny
  echo "############################################################################"
  echo "# No official weights found: using a DEVELOPMENT model with RANDOM weights. #"
  echo "# The audio will be NOISE, not speech. Run 'gsv-download' for real voices.  #"
  echo "############################################################################"
fi
exec dora run dataflow.yml
