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
choose_models # from setup_env.sh: official weights, else the development model (a loud banner)
exec dora run dataflow.yml
