// Package app wires keapsync together and runs its subcommands. cmd/keapsync
// only calls Run; tests call it too, with their own environment and writers.
package app

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/riverqueue/river"

	"github.com/keapsync/keapsync/internal/config"
	"github.com/keapsync/keapsync/internal/hooks"
	"github.com/keapsync/keapsync/internal/inbox"
	"github.com/keapsync/keapsync/internal/jobs"
	"github.com/keapsync/keapsync/internal/keap"
	"github.com/keapsync/keapsync/internal/notify"
	"github.com/keapsync/keapsync/internal/store"
	"github.com/keapsync/keapsync/internal/tokens"
)

// Env is the outside world a command sees.
type Env struct {
	Args   []string // without the program name
	Getenv func(string) string
	Stdout io.Writer
	Stderr io.Writer
	// Ready, when set, receives serve's bound address once it listens.
	Ready func(addr string)
}

const usage = `keapsync keeps Keap OAuth connections alive for a Keap <-> Supabase sync.

Usage: keapsync <command> [flags]

Commands:
  serve       run the HTTP API and the River workers
  migrate     apply database migrations (keapsync's and River's)
  fake-keap   run the fake Keap (OAuth, REST, hooks) for local development
  accounts    list accounts and their health, or show one
  token       print or force-refresh an account's access token
  hooks       subscribe, list or unsubscribe an account's Keap REST hooks
  supabase    check through Supabase's API that synced data is not exposed

Run "keapsync <command> --help" for a command's flags.
Configuration comes from the environment: see .env.example.
`

// ErrUsage marks a command line that could not be understood.
var ErrUsage = errors.New("usage")

// Run executes one subcommand.
func Run(ctx context.Context, env Env) error {
	if len(env.Args) == 0 || env.Args[0] == "-h" || env.Args[0] == "--help" || env.Args[0] == "help" {
		fmt.Fprint(env.Stdout, usage)
		if len(env.Args) == 0 {
			return ErrUsage
		}
		return nil
	}
	cmd, args := env.Args[0], env.Args[1:]
	switch cmd {
	case "serve":
		return runServe(ctx, env, args)
	case "migrate":
		return runMigrate(ctx, env, args)
	case "fake-keap":
		return runFakeKeap(ctx, env, args)
	case "accounts":
		return runAccounts(ctx, env, args)
	case "token":
		return runToken(ctx, env, args)
	case "hooks":
		return runHooks(ctx, env, args)
	case "supabase":
		return runSupabase(ctx, env, args)
	}
	fmt.Fprint(env.Stderr, usage)
	return fmt.Errorf("%w: unknown command %q", ErrUsage, cmd)
}

// flags builds a FlagSet whose --help prints to stdout and exits cleanly.
func flags(env Env, name, synopsis string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(env.Stdout)
	fs.Usage = func() {
		fmt.Fprintf(env.Stdout, "Usage: keapsync %s\n\n", synopsis)
		fs.PrintDefaults()
	}
	return fs
}

// parse reads flags wherever they stand among the arguments ("hooks
// subscribe acme --events x" and "hooks --events x subscribe acme" alike)
// and checks the number of positional arguments left. done is true when
// --help was asked for, anywhere: help never runs the command.
func parse(fs *flag.FlagSet, args []string, minArgs, maxArgs int) (pos []string, done bool, err error) {
	for {
		err := fs.Parse(args)
		if errors.Is(err, flag.ErrHelp) {
			return nil, true, nil
		}
		if err != nil {
			return nil, false, fmt.Errorf("%w: %v", ErrUsage, err)
		}
		if fs.NArg() == 0 {
			break
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
	if len(pos) < minArgs || len(pos) > maxArgs {
		fs.Usage()
		return nil, false, fmt.Errorf("%w: wrong number of arguments", ErrUsage)
	}
	return pos, false, nil
}

func newLogger(w io.Writer, level, format string) *slog.Logger {
	var lv slog.Level
	_ = lv.UnmarshalText([]byte(strings.ToUpper(level)))
	opts := &slog.HandlerOptions{Level: lv}
	if format == "text" {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}

// openPool connects with settings fit for the pooler mode: behind a
// transaction pooler prepared statements do not survive, so pgx uses the
// simple protocol.
func openPool(ctx context.Context, url, poolerMode string) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, errors.New("DATABASE_URL is not a valid Postgres URL")
	}
	if poolerMode == "transaction" {
		cfg.ConnConfig.DefaultQueryExecMode = pgx.QueryExecModeSimpleProtocol
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connect to database: %w", err)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		if isMissingDatabase(err) {
			return nil, fmt.Errorf("connect to database: %w (keapsync migrate creates it)", err)
		}
		return nil, fmt.Errorf("connect to database: %w", err)
	}
	return pool, nil
}

