// Package pgtest gives each test its own real Postgres database, cloned from
// a template that holds every migration, and drops it when the test ends.
// The server comes from TEST_DATABASE_URL, else DATABASE_URL, else
// postgres://postgres@127.0.0.1:5432/postgres (make test sets it up).
package pgtest

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io/fs"
	"log/slog"
	"net/url"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/keapsync/keapsync/internal/store"
	keapsql "github.com/keapsync/keapsync/sql"
)

// AdminURL is the server tests create their databases on: TEST_DATABASE_URL
// as given, else the server of DATABASE_URL (through its postgres
// database), else the local default.
func AdminURL() string {
	if v := os.Getenv("TEST_DATABASE_URL"); v != "" {
		return v
	}
	if v := os.Getenv("DATABASE_URL"); v != "" {
		return withDatabase(v, "postgres")
	}
	return "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"
}

var (
	tmplOnce sync.Once
	tmplName string
	tmplErr  error
)

// New creates a fresh migrated database and returns its URL; it is dropped
// (with any open connections) when the test ends.
func New(t testing.TB) string {
	t.Helper()
	tmplOnce.Do(func() { tmplName, tmplErr = ensureTemplate(context.Background()) })
	if tmplErr != nil {
		t.Fatalf("pgtest: template database: %v", tmplErr)
	}
	return create(t, tmplName)
}

// NewEmpty creates a database with no migrations applied.
func NewEmpty(t testing.TB) string {
	t.Helper()
	return create(t, "template1")
}

func create(t testing.TB, template string) string {
	t.Helper()
	ctx := context.Background()
	name := "keapsync_test_" + randomHex(6)
	admin := connect(t, ctx, AdminURL())
	defer admin.Close(ctx)
	// CREATE DATABASE ... TEMPLATE fails while anyone else is connected to
	// the template; only other packages creating their own copies are, briefly.
	var err error
	for try := 0; try < 50; try++ {
		if _, err = admin.Exec(ctx, fmt.Sprintf("CREATE DATABASE %s TEMPLATE %s", name, template)); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("pgtest: create database: %v", err)
	}
	dropAtEnd(t, name)
	return withDatabase(AdminURL(), name)
}

// NewMissing returns the URL of a database that does not exist yet, for
// code that creates it; it is dropped at the end of the test if it exists.
func NewMissing(t testing.TB) string {
	t.Helper()
	name := "keapsync_test_" + randomHex(6)
	dropAtEnd(t, name)
	return withDatabase(AdminURL(), name)
}

func dropAtEnd(t testing.TB, name string) {
	ctx := context.Background()
	t.Cleanup(func() {
		c, err := pgx.Connect(ctx, AdminURL())
		if err != nil {
			t.Errorf("pgtest: drop %s: %v", name, err)
			return
		}
		defer c.Close(ctx)
		if _, err := c.Exec(ctx, fmt.Sprintf("DROP DATABASE IF EXISTS %s WITH (FORCE)", name)); err != nil {
			t.Errorf("pgtest: drop %s: %v", name, err)
		}
	})
}

// NewPool is New plus a pool on the database, closed at the end of the test.
func NewPool(t testing.TB) *pgxpool.Pool {
	t.Helper()
	return Pool(t, New(t))
}

// Pool opens another pool on an existing test database (a second "replica").
func Pool(t testing.TB, dbURL string) *pgxpool.Pool {
	t.Helper()
	pool, err := pgxpool.New(context.Background(), dbURL)
	if err != nil {
		t.Fatalf("pgtest: pool: %v", err)
	}
	t.Cleanup(pool.Close)
	return pool
}

func connect(t testing.TB, ctx context.Context, u string) *pgx.Conn {
	t.Helper()
	c, err := pgx.Connect(ctx, u)
	if err != nil {
		t.Fatalf("pgtest: connect to %s: %v (is Postgres running? make test starts one)", redactURL(u), err)
	}
	return c
}

