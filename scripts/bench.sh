#!/usr/bin/env bash
# make bench: build keapsync, find or start Postgres, run cmd/bench. It
# prints a markdown table and writes bench/latest.json; see BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
url=$(scripts/db.sh url)
mkdir -p bin bench
go build -o bin/keapsync ./cmd/keapsync
go build -o bin/bench ./cmd/bench
exec bin/bench --bin bin/keapsync --admin-url "$url" --out bench/latest.json "$@"
