#!/usr/bin/env bash
# Fuzzes the input boundaries (fuzz/fuzz_targets: JSONL event lines, the append rules on
# arbitrary names, payloads and metadata, plugin sidecars, the configuration file), each for
# SECONDS (default 20), starting from its committed corpus (fuzz/corpus/TARGET), with
# cargo-fuzz on the nightly toolchain. A failing input stops the run and is left under
# fuzz/artifacts/TARGET/: reproduce it with `cargo +nightly fuzz run --fuzz-dir fuzz TARGET
# FILE`, fix the cause and add the input to the corpus (it then runs at every fuzzing run).
# New inputs found are written to a scratch copy of the corpus, not to the checkout.
#   bash scripts/fuzz.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-20}"
target_dir="${CARGO_TARGET_DIR:-$HOME/.cache/eventhost-target}/fuzz"
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
for target in $(cargo +nightly fuzz list --fuzz-dir fuzz); do
    mkdir -p "$scratch/$target"
    log="$scratch/$target.log"
    echo "fuzzing $target for ${seconds}s"
    status=0
    cargo +nightly fuzz run --fuzz-dir fuzz --target-dir "$target_dir" --sanitizer none \
        "$target" "$scratch/$target" "fuzz/corpus/$target" -- \
        -max_total_time="$seconds" -rss_limit_mb=4096 -print_final_stats=1 > "$log" 2>&1 || status=$?
    if [ "$status" -ne 0 ]; then
        tail -n 60 "$log"
        echo "fuzz target $target failed (exit $status); the input is under fuzz/artifacts/$target/"
        exit "$status"
    fi
    grep -E '^stat::(number_of_executed_units|new_units_added)' "$log" | tr '\n' ' '
    echo
done
