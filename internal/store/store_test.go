package store_test

import (
	"context"
	"log/slog"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/keapsync/keapsync/internal/pgtest"
	"github.com/keapsync/keapsync/internal/store"
)

func TestMigrateConcurrentAndIdempotent(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := pgtest.Pool(t, pgtest.NewEmpty(t))
	require.Error(t, store.CheckCurrent(ctx, pool), "an empty database is not current")

	var wg sync.WaitGroup
	results := make([][]string, 2)
	errs := make([]error, 2)
	for i := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i], errs[i] = store.Migrate(ctx, pool, slog.New(slog.DiscardHandler))
		}()
	}
	wg.Wait()
	require.NoError(t, errs[0])
	require.NoError(t, errs[1])
	// Exactly one run applied everything; the other found it done.
	require.True(t, (len(results[0]) == 0) != (len(results[1]) == 0), "one run applies, the other is a no-op: %v", results)
	require.NoError(t, store.CheckCurrent(ctx, pool))

	again, err := store.Migrate(ctx, pool, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	require.Empty(t, again)

	var public []string
	rows, err := pool.Query(ctx, `SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' ORDER BY 1`)
	require.NoError(t, err)
	for rows.Next() {
		var s string
		require.NoError(t, rows.Scan(&s))
		public = append(public, s)
	}
	require.Equal(t, []string{"keap_contacts", "keap_objects"}, public, "only synced Keap data lands in public")
	var n int
	require.NoError(t, pool.QueryRow(ctx, `SELECT count(*) FROM information_schema.tables
		WHERE table_schema = 'keapsync' AND table_name IN ('river_job', 'accounts', 'oauth_tokens')`).Scan(&n))
	require.Equal(t, 3, n)
}

func TestQueriesAllParse(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := pgtest.NewPool(t)
	st, err := store.New()
	require.NoError(t, err)
	// Every named query must at least prepare against the real schema.
	conn, err := pool.Acquire(ctx)
	require.NoError(t, err)
	defer conn.Release()
	for name, q := range store.QueriesForTest(st) {
		_, err := conn.Conn().Prepare(ctx, name, q)
		require.NoError(t, err, "query %s", name)
	}
}
