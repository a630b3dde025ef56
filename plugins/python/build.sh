#!/usr/bin/env bash
# Builds each Python plugin (plugins/python/NAME/app.py) into dist/plugins/NAME-py.wasm with
# componentize-py, which generates the WIT bindings on the fly (nothing generated is kept).
# The tool lives in a virtualenv at ${EVENTHOST_TOOLS:-~/.cache/eventhost-tools}/python,
# created on first use and reinstalled only when requirements.txt changes. A plugin whose
# sources, the WIT and the requirements are older than its .wasm is not rebuilt. Each
# component is written to a temporary name in dist/plugins and renamed into place, so a daemon
# watching that folder never loads half a file. The plugins of plugins/python/hostile/NAME, which
# fail on purpose for the runtime's tests, go to dist/hostile/hostile-NAME-py.wasm.
# Usage: bash plugins/python/build.sh (any cwd)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
venv="${EVENTHOST_TOOLS:-$HOME/.cache/eventhost-tools}/python"
requirements="$here/requirements.txt"
out_dir="$root/dist/plugins"

# The venv records which requirements it was installed from; any change reinstalls.
ensure_tools() {
    local stamp="$venv/.requirements.txt"
    if [[ ! -x "$venv/bin/python" ]]; then
        python3 -m venv "$venv"
    fi
    if [[ ! -x "$venv/bin/componentize-py" ]] || ! cmp -s "$requirements" "$stamp"; then
        "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements"
        cp "$requirements" "$stamp"
    fi
}

# Whether $1 exists and is newer than every input file of the build of plugin folder $2.
up_to_date() {
    local wasm="$1" plugin="$2"
    [[ -f "$wasm" ]] || return 1
    [[ -z "$(find "$plugin" "$root/wit" "$requirements" "$here/build.sh" \
        -type f -newer "$wasm" -not -path '*/__pycache__/*' -print -quit)" ]]
}

# build FOLDER WASM: componentize FOLDER/app.py into WASM, unless it is up to date.
build() {
    local plugin="$1" wasm="$2"
    if up_to_date "$wasm" "$plugin"; then
        echo "$wasm"
        return
    fi
    local tmp
    tmp="$(mktemp "$(dirname "$wasm")/.$(basename "$wasm").XXXXXX.tmp")"
    # VIRTUAL_ENV would add that environment's site-packages to the component's Python path.
    if ! env -u VIRTUAL_ENV "$venv/bin/componentize-py" --quiet \
        -d "$root/wit" -w handler componentize -p "$plugin" app -o "$tmp"; then
        rm -f "$tmp"
        return 1
    fi
    chmod 644 "$tmp"
    mv -f "$tmp" "$wasm"
    echo "$wasm"
}

shopt -s nullglob
ensure_tools
mkdir -p "$out_dir" "$root/dist/hostile"
for app in "$here"/*/app.py; do
    plugin="$(dirname "$app")"
    build "$plugin" "$out_dir/$(basename "$plugin")-py.wasm"
done
# Python plugins that fail on purpose, for the runtime's tests: dist/hostile/hostile-NAME-py.wasm.
for app in "$here"/hostile/*/app.py; do
    plugin="$(dirname "$app")"
    build "$plugin" "$root/dist/hostile/hostile-$(basename "$plugin")-py.wasm"
done
