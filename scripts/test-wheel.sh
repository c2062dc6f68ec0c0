#!/usr/bin/env bash
# realfill as a user installs it, alone (scripts/test.sh runs the same tests within the whole suite): the
# sdist and wheels built from the tracked files, the wheels of realfill and plugins/example-plugin installed
# into a fresh venv (not editable, constraints.txt's versions), and every subcommand's --help,
# `realfill plugins --json` and a smoke fill of examples/motorcycle run from a folder outside the checkout.
# The dependencies' wheels are kept in REALFILL_WHEELHOUSE (default ~/.cache/realfill/wheelhouse): the
# first run downloads them, later runs install offline.
set -euo pipefail
cd "$(dirname "$0")/.."
. .venv/bin/activate
exec python -m pytest -q -p no:cacheprovider tests/test_wheel.py "$@"
