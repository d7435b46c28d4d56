package exposure_test

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/keapsync/keapsync/internal/exposure"
	"github.com/keapsync/keapsync/internal/pgtest"
	"github.com/keapsync/keapsync/internal/seal"
	"github.com/keapsync/keapsync/internal/store"
	"github.com/keapsync/keapsync/internal/supabasetest"
)

type testBundle struct {
	pool *pgxpool.Pool
	st   *store.Store
}

// setup gives each test a database that is what a Supabase project is after
// `keapsync migrate`: Supabase's roles and default grants, then our
// migrations, and one synced contact.
func setup(t *testing.T) testBundle {
	t.Helper()
	pool := pgtest.Pool(t, pgtest.NewEmpty(t))
	pgtest.SupabaseRoles(t, pool)
	_, err := store.Migrate(context.Background(), pool, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	_, err = pool.Exec(context.Background(), `INSERT INTO public.keap_contacts (account_id, keap_id, given_name) VALUES ('acme', 1, 'Ada')`)
	require.NoError(t, err)
	st, err := store.New()
	require.NoError(t, err)
	return testBundle{pool: pool, st: st}
}

func (b testBundle) check(t *testing.T, url string, anon seal.Secret) map[string]exposure.Finding {
	t.Helper()
	fs, err := exposure.Check(context.Background(), exposure.Options{
		URL: url, ServiceKey: supabasetest.ServiceRoleKey, AnonKey: anon, DB: b.pool, Store: b.st, Timeout: 2 * time.Second,
	})
	require.NoError(t, err)
	out := map[string]exposure.Finding{}
	for _, f := range fs {
		out[f.Check] = f
	}
	return out
}

func TestMigratedProjectExposesNothing(t *testing.T) {
	t.Parallel()
	b := setup(t)
	got := b.check(t, supabasetest.New(t, b.pool, supabasetest.Options{}), supabasetest.AnonKey)
	require.Len(t, got, 6)
	for name, f := range got {
		require.Equal(t, exposure.OK, f.Status, "%s: %s", name, f.Detail)
	}
	require.Contains(t, got["service_role sees public.keap_contacts"].Detail, "1 rows")
	require.Contains(t, got["anon reads public.keap_contacts"].Detail, "permission denied")
	require.Contains(t, got["anon reaches keapsync.oauth_tokens"].Detail, "not exposed")
}

func TestAnonGrantIsCaught(t *testing.T) {
	t.Parallel()
	b := setup(t)
	url := supabasetest.New(t, b.pool, supabasetest.Options{})
	ctx := context.Background()

	// A grant alone still meets row level security with no policy: nothing shows.
	_, err := b.pool.Exec(ctx, `GRANT SELECT ON public.keap_contacts TO anon`)
	require.NoError(t, err)
	f := b.check(t, url, supabasetest.AnonKey)["anon reads public.keap_contacts"]
	require.Equal(t, exposure.OK, f.Status, f.Detail)
	require.Contains(t, f.Detail, "0 of 1 rows")

	// Without row level security the contact is readable by any browser.
	_, err = b.pool.Exec(ctx, `ALTER TABLE public.keap_contacts DISABLE ROW LEVEL SECURITY`)
	require.NoError(t, err)
	got := b.check(t, url, supabasetest.AnonKey)
	require.Equal(t, exposure.Fail, got["anon reads public.keap_contacts"].Status)
	require.Equal(t, exposure.OK, got["anon reads public.keap_objects"].Status)
	require.True(t, exposure.Failed(mapValues(got)))
}

func TestExposedKeapsyncSchemaIsCaught(t *testing.T) {
	t.Parallel()
	b := setup(t)
	_, err := b.pool.Exec(context.Background(), `GRANT USAGE ON SCHEMA keapsync TO service_role; GRANT SELECT ON keapsync.oauth_tokens TO service_role`)
	require.NoError(t, err)
	url := supabasetest.New(t, b.pool, supabasetest.Options{Exposed: []string{"public", "keapsync"}})
	got := b.check(t, url, supabasetest.AnonKey)
	require.Equal(t, exposure.Fail, got["service_role reaches keapsync.oauth_tokens"].Status)
	// anon has no privilege there even when the schema is served.
	require.Equal(t, exposure.OK, got["anon reaches keapsync.oauth_tokens"].Status)
	require.Contains(t, got["anon reaches keapsync.oauth_tokens"].Detail, "permission denied")
}

func TestDifferentDatabasesAreCaught(t *testing.T) {
	t.Parallel()
	b := setup(t)
	// SUPABASE_URL's project never ran keapsync migrate.
	other := pgtest.Pool(t, pgtest.NewEmpty(t))
	pgtest.SupabaseRoles(t, other)
	got := b.check(t, supabasetest.New(t, other, supabasetest.Options{}), "")
	f := got["service_role sees public.keap_contacts"]
	require.Equal(t, exposure.Fail, f.Status)
	require.Contains(t, f.Detail, "different databases")
	require.Equal(t, exposure.Skip, got["anon reads public.keap_*"].Status)

	// Same schema, other rows: the counts disagree.
	migrated := setup(t)
	_, err := migrated.pool.Exec(context.Background(), `INSERT INTO public.keap_contacts (account_id, keap_id) VALUES ('acme', 2)`)
	require.NoError(t, err)
	f = b.check(t, supabasetest.New(t, migrated.pool, supabasetest.Options{}), "")["service_role sees public.keap_contacts"]
	require.Equal(t, exposure.Warn, f.Status)
	require.Contains(t, f.Detail, "2 rows through the API, 1 in DATABASE_URL")
}

func TestInconclusiveAnswers(t *testing.T) {
	t.Parallel()
	b := setup(t)
	url := supabasetest.New(t, b.pool, supabasetest.Options{})
	got := b.check(t, url, "not-this-projects-key")
	require.Equal(t, exposure.Warn, got["anon reads public.keap_contacts"].Status)
	require.Contains(t, got["anon reads public.keap_contacts"].Detail, "Invalid API key")
	require.NotContains(t, got["anon reads public.keap_contacts"].Detail, "not-this-projects-key")

	// An empty table proves nothing about row level security.
	_, err := b.pool.Exec(context.Background(), `GRANT SELECT ON public.keap_objects TO anon`)
	require.NoError(t, err)
	f := b.check(t, url, supabasetest.AnonKey)["anon reads public.keap_objects"]
	require.Equal(t, exposure.Warn, f.Status)
	require.Contains(t, f.Detail, "empty")
}

func TestSilentAPITimesOut(t *testing.T) {
	t.Parallel()
	b := setup(t)
	release := make(chan struct{})
	silent := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(func() { close(release); silent.Close() })
	start := time.Now()
	fs, err := exposure.Check(context.Background(), exposure.Options{
		URL: silent.URL, ServiceKey: supabasetest.ServiceRoleKey, DB: b.pool, Store: b.st, Timeout: 100 * time.Millisecond,
	})
	require.NoError(t, err)
	require.Less(t, time.Since(start), 5*time.Second)
	require.Equal(t, exposure.Fail, fs[0].Status)
	require.Contains(t, fs[0].Detail, "no answer within 100ms")

	// A caller that gives up (Ctrl-C) gets its own error, not findings.
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start = time.Now()
	_, err = exposure.Check(ctx, exposure.Options{
		URL: silent.URL, ServiceKey: supabasetest.ServiceRoleKey, DB: b.pool, Store: b.st, Timeout: time.Minute,
	})
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.Less(t, time.Since(start), 5*time.Second)
}

func TestKeysEchoedByTheServerAreRedacted(t *testing.T) {
	t.Parallel()
	b := setup(t)
	echo := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusUnauthorized)
		_, _ = w.Write([]byte(`{"code":"PGRST301","message":"bad JWT: ` + r.Header.Get("Authorization") + `"}`))
	}))
	t.Cleanup(echo.Close)
	got := b.check(t, echo.URL, supabasetest.AnonKey)
	require.Len(t, got, 6)
	for name, f := range got {
		require.NotContains(t, f.Detail, supabasetest.ServiceRoleKey, name)
		require.NotContains(t, f.Detail, supabasetest.AnonKey, name)
	}
	require.Contains(t, got["service_role sees public.keap_contacts"].Detail, "bad JWT: Bearer [redacted]")
}

func TestOptionsAreRequired(t *testing.T) {
	t.Parallel()
	_, err := exposure.Check(context.Background(), exposure.Options{URL: "http://127.0.0.1:1"})
	require.ErrorContains(t, err, "SUPABASE_SERVICE_ROLE_KEY")
}

func mapValues(m map[string]exposure.Finding) []exposure.Finding {
	var out []exposure.Finding
	for _, f := range m {
		out = append(out, f)
	}
	return out
}
