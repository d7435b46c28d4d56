package app

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/keapsync/keapsync/internal/config"
	"github.com/keapsync/keapsync/internal/exposure"
	"github.com/keapsync/keapsync/internal/hooks"
	"github.com/keapsync/keapsync/internal/httpapi"
	"github.com/keapsync/keapsync/internal/keap"
	"github.com/keapsync/keapsync/internal/keapfake"
	"github.com/keapsync/keapsync/internal/store"
)

func runServe(ctx context.Context, env Env, args []string) error {
	fs := flags(env, "serve", "serve\n\nRuns the HTTP API on LISTEN_ADDR and the River workers until interrupted.")
	if _, done, err := parse(fs, args, 0, 0); done || err != nil {
		return err
	}
	c, err := newCore(ctx, env, true)
	if err != nil {
		return err
	}
	defer c.pool.Close()
	if err := store.CheckCurrent(ctx, c.pool); err != nil {
		return err
	}
	srv := &http.Server{
		Handler: httpapi.NewServer(httpapi.Deps{
			Pool: c.pool, Store: c.store, Tokens: c.tokens, Hooks: c.hooks, Inbox: c.inbox, Logger: c.log, APIKey: c.cfg.InternalAPIKey,
			OAuthSuccessURL: c.cfg.OAuthSuccessURL, OAuthRateLimit: c.cfg.OAuthRateLimit,
			Gatherer: c.reg, Registerer: c.reg,
		}),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      60 * time.Second,
		IdleTimeout:       2 * time.Minute,
		// "OPTIONS *" reaches the router (and gets its JSON 404) instead of
		// net/http's empty 200.
		DisableGeneralOptionsHandler: true,
	}
	ln, err := net.Listen("tcp", c.cfg.ListenAddr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", c.cfg.ListenAddr, err)
	}
	if c.cfg.JobWorkers > 0 {
		if err := c.river.Start(ctx); err != nil {
			ln.Close()
			return fmt.Errorf("start river: %w", err)
		}
	}
	c.log.InfoContext(ctx, "keapsync serving", "addr", ln.Addr().String(), "pooler_mode", c.cfg.PoolerMode)
	if env.Ready != nil {
		env.Ready(ln.Addr().String())
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	if c.cfg.PprofAddr != "" {
		go servePprof(c.cfg.PprofAddr, c.log)
	}

	select {
	case err := <-errc:
		if !errors.Is(err, http.ErrServerClosed) {
			if c.cfg.JobWorkers > 0 {
				_ = c.river.Stop(context.Background())
			}
			return err
		}
	case <-ctx.Done():
	}
	// Stop taking requests, then let jobs finish, then close the pool.
	c.log.Info("shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		c.log.Warn("http shutdown", "error", err)
	}
	if c.cfg.JobWorkers == 0 {
		return nil
	}
	rctx, rcancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer rcancel()
	if err := c.river.Stop(rctx); err != nil {
		c.log.Warn("river stop timed out; cancelling jobs", "error", err)
		_ = c.river.StopAndCancel(context.Background())
	}
	return nil
}

// databaseURL is DATABASE_URL, for the commands that need nothing else.
func databaseURL(env Env) (string, error) {
	url := strings.TrimSpace(env.Getenv("DATABASE_URL"))
	if url == "" {
		return "", errors.New("config: DATABASE_URL is required (every variable is listed in .env.example)")
	}
	return url, nil
}

// openStore is openPool plus the store, for the commands that need only the
// database, not Keap's settings.
func openStore(ctx context.Context, url, poolerMode string) (*pgxpool.Pool, *store.Store, error) {
	pool, err := openPool(ctx, url, poolerMode)
	if err != nil {
		return nil, nil, err
	}
	st, err := store.New()
	if err != nil {
		pool.Close()
		return nil, nil, err
	}
	return pool, st, nil
}

func isMissingDatabase(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "3D000" // invalid_catalog_name
}

// servePprof exposes the profiler on its own address, never on the API's.
func servePprof(addr string, log *slog.Logger) {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	log.Info("pprof listening", "addr", addr)
	if err := (&http.Server{Addr: addr, Handler: mux, ReadHeaderTimeout: 10 * time.Second}).ListenAndServe(); err != nil {
		log.Warn("pprof stopped", "error", err)
	}
}

func runMigrate(ctx context.Context, env Env, args []string) error {
	fs := flags(env, "migrate", "migrate\n\nCreates schema keapsync and applies River's and keapsync's migrations.\nSafe to run twice, and from two places at once. Needs DATABASE_URL\n(a session-mode connection, not a transaction pooler).")
	if _, done, err := parse(fs, args, 0, 0); done || err != nil {
		return err
	}
	url, err := databaseURL(env)
	if err != nil {
		return err
	}
	pool, err := openPool(ctx, url, "session")
	if isMissingDatabase(err) {
		// Local convenience: create the database named in DATABASE_URL.
		name, cerr := store.CreateDatabase(ctx, url)
		if cerr != nil {
			return fmt.Errorf("%w (and creating it failed: %v)", err, cerr)
		}
		fmt.Fprintf(env.Stdout, "created database %s\n", name)
		pool, err = openPool(ctx, url, "session")
	}
	if err != nil {
		return err
	}
	defer pool.Close()
	applied, err := store.Migrate(ctx, pool, newLogger(env.Stderr, "warn", "text"))
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	if len(applied) == 0 {
		fmt.Fprintln(env.Stdout, "migrations: already up to date")
	}
	for _, a := range applied {
		fmt.Fprintln(env.Stdout, "applied", a)
	}
	return nil
}

func runFakeKeap(ctx context.Context, env Env, args []string) error {
	fs := flags(env, "fake-keap", "fake-keap [--addr 127.0.0.1:9090]\n\nRuns the fake Keap: OAuth authorize and token endpoints, REST contacts and hooks.\nPoint KEAP_AUTH_URL at http://ADDR/app/oauth/authorize, KEAP_TOKEN_URL at\nhttp://ADDR/token and KEAP_API_URL at http://ADDR/crm/rest.")
	addr := fs.String("addr", "127.0.0.1:9090", "listen address")
	clientID := fs.String("client-id", "", "accepted client id (default KEAP_CLIENT_ID or fake-client-id)")
	clientSecret := fs.String("client-secret", "", "accepted client secret (default KEAP_CLIENT_SECRET or fake-client-secret)")
	tenant := fs.String("tenant", "ab123", "Keap app name put in the token scope")
	accessTTL := fs.Duration("access-ttl", 24*time.Hour, "access token lifetime")
	if _, done, err := parse(fs, args, 0, 0); done || err != nil {
		return err
	}
	id, secret := *clientID, *clientSecret
	if id == "" {
		id = env.Getenv("KEAP_CLIENT_ID")
	}
	if secret == "" {
		secret = env.Getenv("KEAP_CLIENT_SECRET")
	}
	fake := keapfake.New(keapfake.Options{ClientID: id, ClientSecret: secret, Tenant: *tenant, AccessTTL: *accessTTL})
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", *addr, err)
	}
	fmt.Fprintf(env.Stdout, "fake keap listening on http://%s\n", ln.Addr())
	if env.Ready != nil {
		env.Ready(ln.Addr().String())
	}
	srv := &http.Server{Handler: fake, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

func runAccounts(ctx context.Context, env Env, args []string) error {
	fs := flags(env, "accounts", "accounts [--json] [ACCOUNT_ID]\n\nWithout an id: every account with its health, next refresh and last error.\nWith an id: that account and its recent audit events.")
	asJSON := fs.Bool("json", false, "print JSON instead of a table")
	pos, done, err := parse(fs, args, 0, 1)
	if done || err != nil {
		return err
	}
	if len(pos) == 1 && !httpapi.ValidAccountID(pos[0]) {
		return fmt.Errorf("%w: account id must match [A-Za-z0-9._-]{1,128}", ErrUsage)
	}
	url, err := databaseURL(env)
	if err != nil {
		return err
	}
	pool, st, err := openStore(ctx, url, env.Getenv("DB_POOLER_MODE"))
	if err != nil {
		return err
	}
	defer pool.Close()
	if len(pos) == 0 {
		list, err := st.ListHealth(ctx, pool)
		if err != nil {
			return err
		}
		if *asJSON {
			return json.NewEncoder(env.Stdout).Encode(list)
		}
		tw := tabwriter.NewWriter(env.Stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ACCOUNT\tHEALTH\tSTATUS\tACCESS EXPIRES\tREFRESH TOKEN AGE\tNEXT REFRESH\tLAST ERROR")
		for _, h := range list {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", h.AccountID, h.Health, h.Status,
				fmtTime(h.AccessExpiresAt), fmtAge(h.RefreshIssuedAt), fmtTime(h.NextRefreshAt), deref(h.LastError))
		}
		return tw.Flush()
	}
	id := pos[0]
	h, err := st.GetHealth(ctx, pool, id)
	if errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("account %q not found", id)
	}
	if err != nil {
		return err
	}
	events, err := st.ListEvents(ctx, pool, id, 20)
	if err != nil {
		return err
	}
	enc := json.NewEncoder(env.Stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(map[string]any{"account": h, "events": events})
}

func fmtTime(t *time.Time) string {
	if t == nil {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

func fmtAge(t *time.Time) string {
	if t == nil {
		return "-"
	}
	return time.Since(*t).Round(time.Minute).String()
}

func deref(s *string) string {
	if s == nil {
		return "-"
	}
	return *s
}

func runToken(ctx context.Context, env Env, args []string) error {
	fs := flags(env, "token", "token get|refresh ACCOUNT_ID\n\nget prints a valid access token (refreshing first if it expires within REFRESH_SKEW);\nrefresh forces one refresh now. Both take the same lock as the service.")
	pos, done, err := parse(fs, args, 2, 2)
	if done || err != nil {
		return err
	}
	if pos[0] != "get" && pos[0] != "refresh" {
		fs.Usage()
		return fmt.Errorf("%w: want token get|refresh ACCOUNT_ID", ErrUsage)
	}
	if !httpapi.ValidAccountID(pos[1]) {
		return fmt.Errorf("%w: account id must match [A-Za-z0-9._-]{1,128}", ErrUsage)
	}
	c, err := newCore(ctx, env, false)
	if err != nil {
		return err
	}
	defer c.pool.Close()
	get := c.tokens.Get
	if pos[0] == "refresh" {
		get = c.tokens.Refresh
	}
	tok, err := get(ctx, pos[1])
	if err != nil {
		return err
	}
	fmt.Fprintln(env.Stdout, tok.AccessToken.Reveal())
	fmt.Fprintf(env.Stderr, "expires_at %s version %d\n", tok.ExpiresAt.UTC().Format(time.RFC3339), tok.Version)
	return nil
}

func runHooks(ctx context.Context, env Env, args []string) error {
	fs := flags(env, "hooks", "hooks subscribe|list|unsubscribe ACCOUNT_ID [--events contact.add,contact.edit,contact.delete]\n\nManages the account's Keap REST hooks. subscribe creates one hook per event\n(Keap verifies PUBLIC_BASE_URL/webhooks/keap/... while it does, so keapsync serve\nmust be reachable there); list shows them with Keap's current status;\nunsubscribe deletes them at Keap.")
	events := fs.String("events", strings.Join(hooks.DefaultEvents, ","), "comma-separated event keys for subscribe")
	rest, done, err := parse(fs, args, 2, 2)
	if done || err != nil {
		return err
	}
	if rest[0] != "subscribe" && rest[0] != "list" && rest[0] != "unsubscribe" {
		fs.Usage()
		return fmt.Errorf("%w: want hooks subscribe|list|unsubscribe ACCOUNT_ID", ErrUsage)
	}
	verb, id := rest[0], rest[1]
	if !httpapi.ValidAccountID(id) {
		return fmt.Errorf("%w: account id must match [A-Za-z0-9._-]{1,128}", ErrUsage)
	}
	var eventList []string
	for _, e := range strings.Split(*events, ",") {
		if e = strings.TrimSpace(e); e != "" {
			if !keap.EventKeyPattern.MatchString(e) {
				return fmt.Errorf("%w: %q is not an event key such as contact.add", ErrUsage, e)
			}
			eventList = append(eventList, e)
		}
	}
	if len(eventList) == 0 {
		return fmt.Errorf("%w: --events names no event key", ErrUsage)
	}
	c, err := newCore(ctx, env, false)
	if err != nil {
		return err
	}
	defer c.pool.Close()
	var subs []store.HookSubscription
	switch verb {
	case "subscribe":
		subs, err = c.hooks.Subscribe(ctx, id, eventList)
	case "list":
		subs, err = c.hooks.List(ctx, id)
	case "unsubscribe":
		var n int
		n, err = c.hooks.Unsubscribe(ctx, id)
		if err == nil {
			fmt.Fprintf(env.Stdout, "removed %d hook(s)\n", n)
		}
		return err
	}
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(env.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "KEY\tEVENT\tSTATUS\tLAST VERIFY")
	for _, s := range subs {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", s.KeapKey, s.EventKey, s.Status, deref(s.LastVerifyResult))
	}
	return tw.Flush()
}

// ErrExposed is runSupabase's error when a check failed; the findings say which.
var ErrExposed = errors.New("supabase check failed")

func runSupabase(ctx context.Context, env Env, args []string) error {
	fs := flags(env, "supabase", "supabase check [--json]\n\nAsks the Supabase project at SUPABASE_URL, through its REST API, what its keys can\nread: the service role must see public.keap_* as DATABASE_URL holds them (proof\nthat both name one database), the anon key (SUPABASE_ANON_KEY, optional) must\nread none of it, and no key may reach schema keapsync. Exits non-zero on any fail.")
	asJSON := fs.Bool("json", false, "print JSON instead of a table")
	pos, done, err := parse(fs, args, 1, 1)
	if done || err != nil {
		return err
	}
	if pos[0] != "check" {
		fs.Usage()
		return fmt.Errorf("%w: want supabase check", ErrUsage)
	}
	cfg, err := config.LoadSupabase(env.Getenv)
	if err != nil {
		return err
	}
	pool, st, err := openStore(ctx, cfg.DatabaseURL, cfg.PoolerMode)
	if err != nil {
		return err
	}
	defer pool.Close()
	findings, err := exposure.Check(ctx, exposure.Options{URL: cfg.URL, ServiceKey: cfg.ServiceKey, AnonKey: cfg.AnonKey, DB: pool, Store: st})
	if err != nil {
		return err
	}
	if *asJSON {
		err = json.NewEncoder(env.Stdout).Encode(findings)
	} else {
		tw := tabwriter.NewWriter(env.Stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "STATUS\tCHECK\tDETAIL")
		for _, f := range findings {
			fmt.Fprintf(tw, "%s\t%s\t%s\n", strings.ToUpper(string(f.Status)), f.Check, f.Detail)
		}
		err = tw.Flush()
	}
	if err == nil && exposure.Failed(findings) {
		return ErrExposed
	}
	return err
}
