// Command bench measures keapsync's speed, scale and memory against
// baselines measured in the same run (make bench). It creates its own
// database, runs the fake Keap in-process and real `keapsync serve`
// processes on loopback, prints a markdown table and writes
// bench/latest.json. It exits 0 even when a target fails: the table says
// FAIL. Absolute figures drift on shared machines; targets are ratios.
package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/keapsync/keapsync/internal/jobs"
	"github.com/keapsync/keapsync/internal/keap"
	"github.com/keapsync/keapsync/internal/keapfake"
	"github.com/keapsync/keapsync/internal/seal"
	"github.com/keapsync/keapsync/internal/store"
	"github.com/keapsync/keapsync/internal/tokens"
)

const (
	clientID     = "bench-client"
	clientSecret = "bench-client-secret"
	accounts     = 1000
)

// result is one row of the table.
type result struct {
	ID       string             `json:"id"`
	Scenario string             `json:"scenario"`
	Figures  map[string]float64 `json:"figures"`
	Baseline map[string]float64 `json:"baseline,omitempty"`
	Target   string             `json:"target"`
	Pass     bool               `json:"pass"`
	Summary  string             `json:"summary"`
	Note     string             `json:"note,omitempty"`
}

type bench struct {
	bin     string
	dbURL   string
	pool    *pgxpool.Pool
	store   *store.Store
	fake    *keapfake.Server
	fakeURL string
	keys    string
	apiKey  string
	ring    *seal.Keyring
	coord   *tokens.Coordinator
	self    string
	tmp     string
	dur     time.Duration
	results []result
}

func main() {
	if len(os.Args) == 5 && os.Args[1] == "-baseline-server" {
		if err := runBaselineServer(os.Args[2], os.Args[3], os.Args[4]); err != nil {
			fmt.Fprintln(os.Stderr, "baseline server:", err)
			os.Exit(1)
		}
		return
	}
	bin := flag.String("bin", "bin/keapsync", "keapsync binary")
	adminURL := flag.String("admin-url", "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable", "Postgres server to create the bench database on")
	out := flag.String("out", "bench/latest.json", "where to write the results")
	dur := flag.Duration("duration", 4*time.Second, "measured time per throughput run")
	only := flag.String("only", "", "comma-separated scenario ids to run (default all)")
	flag.Parse()

	start := time.Now()
	b := &bench{bin: *bin, dur: *dur}
	if err := b.setup(*adminURL); err != nil {
		fmt.Fprintln(os.Stderr, "bench setup failed:", err)
		os.Exit(1)
	}
	defer b.pool.Close()
	defer os.RemoveAll(b.tmp)
	for _, sc := range []struct {
		id  string
		run func() result
	}{
		{"B1", b.b1}, {"B2", b.b2}, {"B3", b.b3}, {"B4", b.b4}, {"B5", b.b5}, {"B7", b.b7}, {"M1", b.m1}, {"B6", b.b6},
	} {
		if *only != "" && !strings.Contains(","+*only+",", ","+sc.id+",") {
			continue
		}
		fmt.Fprintf(os.Stderr, "bench: %s ...\n", sc.id)
		r := sc.run()
		fmt.Fprintf(os.Stderr, "bench: %s %s: %s\n", sc.id, verdict(r.Pass), r.Summary)
		b.results = append(b.results, r)
	}
	table := b.table()
	fmt.Print(table)
	fmt.Printf("\nwhole run: %s\n", time.Since(start).Round(time.Second))
	if err := b.write(*out, time.Since(start)); err != nil {
		fmt.Fprintln(os.Stderr, "write results:", err)
		os.Exit(1)
	}
}

func verdict(pass bool) string {
	if pass {
		return "PASS"
	}
	return "FAIL"
}