// ensureTemplate builds, once per schema version, a database holding every
// migration. Its name carries a hash of the SQL, so a changed migration gets
// a new template instead of a stale one.
func ensureTemplate(ctx context.Context) (string, error) {
	h := sha256.New()
	_ = fs.WalkDir(keapsql.Migrations, ".", func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			b, _ := keapsql.Migrations.ReadFile(p)
			h.Write([]byte(p))
			h.Write(b)
		}
		return nil
	})
	name := "keapsync_tmpl_" + hex.EncodeToString(h.Sum(nil))[:12]
	admin, err := pgx.Connect(ctx, AdminURL())
	if err != nil {
		return "", fmt.Errorf("connect to %s: %w (is Postgres running? make test starts one)", redactURL(AdminURL()), err)
	}
	defer admin.Close(ctx)
	// Test binaries of several packages run at once: one builds, others wait.
	if _, err := admin.Exec(ctx, "SELECT pg_advisory_lock(727274)"); err != nil {
		return "", err
	}
	defer admin.Exec(ctx, "SELECT pg_advisory_unlock(727274)")
	var exists bool
	if err := admin.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)", name).Scan(&exists); err != nil {
		return "", err
	}
	if exists {
		return name, nil
	}
	building := name + "_build"
	_, _ = admin.Exec(ctx, fmt.Sprintf("DROP DATABASE IF EXISTS %s WITH (FORCE)", building))
	if _, err := admin.Exec(ctx, fmt.Sprintf("CREATE DATABASE %s", building)); err != nil {
		return "", err
	}
	pool, err := pgxpool.New(ctx, withDatabase(AdminURL(), building))
	if err != nil {
		return "", err
	}
	_, err = store.Migrate(ctx, pool, slog.New(slog.DiscardHandler))
	pool.Close()
	if err != nil {
		return "", fmt.Errorf("migrate template: %w", err)
	}
	// Renamed only once complete, so a crash never leaves a half-built template.
	if _, err := admin.Exec(ctx, fmt.Sprintf("ALTER DATABASE %s RENAME TO %s", building, name)); err != nil {
		return "", err
	}
	// Templates of older migrations are of no further use; one still being
	// copied from (another checkout's tests) refuses to go, which is fine.
	rows, err := admin.Query(ctx, "SELECT datname FROM pg_database WHERE datname LIKE 'keapsync\\_tmpl\\_%' AND datname <> $1", name)
	if err != nil {
		return "", err
	}
	old, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return "", err
	}
	for _, db := range old {
		_, _ = admin.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{db}.Sanitize())
	}
	return name, nil
}

func withDatabase(raw, db string) string {
	u, err := url.Parse(raw)
	if err != nil {
		panic("pgtest: bad database URL")
	}
	u.Path = "/" + db
	return u.String()
}

func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparseable URL)"
	}
	return u.Redacted()
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// SupabaseRoles gives the database behind pool what a Supabase project has
// before any migration: the roles anon, authenticated and service_role,
// service_role bypassing row level security, and Supabase's default grants
// that hand every new table in schema public to all three. Call it before
// migrating.
func SupabaseRoles(t testing.TB, pool *pgxpool.Pool) {
	t.Helper()
	ctx := context.Background()
	// Roles are cluster-wide: test binaries running at once take turns, and
	// each change is made only when missing, so no two write one catalog row.
	admin := connect(t, ctx, AdminURL())
	defer admin.Close(ctx)
	if _, err := admin.Exec(ctx, "SELECT pg_advisory_lock(727275)"); err != nil {
		t.Fatalf("pgtest: lock for roles: %v", err)
	}
	defer admin.Exec(ctx, "SELECT pg_advisory_unlock(727275)")
	_, err := admin.Exec(ctx, `DO $$ BEGIN
		IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'anon') THEN CREATE ROLE anon NOLOGIN; END IF;
		IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'authenticated') THEN CREATE ROLE authenticated NOLOGIN; END IF;
		IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'service_role') THEN CREATE ROLE service_role NOLOGIN BYPASSRLS; END IF;
		IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'service_role' AND rolbypassrls) THEN ALTER ROLE service_role BYPASSRLS; END IF;
	END $$`)
	if err != nil {
		t.Fatalf("pgtest: supabase roles: %v", err)
	}
	_, err = pool.Exec(ctx, `GRANT USAGE ON SCHEMA public TO anon, authenticated, service_role;
		ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL ON TABLES TO anon, authenticated, service_role;
		ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL ON SEQUENCES TO anon, authenticated, service_role`)
	if err != nil {
		t.Fatalf("pgtest: supabase grants: %v", err)
	}
}
