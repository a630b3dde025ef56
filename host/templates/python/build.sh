#!/usr/bin/env bash
# Builds {{name}}.wasm, the plugin's WebAssembly component, from src/app.py next to this
# script, with componentize-py from a virtualenv in .venv (made on first use, reinstalled when
# requirements.txt changes). The component is written under a temporary name and renamed into
# place, so a daemon watching the folder never loads half a file.
# Usage: bash build.sh (from any directory; needs python3 with venv and pip)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

if [[ ! -x .venv/bin/componentize-py ]] || ! cmp -s requirements.txt .venv/.requirements.txt; then
    python3 -m venv .venv
    .venv/bin/python -m pip install --quiet --disable-pip-version-check -r requirements.txt
    cp requirements.txt .venv/.requirements.txt
fi
tmp="$(mktemp ./.{{name}}.wasm.XXXXXX)"
trap 'rm -f "$tmp"' EXIT
# Another virtualenv's site-packages ($VIRTUAL_ENV) would end up in the component.
env -u VIRTUAL_ENV .venv/bin/componentize-py --quiet -d wit -w handler componentize -p src app -o "$tmp"
chmod 644 "$tmp"
mv -f "$tmp" {{name}}.wasm
trap - EXIT
echo "{{name}}.wasm"
