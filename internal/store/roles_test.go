package store_test

import (
	"context"
	"errors"
	"log/slog"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/require"

	"github.com/keapsync/keapsync/internal/pgtest"
	"github.com/keapsync/keapsync/internal/store"
)

// TestSupabaseRolesSeeNothing recreates Supabase's roles and its default
// grants on schema public (which hand every new table to anon and
// authenticated), migrates, and proves anon and authenticated can read none
// of keapsync's tables nor the synced public.keap_* tables, while
// service_role can.
func TestSupabaseRolesSeeNothing(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := pgtest.Pool(t, pgtest.NewEmpty(t))
	pgtest.SupabaseRoles(t, pool)
	_, err := store.Migrate(ctx, pool, slog.New(slog.DiscardHandler))
	require.NoError(t, err)

	rows, err := pool.Query(ctx, `SELECT format('%I.%I', table_schema, table_name) FROM information_schema.tables
		WHERE table_schema = 'keapsync' OR (table_schema = 'public' AND table_name LIKE 'keap\_%') ORDER BY 1`)
	require.NoError(t, err)
	tables, err := pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	require.Contains(t, tables, "keapsync.oauth_tokens")
	require.Contains(t, tables, "public.keap_contacts")
	require.Contains(t, tables, "keapsync.account_health")

	_, err = pool.Exec(ctx, `INSERT INTO public.keap_contacts (account_id, keap_id, given_name) VALUES ('acme', 1, 'Ada')`)
	require.NoError(t, err)

	asRole := func(role, sql string) error {
		return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, "SET LOCAL ROLE "+role); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, sql)
			return err
		})
	}
	for _, role := range []string{"anon", "authenticated"} {
		for _, tbl := range tables {
			err := asRole(role, "SELECT * FROM "+tbl+" LIMIT 1")
			var pgErr *pgconn.PgError
			require.True(t, errors.As(err, &pgErr), "%s must not read %s", role, tbl)
			require.Equal(t, "42501", pgErr.Code, "%s on %s: %v", role, tbl, err)
		}
	}
	require.NoError(t, asRole("service_role", "SELECT * FROM public.keap_contacts"))
	require.NoError(t, asRole("service_role", "INSERT INTO public.keap_objects (account_id, object_type, object_id, event_key, data) VALUES ('a','note',1,'note.add','{}')"))

	var rls bool
	require.NoError(t, pool.QueryRow(ctx, "SELECT relrowsecurity FROM pg_class WHERE oid = 'public.keap_contacts'::regclass").Scan(&rls))
	require.True(t, rls)
}
