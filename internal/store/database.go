package store

import (
	"context"
	"fmt"
	"net/url"

	"github.com/jackc/pgx/v5"
)

// CreateDatabase creates the database that dbURL names, connecting to the
// same server's postgres database to do it. It returns the name.
func CreateDatabase(ctx context.Context, dbURL string) (string, error) {
	return createDatabase(ctx, dbURL, false)
}

// FreshDatabase drops database name on serverURL's server (open connections
// and all) and creates it empty, for the demo and the benchmarks. It
// returns the new database's URL.
func FreshDatabase(ctx context.Context, serverURL, name string) (string, error) {
	u, err := url.Parse(serverURL)
	if err != nil {
		return "", err
	}
	u.Path = "/" + name
	if _, err := createDatabase(ctx, u.String(), true); err != nil {
		return "", fmt.Errorf("create database %s: %w", name, err)
	}
	return u.String(), nil
}

func createDatabase(ctx context.Context, dbURL string, recreate bool) (string, error) {
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
