#!/usr/bin/env bash
# Regenerates supabase/migrations from River's migrations and sql/migrations.
set -euo pipefail
cd "$(dirname "$0")/.."
go test ./internal/store -run 'TestSupabaseMigrationsInSync$' -count=1 -update
ls supabase/migrations
