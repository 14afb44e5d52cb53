#!/usr/bin/env bash
# Install (first run only) and run the test suite. Extra arguments go to pytest.
#   ./scripts/test.sh            everything (what CI runs)
#   ./scripts/test.sh --fast     the fast tier: no e2e graphs, nothing marked slow (docs/testing.md)
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
. scripts/setup_env.sh test
tier=()
args=()
for arg in "$@"; do
  if [ "$arg" = "--fast" ]; then tier=(-m "not e2e and not slow and not gpu"); else args+=("$arg"); fi
done
exec python -m pytest -q -p no:cacheprovider "${tier[@]}" "${args[@]}"
