package main

import (
	"context"
	"net/http"
	"os"
	"strings"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/keapsync/keapsync/internal/store"
)

// runBaselineServer is the baselines' process (bench re-executes itself
// with -baseline-server), so that, like keapsync serve, it runs apart from
// the load generator. One bare handler, no router, no middleware:
//
//	/bare         writes the same JSON bytes keapsync serve answers
//	/select/{id}  runs keapsync's single-row token SELECT through pgxpool
//	              (same default pool size as serve) and writes its bytes
func runBaselineServer(addr, dbURL, bodyFile string) error {
	body, err := os.ReadFile(bodyFile)
	if err != nil {
		return err
	}
	pool, err := pgxpool.New(context.Background(), dbURL)
	if err != nil {
		return err
	}
	defer pool.Close()
	st, err := store.New()
	if err != nil {
		return err
	}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch p := r.URL.Path; {
		case p == "/bare":
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write(body)
		case strings.HasPrefix(p, "/select/"):
			row, err := st.GetToken(r.Context(), pool, strings.TrimPrefix(p, "/select/"))
			if err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
			w.Header().Set("Content-Type", "application/octet-stream")
			_, _ = w.Write(row.AccessTokenCT)
		case p == "/readyz":
			w.WriteHeader(http.StatusOK)
		default:
			http.NotFound(w, r)
		}
	})
	return http.ListenAndServe(addr, h)
}
