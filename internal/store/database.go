package store

import (
	"context"

	"github.com/jackc/pgx/v5"
)

// CreateDatabase creates the database that dbURL names, connecting to the
// same server's postgres database to do it; with recreate, an existing one
// is dropped first (open connections and all). It returns the name.
func CreateDatabase(ctx context.Context, dbURL string, recreate bool) (string, error) {
	cfg, err := pgx.ParseConfig(dbURL)
	if err != nil {
		return "", err
	}
	name := cfg.Database
	cfg.Database = "postgres"
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return "", err
	}
	defer conn.Close(ctx)
	if recreate {
		if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)"); err != nil {
			return "", err
		}
	}
	_, err = conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize())
	return name, err
}
