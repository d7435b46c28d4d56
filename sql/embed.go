// Package sql holds keapsync's SQL: numbered migrations applied by
// `keapsync migrate`, the named queries the store runs, and ops views.
// Keeping SQL in .sql files means a reviewer reads it as SQL and Go never
// assembles a query from input.
package sql

import (
	"embed"
	"fmt"
	"io/fs"
	"strings"
)

// Migrations holds sql/migrations/NNN_name.sql, applied in name order.
//
//go:embed migrations/*.sql
var Migrations embed.FS

//go:embed queries/*.sql
var queryFiles embed.FS

// Queries parses every file under sql/queries into a map from query name to
// text. A query starts at a line "-- name: Name" and runs to the next one.
// Duplicate or empty names are an error: they would make one query silently
// shadow another.
func Queries() (map[string]string, error) {
	out := map[string]string{}
	err := fs.WalkDir(queryFiles, "queries", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := queryFiles.ReadFile(path)
		if err != nil {
			return err
		}
		return parseQueries(path, string(b), out)
	})
	return out, err
}

func parseQueries(path, text string, out map[string]string) error {
	var name string
	var body strings.Builder
	flush := func() error {
		if name == "" {
			return nil
		}
		q := strings.TrimSpace(body.String())
		if q == "" {
			return fmt.Errorf("%s: query %s is empty", path, name)
		}
		if _, dup := out[name]; dup {
			return fmt.Errorf("%s: query %s defined twice", path, name)
		}
		out[name] = q
		return nil
	}
	for _, line := range strings.Split(text, "\n") {
		if rest, ok := strings.CutPrefix(strings.TrimSpace(line), "-- name:"); ok {
			if err := flush(); err != nil {
				return err
			}
			name = strings.TrimSpace(rest)
			body.Reset()
			continue
		}
		if name != "" {
			body.WriteString(line)
			body.WriteByte('\n')
		}
	}
	return flush()
}