// core is everything that needs the full configuration.
type core struct {
	cfg    config.Config
	log    *slog.Logger
	pool   *pgxpool.Pool
	store  *store.Store
	river  *river.Client[pgx.Tx]
	tokens *tokens.Coordinator
	inbox  *inbox.Inbox
	hooks  *hooks.Manager
	reg    *prometheus.Registry
}

func newCore(ctx context.Context, env Env, periodic bool) (*core, error) {
	cfg, err := config.Load(env.Getenv)
	if err != nil {
		return nil, err
	}
	log := newLogger(env.Stderr, cfg.LogLevel, cfg.LogFormat)
	pool, err := openPool(ctx, cfg.DatabaseURL, cfg.PoolerMode)
	if err != nil {
		return nil, err
	}
	st, err := store.New()
	if err != nil {
		pool.Close()
		return nil, err
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(prometheus.NewGoCollector(), prometheus.NewProcessCollector(prometheus.ProcessCollectorOpts{}),
		tokens.NewHealthCollector(pool, st, log))
	notifier := newNotifier(cfg)
	deps := &jobs.Deps{Pool: pool, Store: st, Logger: log, Now: time.Now, Skew: cfg.RefreshSkew, Every: cfg.RefreshEvery, Notifier: notifier}
	rc, err := jobs.NewClient(deps, jobs.Options{PollOnly: cfg.PoolerMode == "transaction", Periodic: periodic, MaxWorkers: cfg.JobWorkers})
	if err != nil {
		pool.Close()
		return nil, fmt.Errorf("river client: %w", err)
	}
	kc := keap.New(keap.Options{
		ClientID: cfg.KeapClientID, ClientSecret: cfg.KeapClientSecret, RedirectURI: cfg.KeapRedirectURI,
		AuthURL: cfg.KeapAuthURL, TokenURL: cfg.KeapTokenURL, APIURL: cfg.KeapAPIURL,
		RatePerSecond: cfg.KeapRatePerSecond, RatePerMinute: cfg.KeapRatePerMinute,
	})
	coord := tokens.New(tokens.Options{
		Pool: pool, Store: st, Keap: kc, Keyring: cfg.Keyring, Scheduler: jobs.Scheduler{Client: rc, Notifier: notifier},
		Logger: log, Metrics: tokens.NewMetrics(reg),
		RefreshEvery: cfg.RefreshEvery, Skew: cfg.RefreshSkew, CacheTTL: cfg.TokenCacheTTL,
	})
	deps.Tokens = coord
	deps.Inbox = &inbox.Inbox{Pool: pool, Store: st, Enqueuer: jobs.Scheduler{Client: rc}, Tokens: coord, Keap: kc, Logger: log}
	deps.Hooks = &hooks.Manager{Pool: pool, Store: st, Tokens: coord, Keap: kc, Keyring: cfg.Keyring, PublicBaseURL: cfg.PublicBaseURL, Logger: log}
	return &core{cfg: cfg, log: log, pool: pool, store: st, river: rc, tokens: coord, inbox: deps.Inbox, hooks: deps.Hooks, reg: reg}, nil
}

// newNotifier turns the validated notification settings into targets.
func newNotifier(cfg config.Config) *notify.Notifier {
	n := &notify.Notifier{}
	if cfg.EventsWebhookURL != "" {
		n.Targets = append(n.Targets, notify.Target{Name: notify.TargetWebhook, URL: cfg.EventsWebhookURL})
	}
	if cfg.SupabaseEventsFunction != "" {
		n.Targets = append(n.Targets, notify.Target{Name: notify.TargetEdgeFunction,
			URL:    strings.TrimRight(cfg.SupabaseURL, "/") + "/functions/v1/" + cfg.SupabaseEventsFunction,
			Bearer: cfg.SupabaseKey})
	}
	if s := cfg.EventsWebhookSecret.Reveal(); s != "" {
		n.Secret, _ = notify.ParseSecret(s) // config.Load checked it
	}
	return n
}
