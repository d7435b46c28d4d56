// Package supabasetest runs a small imitation of a Supabase project's REST
// API (its gateway and PostgREST) over a real test database, for tests of
// code that talks to Supabase through supabase-go. Like the real thing, it
// maps the request's API key to a database role, switches to that role for
// the query (SET LOCAL ROLE, as PostgREST's authenticator does), serves only
// the exposed schemas, and answers with PostgREST's status codes, error
// bodies and Content-Range counts. It serves GET and HEAD on
// /rest/v1/{table} with select=* or a column list, limit and Prefer:
// count=exact: enough to read, nothing more.
package supabasetest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Keys of the imitation project, as its dashboard would show them.
const (
	AnonKey        = "test-anon-key"
	ServiceRoleKey = "test-service-role-key"
)

// Options configure New. Zero values give Supabase's defaults.
type Options struct {
	// Exposed are the schemas the API serves, default public and graphql_public.
	Exposed []string
}

var ident = regexp.MustCompile(`^[a-z_][a-z0-9_]*$`)

// New serves the API for the database behind pool until the test ends, and
// returns its URL (what SUPABASE_URL would be).
func New(t testing.TB, pool *pgxpool.Pool, o Options) string {
	t.Helper()
	if len(o.Exposed) == 0 {
		o.Exposed = []string{"public", "graphql_public"}
	}
	roles := map[string]string{AnonKey: "anon", ServiceRoleKey: "service_role"}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// The gateway checks the apikey header before PostgREST sees anything.
		role, ok := roles[r.Header.Get("apikey")]
		if !ok {
			writeJSON(w, http.StatusUnauthorized, map[string]any{"message": "Invalid API key", "hint": "Double check your Supabase `anon` or `service_role` API key."})
			return
		}
		table, ok := strings.CutPrefix(r.URL.Path, "/rest/v1/")
		if !ok || !ident.MatchString(table) || (r.Method != http.MethodGet && r.Method != http.MethodHead) {
			pgrstError(w, http.StatusNotFound, "PGRST125", "Invalid path specified in request URL")
			return
		}
		schema := r.Header.Get("Accept-Profile")
		if schema == "" {
			schema = o.Exposed[0]
		}
		if !slices.Contains(o.Exposed, schema) {
			pgrstError(w, http.StatusNotAcceptable, "PGRST106", "Invalid schema: "+schema)
			return
		}
		cols := r.URL.Query().Get("select")
		if cols == "" {
			cols = "*"
		}
		var list []string
		for _, c := range strings.Split(cols, ",") {
			if c != "*" && !ident.MatchString(c) {
				pgrstError(w, http.StatusBadRequest, "PGRST100", "failed to parse select parameter ("+cols+")")
				return
			}
			if c != "*" {
				c = pgx.Identifier{c}.Sanitize()
			}
			list = append(list, c)
		}
		limit := -1
		if v := r.URL.Query().Get("limit"); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 {
				pgrstError(w, http.StatusBadRequest, "PGRST100", "failed to parse limit")
				return
			}
			limit = n
		}
		counted := strings.Contains(r.Header.Get("Prefer"), "count=exact")
		body, n, total, err := query(r.Context(), pool, role, schema, table, strings.Join(list, ", "), limit, counted)
		var pgErr *pgconn.PgError
		switch {
		case errors.As(err, &pgErr) && pgErr.Code == "42501":
			status := http.StatusForbidden
			if role == "anon" {
				status = http.StatusUnauthorized
			}
			pgrstError(w, status, pgErr.Code, pgErr.Message)
			return
		case errors.As(err, &pgErr) && pgErr.Code == "42P01":
			pgrstError(w, http.StatusNotFound, "PGRST205", fmt.Sprintf("Could not find the table '%s.%s' in the schema cache", schema, table))
			return
		case err != nil:
			pgrstError(w, http.StatusInternalServerError, "XX000", err.Error())
			return
		}
		rng := "*"
		if n > 0 {
			rng = fmt.Sprintf("0-%d", n-1)
		}
		if counted {
			rng += "/" + strconv.FormatInt(total, 10)
		} else {
			rng += "/*"
		}
		w.Header().Set("Content-Range", rng)
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		if r.Method == http.MethodGet {
			_, _ = w.Write(body)
		}
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

// query reads as role, in a transaction that is rolled back.
func query(ctx context.Context, pool *pgxpool.Pool, role, schema, table, cols string, limit int, counted bool) (body []byte, n int, total int64, err error) {
	tx, err := pool.Begin(ctx)
	if err != nil {
		return nil, 0, 0, err
	}
	defer func() { _ = tx.Rollback(ctx) }()
	if _, err := tx.Exec(ctx, "SET LOCAL ROLE "+pgx.Identifier{role}.Sanitize()); err != nil {
		return nil, 0, 0, err
	}
	from := pgx.Identifier{schema, table}.Sanitize()
	sql := "SELECT " + cols + " FROM " + from
	if limit >= 0 {
		sql += " LIMIT " + strconv.Itoa(limit)
	}
	if err := tx.QueryRow(ctx, "SELECT coalesce(json_agg(t), '[]'), count(*) FROM ("+sql+") t").Scan(&body, &n); err != nil {
		return nil, 0, 0, err
	}
	if counted {
		if err := tx.QueryRow(ctx, "SELECT count(*) FROM "+from).Scan(&total); err != nil {
			return nil, 0, 0, err
		}
	}
	return body, n, total, nil
}

func pgrstError(w http.ResponseWriter, status int, code, msg string) {
	writeJSON(w, status, map[string]any{"code": code, "details": nil, "hint": nil, "message": msg})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
