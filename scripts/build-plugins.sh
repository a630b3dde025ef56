#!/usr/bin/env bash
# Builds the example plugins into dist/plugins/ (Rust: order-totals, shipping-policy, counter;
# Python: order-totals-py; JavaScript: order-totals-js), the example that needs sinks configured
# (order-notifier) into dist/examples/, and the Rust hostile test plugins into dist/hostile/. The Python and JavaScript builds install their tools on first use
# (componentize-py in a virtualenv under ~/.cache/eventhost-tools, componentize-js with npm).
# Idempotent: re-running rebuilds only what changed and overwrites the copies.
# Respects CARGO_TARGET_DIR (default: target/ in the workspace). Usage: bash scripts/build-plugins.sh
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

target=wasm32-wasip2
examples=(order-totals shipping-policy counter)
# Examples that need the daemon's configuration (sinks), kept out of the demo's folder.
configured=(order-notifier)
hostile=(loop spin describe-loop memory panic flood fs net http other-world fail-on fail-on-fixed versioned-a versioned-b versioned-c deliver fuzz)

if ! rustup target list --installed | grep -qx "$target"; then
    rustup target add "$target"
fi

packages=()
for name in "${examples[@]}" "${configured[@]}"; do packages+=(-p "$name"); done
for name in "${hostile[@]}"; do packages+=(-p "hostile-$name"); done
cargo build --release --target "$target" "${packages[@]}"

target_dir="${CARGO_TARGET_DIR:-target}"
out="$target_dir/$target/release"
mkdir -p dist/plugins dist/examples dist/hostile

# Cargo names the artifact after the crate, with `-` turned into `_`.
copy() {
    local crate="$1" dest="$2"
    cp "$out/${crate//-/_}.wasm" "$dest"
    echo "$root/$dest"
}

for name in "${examples[@]}"; do copy "$name" "dist/plugins/$name.wasm"; done
for name in "${configured[@]}"; do
    copy "$name" "dist/examples/$name.wasm"
    cp "plugins/rust/$name/$name.toml" "dist/examples/$name.toml"
done
for name in "${hostile[@]}"; do copy "hostile-$name" "dist/hostile/hostile-$name.wasm"; done

bash plugins/python/build.sh
bash plugins/javascript/build.sh
