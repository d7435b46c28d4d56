package app_test

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/keapsync/keapsync/internal/app"
	"github.com/keapsync/keapsync/internal/keaptest"
	"github.com/keapsync/keapsync/internal/pgtest"
	"github.com/keapsync/keapsync/internal/supabasetest"
)

func getenv(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func run(t *testing.T, vars map[string]string, args ...string) (string, string, error) {
	t.Helper()
	var out, errb keaptest.LogBuffer
	err := app.Run(context.Background(), app.Env{Args: args, Getenv: getenv(vars), Stdout: &out, Stderr: &errb})
	return out.String(), errb.String(), err
}

func TestHelpOnEveryCommand(t *testing.T) {
	t.Parallel()
	for _, cmd := range []string{"serve", "migrate", "fake-keap", "accounts", "token", "hooks", "supabase"} {
		out, _, err := run(t, nil, cmd, "--help")
		require.NoError(t, err, cmd)
		require.Contains(t, out, "Usage: keapsync "+cmd)
	}
	out, _, err := run(t, nil, "--help")
	require.NoError(t, err)
	require.Contains(t, out, "Commands:")
	_, _, err = run(t, nil, "bogus")
	require.ErrorIs(t, err, app.ErrUsage)
	_, _, err = run(t, nil)
	require.ErrorIs(t, err, app.ErrUsage)
	_, _, err = run(t, nil, "token", "steal", "acme")
	require.ErrorIs(t, err, app.ErrUsage)
	_, _, err = run(t, nil, "serve", "--nope")
	require.ErrorIs(t, err, app.ErrUsage)
	// --help anywhere prints help and runs nothing (no config is even loaded).
	for _, args := range [][]string{{"hooks", "unsubscribe", "--help"}, {"token", "get", "--help", "acme"}, {"hooks", "subscribe", "acme", "-h"}} {
		out, _, err := run(t, nil, args...)
		require.NoError(t, err, args)
		require.Contains(t, out, "Usage: keapsync "+args[0], args)
	}
	for _, args := range [][]string{{"migrate", "extra"}, {"accounts", "a b"}, {"accounts", "a", "b"}, {"token", "get", ".."}, {"hooks", "subscribe"}, {"supabase", "fix"}, {"supabase"}, {"hooks", "subscribe", "acme", "--events", " , "}, {"hooks", "subscribe", "acme", "--events", "contact add"}} {
		_, _, err := run(t, nil, args...)
		require.ErrorIs(t, err, app.ErrUsage, args)
	}
}

func TestMissingConfigNamesTheVariable(t *testing.T) {
	t.Parallel()
	_, _, err := run(t, map[string]string{}, "serve")
	require.ErrorContains(t, err, "DATABASE_URL")
	_, _, err = run(t, map[string]string{}, "migrate")
	require.ErrorContains(t, err, "DATABASE_URL")
	_, _, err = run(t, map[string]string{"DATABASE_URL": "postgres://127.0.0.1:1/x"}, "supabase", "check")
	require.ErrorContains(t, err, "SUPABASE_URL")
}

// TestSupabaseCheck runs `keapsync supabase check` against a migrated
// database with Supabase's roles, through the imitation of its REST API.
func TestSupabaseCheck(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dbURL := pgtest.NewEmpty(t)
	pool := pgtest.Pool(t, dbURL)
	pgtest.SupabaseRoles(t, pool)
	vars := map[string]string{"DATABASE_URL": dbURL}
	_, _, err := run(t, vars, "migrate")
	require.NoError(t, err)
	vars["SUPABASE_URL"] = supabasetest.New(t, pool, supabasetest.Options{})
	vars["SUPABASE_SERVICE_ROLE_KEY"] = supabasetest.ServiceRoleKey
	vars["SUPABASE_ANON_KEY"] = supabasetest.AnonKey

	out, _, err := run(t, vars, "supabase", "check")
	require.NoError(t, err, out)
	require.Contains(t, out, "OK      anon reads public.keap_contacts")
	require.NotContains(t, out, "FAIL")
	require.NotContains(t, out, supabasetest.AnonKey)

	_, err = pool.Exec(ctx, `INSERT INTO public.keap_contacts (account_id, keap_id) VALUES ('acme', 1);
		GRANT SELECT ON public.keap_contacts TO anon; ALTER TABLE public.keap_contacts DISABLE ROW LEVEL SECURITY`)
	require.NoError(t, err)
	out, _, err = run(t, vars, "supabase", "check", "--json")
	require.ErrorIs(t, err, app.ErrExposed)
	var findings []map[string]string
	require.NoError(t, json.Unmarshal([]byte(out), &findings))
	require.Contains(t, findings, map[string]string{"check": "anon reads public.keap_contacts", "status": "fail",
		"detail": "the anon key reads rows of public.keap_contacts: revoke its grants and enable row level security (migration 003 does both)"})
}

// TestServeEndToEnd boots the real program on :0 against a fresh database
// and the fake Keap, connects an account, reads its token through the CLI,
// and shuts down gracefully.
func TestServeEndToEnd(t *testing.T) {
	t.Parallel()
	h := keaptest.New(t, keaptest.Options{})
	dbURL := pgtest.NewMissing(t) // migrate creates it
	vars := map[string]string{
		"DATABASE_URL": dbURL, "KEAP_CLIENT_ID": keaptest.ClientID, "KEAP_CLIENT_SECRET": keaptest.ClientSecret,
		"KEAP_REDIRECT_URI": keaptest.RedirectURI, "TOKEN_ENCRYPTION_KEYS": keaptest.Keys,
		"INTERNAL_API_KEY": "app-test-key-0123456789", "LISTEN_ADDR": "127.0.0.1:0",
		"KEAP_AUTH_URL": h.FakeURL + "/app/oauth/authorize", "KEAP_TOKEN_URL": h.FakeURL + "/token", "KEAP_API_URL": h.FakeURL + "/crm/rest",
	}
	u, err := url.Parse(dbURL)
	require.NoError(t, err)
	out, _, err := run(t, vars, "migrate")
	require.NoError(t, err)
	require.Contains(t, out, "created database "+strings.TrimPrefix(u.Path, "/")+"\n")
	require.Contains(t, out, "002_ops_views.sql")
	out, _, err = run(t, vars, "migrate")
	require.NoError(t, err)
	require.Contains(t, out, "already up to date")

	ctx, cancel := context.WithCancel(context.Background())
	addr := make(chan string, 1)
	var logs keaptest.LogBuffer
	done := make(chan error, 1)
	go func() {
		done <- app.Run(ctx, app.Env{Args: []string{"serve"}, Getenv: getenv(vars), Stdout: &logs, Stderr: &logs,
			Ready: func(a string) { addr <- a }})
	}()
	var base string
	select {
	case a := <-addr:
		base = "http://" + a
	case err := <-done:
		t.Fatalf("serve exited: %v\n%s", err, logs.String())
	case <-time.After(20 * time.Second):
		t.Fatal("serve did not start")
	}
	resp, err := http.Get(base + "/readyz")
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, 200, resp.StatusCode)

	// "OPTIONS *" gets the router's JSON answer, not net/http's empty 200.
	conn, err := net.Dial("tcp", strings.TrimPrefix(base, "http://"))
	require.NoError(t, err)
	_, err = io.WriteString(conn, "OPTIONS * HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
	require.NoError(t, err)
	resp, err = http.ReadResponse(bufio.NewReader(conn), nil)
	require.NoError(t, err)
	raw, _ := io.ReadAll(resp.Body)
	conn.Close()
	require.NotEqual(t, 200, resp.StatusCode)
	require.Contains(t, string(raw), `"error"`)

	req, _ := http.NewRequest("POST", base+"/oauth/initiate", strings.NewReader(`{"keap_account_id":"acme"}`))
	req.Header.Set("Authorization", "Bearer app-test-key-0123456789")
	resp, err = http.DefaultClient.Do(req)
	require.NoError(t, err)
	var init struct {
		URL string `json:"authorization_url"`
	}
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&init))
	resp.Body.Close()
	require.Equal(t, 201, resp.StatusCode)

	// The browser: Keap's authorize page redirects to our callback. The
	// redirect URI names the real listener's port, so rewrite its host.
	noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err = noFollow.Get(init.URL)
	require.NoError(t, err)
	resp.Body.Close()
	loc, err := url.Parse(resp.Header.Get("Location"))
	require.NoError(t, err)
	resp, err = http.Get(base + loc.Path + "?" + loc.RawQuery)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, 200, resp.StatusCode)

	// The CLI shares the vault and the lock with the service.
	pool := pgtest.Pool(t, dbURL)
	out, _, err = run(t, vars, "token", "get", "acme")
	require.NoError(t, err)
	first := strings.TrimSpace(out)
	require.True(t, h.Fake.AccessTokenLive(first))
	out, _, err = run(t, vars, "token", "refresh", "acme")
	require.NoError(t, err)
	second := strings.TrimSpace(out)
	require.NotEqual(t, first, second)
	require.True(t, h.Fake.AccessTokenLive(second))

	out, _, err = run(t, vars, "accounts")
	require.NoError(t, err)
	require.Regexp(t, `acme\s+ok\s+connected`, out)
	out, _, err = run(t, vars, "accounts", "acme")
	require.NoError(t, err)
	require.Contains(t, out, `"kind": "refreshed"`)
	_, _, err = run(t, vars, "accounts", "ghost")
	require.ErrorContains(t, err, "not found")
	resp, err = http.Get(base + "/metrics")
	require.NoError(t, err)
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.Contains(t, string(metrics), `keapsync_accounts{health="ok"} 1`)
	require.Contains(t, string(metrics), `keapsync_accounts{health="reauth_required"} 0`)

	// Hooks through the CLI, verified live against the running service,
	// then a contact flows from the fake Keap into public.keap_contacts.
	vars["PUBLIC_BASE_URL"] = base
	out, _, err = run(t, vars, "hooks", "--events", "contact.add,contact.edit", "subscribe", "acme")
	require.NoError(t, err)
	require.Regexp(t, `contact\.add\s+Verified`, out)
	out, _, err = run(t, vars, "hooks", "list", "acme")
	require.NoError(t, err)
	require.Regexp(t, `contact\.edit\s+Verified`, out)
	_, _, err = run(t, vars, "hooks", "subscribe", "acme", "--events", "not an event")
	require.ErrorIs(t, err, app.ErrUsage)
	id := h.Fake.PutContact(map[string]any{"given_name": "Lin"})
	_, err = h.Fake.Deliver(context.Background())
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		var name string
		err := pool.QueryRow(context.Background(), "SELECT given_name FROM public.keap_contacts WHERE keap_id = $1", id).Scan(&name)
		return err == nil && name == "Lin"
	}, 15*time.Second, 50*time.Millisecond)
	out, _, err = run(t, vars, "hooks", "unsubscribe", "acme")
	require.NoError(t, err)
	require.Contains(t, out, "removed 2")

	cancel()
	select {
	case err := <-done:
		require.NoError(t, err, "graceful shutdown")
	case <-time.After(30 * time.Second):
		t.Fatal("serve did not shut down")
	}
	require.Contains(t, logs.String(), "shutting down")
	if leaked := h.LeakedSecrets(logs.String()); len(leaked) > 0 {
		t.Fatalf("serve logged secrets: %v", leaked)
	}
}
