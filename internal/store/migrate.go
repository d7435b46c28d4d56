package store

import (
	"context"
	"fmt"
	"io/fs"
	"log/slog"
	"path"
	"sort"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivermigrate"

	keapsql "github.com/keapsync/keapsync/sql"
)

// Schema is where every keapsync and River table lives.
const Schema = "keapsync"

// migrateLockKey serialises concurrent `keapsync migrate` runs. It is a fixed
// constant, outside the range tokens' per-account keys are likely to hit.
const migrateLockKey int64 = 0x6b65617073796e63 // "keapsync"

const schemaMigrationsTable = `CREATE TABLE IF NOT EXISTS keapsync.schema_migrations (
    version integer PRIMARY KEY,
    name text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now())`

type migration struct {
	version int
	name    string
	sql     string
}

func loadMigrations() ([]migration, error) {
	entries, err := fs.ReadDir(keapsql.Migrations, "migrations")
	if err != nil {
		return nil, err
	}
	var out []migration
	for _, e := range entries {
		num, _, ok := strings.Cut(e.Name(), "_")
		v, err := strconv.Atoi(num)
		if !ok || err != nil || !strings.HasSuffix(e.Name(), ".sql") {
			return nil, fmt.Errorf("migration %q: name must be NNN_name.sql", e.Name())
		}
		b, err := keapsql.Migrations.ReadFile(path.Join("migrations", e.Name()))
		if err != nil {
			return nil, err
		}
		out = append(out, migration{version: v, name: e.Name(), sql: string(b)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].version < out[j].version })
	for i := 1; i < len(out); i++ {
		if out[i].version == out[i-1].version {
			return nil, fmt.Errorf("migrations %s and %s share a version", out[i-1].name, out[i].name)
		}
	}
	return out, nil
}

// LatestVersion is the highest embedded migration version.
func LatestVersion() (int, error) {
	ms, err := loadMigrations()
	if err != nil || len(ms) == 0 {
		return 0, err
	}
	return ms[len(ms)-1].version, nil
}

// Migrate brings schema keapsync up to date: River's migrations first (our
// views read river_job), then ours, each of ours in one transaction with its
// bookkeeping row. A session advisory lock held on a dedicated connection
// makes concurrent runs wait for each other, so two at once are safe.
// River's migrations cannot share one transaction (one adds an enum value a
// later one uses), so River applies them itself, one transaction each.
// It returns the names of the migrations it applied.
func Migrate(ctx context.Context, pool *pgxpool.Pool, log *slog.Logger) ([]string, error) {
	ms, err := loadMigrations()
	if err != nil {
		return nil, err
	}
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return nil, err
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock($1)", migrateLockKey); err != nil {
		return nil, fmt.Errorf("lock: %w", err)
	}
	defer func() {
		_, _ = conn.Exec(context.WithoutCancel(ctx), "SELECT pg_advisory_unlock($1)", migrateLockKey)
	}()
	if _, err := conn.Exec(ctx, "CREATE SCHEMA IF NOT EXISTS "+Schema); err != nil {
		return nil, fmt.Errorf("create schema: %w", err)
	}
	migrator, err := rivermigrate.New(riverpgxv5.New(pool), &rivermigrate.Config{Schema: Schema, Logger: log})
	if err != nil {
		return nil, err
	}
	res, err := migrator.Migrate(ctx, rivermigrate.DirectionUp, nil)
	if err != nil {
		return nil, fmt.Errorf("river migrations: %w", err)
	}
	var applied []string
	for _, v := range res.Versions {
		applied = append(applied, fmt.Sprintf("river %03d %s", v.Version, v.Name))
	}
	if _, err := conn.Exec(ctx, schemaMigrationsTable); err != nil {
		return nil, err
	}
	for _, m := range ms {
		err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			tag, err := tx.Exec(ctx, `INSERT INTO keapsync.schema_migrations (version, name) VALUES ($1, $2)
				ON CONFLICT (version) DO NOTHING`, m.version, m.name)
			if err != nil || tag.RowsAffected() == 0 {
				return err
			}
			if _, err := tx.Exec(ctx, m.sql); err != nil {
				return fmt.Errorf("migration %s: %w", m.name, err)
			}
			applied = append(applied, m.name)
			return nil
		})
		if err != nil {
			return applied, err
		}
	}
	return applied, nil
}

// CheckCurrent returns an error unless every embedded migration (ours and
// River's) has been applied; /readyz uses it.
func CheckCurrent(ctx context.Context, db DBTX) error {
	latest, err := LatestVersion()
	if err != nil {
		return err
	}
	var have int
	err = db.QueryRow(ctx, "SELECT coalesce(max(version), 0) FROM keapsync.schema_migrations").Scan(&have)
	if err != nil {
		return fmt.Errorf("read schema version: %w", err)
	}
	if have < latest {
		return fmt.Errorf("schema at version %d, binary needs %d: run keapsync migrate", have, latest)
	}
	return nil
}
