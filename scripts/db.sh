#!/usr/bin/env bash
# Prints the URL of a Postgres server for make demo, make test and make bench,
# which create (and drop) their own databases on it: keapsync_demo,
# keapsync_bench, keapsync_test_* and keapsync_tmpl_*.
#
# Uses the server of DATABASE_URL when it answers (default: the local server
# on 127.0.0.1:5432), always through its "postgres" database so the database
# DATABASE_URL names need not exist. Otherwise starts a throwaway cluster
# under .data/pg with the system's initdb/pg_ctl on a free port.
#   scripts/db.sh url    print a URL that answers (starting a cluster if needed)
#   scripts/db.sh stop   stop the throwaway cluster, if one runs
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=".data/pg"
DEFAULT_URL="postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"

say() { echo "db.sh: $*" >&2; }

answers() { # url
	if command -v pg_isready >/dev/null 2>&1; then
		pg_isready -q -t 3 -d "$1" >/dev/null 2>&1
		return
	fi
	# No client tools: at least check the port takes connections.
	local hostport host port
	hostport=$(printf '%s' "$1" | sed -E 's#^[a-z]+://([^@/]*@)?([^/?]*).*#\2#')
	host=${hostport%:*}; port=${hostport##*:}
	[ "$host" = "$hostport" ] && port=5432
	(exec 3<>"/dev/tcp/${host:-127.0.0.1}/$port") 2>/dev/null
}

pgbin() { # name: find a server binary on PATH or in Debian's versioned dirs
	if command -v "$1" >/dev/null 2>&1; then command -v "$1"; return; fi
	ls -1 /usr/lib/postgresql/*/bin/"$1" 2>/dev/null | sort -V | tail -n 1
}

as_owner() { # run a server command as a non-root user: initdb refuses root
	if [ "$(id -u)" = 0 ]; then
		runuser -u postgres -- "$@"
	else
		"$@"
	fi
}

cluster_url() { echo "postgres://postgres@127.0.0.1:$(cat "$DATA/port")/postgres?sslmode=disable"; }

start_cluster() {
	local initdb pg_ctl port
	initdb=$(pgbin initdb); pg_ctl=$(pgbin pg_ctl)
	if [ -z "$initdb" ] || [ -z "$pg_ctl" ]; then
		say "no Postgres answers at ${DATABASE_URL:-$DEFAULT_URL} and initdb/pg_ctl are not installed."
		say "install the server binaries (Debian/Ubuntu: sudo apt-get install -y postgresql),"
		say "or run 'supabase start' and set DATABASE_URL to its database."
		exit 1
	fi
	if [ "$(id -u)" = 0 ] && ! id postgres >/dev/null 2>&1; then
		useradd --system --home-dir /nonexistent --shell /usr/sbin/nologin postgres
	fi
	if [ -f "$DATA/port" ] && answers "$(cluster_url)"; then
		cluster_url; return
	fi
	mkdir -p .data
	if [ ! -f "$DATA/PG_VERSION" ]; then
		rm -rf "$DATA"; mkdir -p "$DATA"
		[ "$(id -u)" = 0 ] && chown postgres "$DATA"
		say "creating a throwaway cluster in $DATA"
		as_owner "$initdb" -D "$DATA" -U postgres --auth=trust --no-sync >/dev/null
	fi
	[ "$(id -u)" = 0 ] && chown -R postgres "$DATA"
	for port in $(seq 54329 54429); do
		if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then break; fi
	done
	echo "$port" > "$DATA/port.tmp"; mv "$DATA/port.tmp" "$DATA/port"
	[ "$(id -u)" = 0 ] && chown postgres "$DATA/port"
	say "starting Postgres on 127.0.0.1:$port (log: .data/pg.log)"
	touch .data/pg.log; [ "$(id -u)" = 0 ] && chown postgres .data/pg.log
	as_owner "$pg_ctl" -D "$DATA" -l .data/pg.log -w -t 30 \
		-o "-p $port -k /tmp -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200" start >/dev/null
	cluster_url
}

# server_url swaps the database in a postgres:// URL for "postgres".
server_url() {
	printf '%s' "$1" | sed -E 's#^([a-z]+://[^/?]*)(/[^?]*)?#\1/postgres#'
}

case "${1:-url}" in
url)
	url=$(server_url "${DATABASE_URL:-$DEFAULT_URL}")
	if answers "$url"; then echo "$url"; exit 0; fi
	say "no Postgres answers at $(printf '%s' "$url" | sed -E 's#//[^@/]*@#//***@#')"
	start_cluster
	;;
stop)
	if [ -f "$DATA/postmaster.pid" ]; then as_owner "$(pgbin pg_ctl)" -D "$DATA" -m fast stop || true; fi
	;;
*)
	echo "usage: scripts/db.sh url|stop" >&2; exit 2 ;;
esac
