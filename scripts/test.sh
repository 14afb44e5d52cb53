#!/usr/bin/env bash
# Install (first run only) and run the whole test suite. Extra arguments go to pytest.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
. scripts/setup_env.sh test
exec python -m pytest -q -p no:cacheprovider "$@"
