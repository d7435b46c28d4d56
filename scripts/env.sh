#!/usr/bin/env bash
# Runs a command with .env loaded (when present), as make serve, make migrate
# and make fake-keap do. Variables already set in the environment win.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -f .env ]; then
	while IFS= read -r line || [ -n "$line" ]; do
		case "$line" in ''|\#*) continue ;; esac
		name=${line%%=*}
		[ -z "${!name+x}" ] && export "$line"
	done < .env
fi
exec "$@"
