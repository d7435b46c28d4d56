#!/usr/bin/env bash
# make demo: build keapsync, find or start Postgres, then let cmd/demo run the
# fake Keap and keapsync serve on local ports and walk the OAuth flow.
set -euo pipefail
cd "$(dirname "$0")/.."
url=$(scripts/db.sh url)
mkdir -p bin
go build -o bin/keapsync ./cmd/keapsync
exec go run ./cmd/demo --bin bin/keapsync --admin-url "$url"
