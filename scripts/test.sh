#!/usr/bin/env bash
# Runs every test of the project: builds the WebAssembly plugins the tests load, then runs
# the whole workspace's tests. PostgreSQL tests use DATABASE_URL (default
# postgres://root@127.0.0.1:5432/test) and fail when no server answers.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build-plugins.sh
cargo test --workspace
