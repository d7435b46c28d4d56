package store_test

import (
	"context"
	"flag"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/keapsync/keapsync/internal/pgtest"
	"github.com/keapsync/keapsync/internal/store"
)

var update = flag.Bool("update", false, "rewrite supabase/migrations")

const supabaseDir = "../../supabase/migrations"

// TestSupabaseMigrationsInSync fails when supabase/migrations drifts from
// what keapsync migrate applies. Regenerate with make supabase/migrations.
func TestSupabaseMigrationsInSync(t *testing.T) {
	files, err := store.SupabaseMigrations()
	require.NoError(t, err)
	if *update {
		old, _ := filepath.Glob(filepath.Join(supabaseDir, "*.sql"))
		for _, f := range old {
			require.NoError(t, os.Remove(f))
		}
		for _, f := range files {
			require.NoError(t, os.WriteFile(filepath.Join(supabaseDir, f.Name), []byte(f.SQL), 0o644))
		}
	}
	onDisk, err := filepath.Glob(filepath.Join(supabaseDir, "*.sql"))
	require.NoError(t, err)
	require.Len(t, onDisk, len(files), "run make supabase/migrations")
	for _, f := range files {
		b, err := os.ReadFile(filepath.Join(supabaseDir, f.Name))
		require.NoError(t, err, "run make supabase/migrations")
		require.Equal(t, f.SQL, string(b), "%s drifted: run make supabase/migrations", f.Name)
	}
}

// TestSupabaseMigrationsMatchMigrate applies the generated files the way the
// Supabase CLI does (in name order, one transaction each) and checks that
// keapsync migrate then has nothing left to do.
func TestSupabaseMigrationsMatchMigrate(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := pgtest.Pool(t, pgtest.NewEmpty(t))
	files, err := store.SupabaseMigrations()
	require.NoError(t, err)
	sort.Slice(files, func(i, j int) bool { return files[i].Name < files[j].Name })
	for _, f := range files {
		require.NoError(t, pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
			_, err := tx.Exec(ctx, f.SQL)
			return err
		}), f.Name)
	}
	require.NoError(t, store.CheckCurrent(ctx, pool))
	applied, err := store.Migrate(ctx, pool, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	require.Empty(t, applied)
}