func (b *bench) setup(adminURL string) error {
	ctx := context.Background()
	var err error
	b.tmp, err = os.MkdirTemp("", "keapsync-bench")
	if err != nil {
		return err
	}
	if b.self, err = os.Executable(); err != nil {
		return err
	}
	b.dbURL, err = store.FreshDatabase(ctx, adminURL, "keapsync_bench")
	if err != nil {
		return err
	}
	if b.pool, err = pgxpool.New(ctx, b.dbURL); err != nil {
		return err
	}
	if _, err := store.Migrate(ctx, b.pool, slog.New(slog.DiscardHandler)); err != nil {
		return err
	}
	if b.store, err = store.New(); err != nil {
		return err
	}
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	b.keys = "bench:" + base64.StdEncoding.EncodeToString(key)
	if b.ring, err = seal.ParseKeyring(b.keys); err != nil {
		return err
	}
	b.apiKey = base64.RawURLEncoding.EncodeToString(key[:18])

	b.fake = keapfake.New(keapfake.Options{ClientID: clientID, ClientSecret: clientSecret})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	go func() { _ = http.Serve(ln, b.fake) }()
	b.fakeURL = "http://" + ln.Addr().String()

	// The coordinator of this process only seeds accounts, as the OAuth
	// callback would; all measured work happens in keapsync serve processes.
	deps := &jobs.Deps{Pool: b.pool, Store: b.store, Logger: slog.New(slog.DiscardHandler), Now: time.Now, Skew: 5 * time.Minute, Every: 21 * time.Hour}
	rc, err := jobs.NewClient(deps, jobs.Options{})
	if err != nil {
		return err
	}
	b.coord = tokens.New(tokens.Options{Pool: b.pool, Store: b.store, Keyring: b.ring, Scheduler: jobs.Scheduler{Client: rc},
		Keap: keap.New(keap.Options{ClientID: clientID, ClientSecret: clientSecret, TokenURL: b.fakeURL + "/token"}), Logger: deps.Logger})
	fmt.Fprintf(os.Stderr, "bench: connecting %d accounts\n", accounts)
	var wg sync.WaitGroup
	errs := make(chan error, accounts)
	sem := make(chan struct{}, 8)
	for i := range accounts {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if err := b.connect(acct(i)); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	return <-errs
}

func acct(i int) string { return fmt.Sprintf("acct-%04d", i) }

func (b *bench) connect(id string) error {
	p := b.fake.Mint()
	return b.coord.Connect(context.Background(), id, keap.Token{
		AccessToken: seal.Secret(p.AccessToken), RefreshToken: seal.Secret(p.RefreshToken),
		ExpiresAt: time.Now().Add(time.Duration(p.ExpiresIn) * time.Second), Scope: p.Scope,
	})
}

// serve starts a keapsync serve process with extra environment.
func (b *bench) serve(name string, extra ...string) (*proc, error) {
	addr := freeAddr()
	env := append(os.Environ(),
		"DATABASE_URL="+b.dbURL,
		"KEAP_CLIENT_ID="+clientID, "KEAP_CLIENT_SECRET="+clientSecret,
		"KEAP_REDIRECT_URI=http://"+addr+"/oauth/callback",
		"KEAP_AUTH_URL="+b.fakeURL+"/app/oauth/authorize", "KEAP_TOKEN_URL="+b.fakeURL+"/token", "KEAP_API_URL="+b.fakeURL+"/crm/rest",
		"TOKEN_ENCRYPTION_KEYS="+b.keys, "INTERNAL_API_KEY="+b.apiKey,
		"LISTEN_ADDR="+addr, "PUBLIC_BASE_URL=http://"+addr,
		"LOG_LEVEL=warn",
		// Every request of the load generator comes from 127.0.0.1: the
		// per-address limit would measure itself. It stays in the path.
		"OAUTH_RATE_LIMIT=1000000000",
	)
	if v := os.Getenv("BENCH_PPROF_ADDR"); v != "" {
		env = append(env, "PPROF_ADDR="+v)
	}
	env = append(env, extra...)
	return startProc(name, b.bin, []string{"serve"}, env, addr, "/readyz")
}

// baseline starts the baseline server process.
func (b *bench) baseline(body []byte) (*proc, error) {
	file := filepath.Join(b.tmp, "body.json")
	if err := os.WriteFile(file, body, 0o600); err != nil {
		return nil, err
	}
	addr := freeAddr()
	return startProc("baseline", b.self, []string{"-baseline-server", addr, b.dbURL, file}, os.Environ(), addr, "/readyz")
}

func (b *bench) get(base, path string) *http.Request {
	req, _ := http.NewRequest(http.MethodGet, "http://"+base+path, nil)
	req.Header.Set("Authorization", "Bearer "+b.apiKey)
	return req
}

// tokenBody fetches one real answer of GET /oauth/token, so the bare
// baseline writes the same bytes.
func (b *bench) tokenBody(addr string) ([]byte, error) {
	resp, err := http.DefaultClient.Do(b.get(addr, "/oauth/token/"+acct(0)))
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err == nil && resp.StatusCode != 200 {
		err = fmt.Errorf("token GET answered %d: %s", resp.StatusCode, body)
	}
	return body, err
}

func (b *bench) table() string {
	var sb strings.Builder
	sb.WriteString("| id | scenario | figures | target | result |\n| --- | --- | --- | --- | --- |\n")
	for _, r := range b.results {
		res := verdict(r.Pass)
		if r.Note != "" {
			res += " (" + r.Note + ")"
		}
		fmt.Fprintf(&sb, "| %s | %s | %s | %s | %s |\n", r.ID, r.Scenario, r.Summary, r.Target, res)
	}
	return sb.String()
}

func (b *bench) write(path string, took time.Duration) error {
	var pg string
	_ = b.pool.QueryRow(context.Background(), "SHOW server_version").Scan(&pg)
	doc := map[string]any{
		"generated_at": time.Now().UTC().Format(time.RFC3339),
		"took_seconds": int(took.Seconds()),
		"machine": map[string]any{
			"cores": runtime.NumCPU(), "go": runtime.Version(), "postgres": pg, "os": runtime.GOOS + "/" + runtime.GOARCH,
		},
		"results": b.results,
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	buf, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(buf, '\n'), 0o644)
}
