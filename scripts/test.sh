#!/usr/bin/env bash
# make test: go vet, then every test with the race detector against real
# Postgres (each test creates and drops its own database), a short fuzz of
# the webhook parser, then coverage of the packages that guard tokens, which
# must each stay at or above 80%.
set -euo pipefail
cd "$(dirname "$0")/.."
TEST_DATABASE_URL=$(scripts/db.sh url)
export TEST_DATABASE_URL
echo "== go vet"
go vet ./...
echo "== go test -race (Postgres: $(printf '%s' "$TEST_DATABASE_URL" | sed -E 's#//[^@/]*@#//***@#'))"
go test -race -count=1 -timeout 15m -coverprofile=coverage.out ./...
echo "== fuzzing the webhook delivery parser (40,000 inputs)"
go test -run '^$' -fuzz '^FuzzParse$' -fuzztime 40000x ./internal/inbox/
echo "== coverage of the token, keap and seal packages (minimum 80%)"
fail=0
for pkg in tokens keap seal; do
	pct=$(go test -count=1 -cover "./internal/$pkg/" | sed -nE 's/.*coverage: ([0-9.]+)% of statements.*/\1/p')
	printf '  internal/%-8s %s%%\n' "$pkg" "$pct"
	if ! awk -v p="$pct" 'BEGIN { exit !(p >= 80) }'; then
		echo "  internal/$pkg is below 80%" >&2; fail=1
	fi
done
exit $fail
