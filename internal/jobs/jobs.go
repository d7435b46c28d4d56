// Package jobs holds keapsync's River workers (refresh_token, the periodic
// refresh_sweeper, process_webhook_event and the periodic hook_health) and
// builds the River client that runs them.
// Jobs are inserted in the same transaction as the data they act on.
package jobs

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivertype"

	"github.com/keapsync/keapsync/internal/hooks"
	"github.com/keapsync/keapsync/internal/inbox"
	"github.com/keapsync/keapsync/internal/keap"
	"github.com/keapsync/keapsync/internal/notify"
	"github.com/keapsync/keapsync/internal/store"
	"github.com/keapsync/keapsync/internal/tokens"
)

// SweepEvery is how often the refresh_sweeper runs.
const SweepEvery = 10 * time.Minute

// IdleRefreshAge is the refresh-token age past which an account is refreshed
// even when idle: Keap kills a refresh token unused for 45 days.
const IdleRefreshAge = 30 * 24 * time.Hour

// RefreshTokenArgs is the proactive refresh of one account at one token
// version. Unique by args: a running job can insert its successor (next
// version) while a twin of itself is skipped.
type RefreshTokenArgs struct {
	AccountID string `json:"account_id"`
	Version   int64  `json:"version"`
}

// Kind implements river.JobArgs.
func (RefreshTokenArgs) Kind() string { return "refresh_token" }

// InsertOpts implements river.JobArgsWithInsertOpts.
func (RefreshTokenArgs) InsertOpts() river.InsertOpts {
	return river.InsertOpts{UniqueOpts: river.UniqueOpts{ByArgs: true}, MaxAttempts: 25}
}

// RefreshSweeperArgs is the periodic repair of missing or late schedules.
type RefreshSweeperArgs struct{}

// Kind implements river.JobArgs.
func (RefreshSweeperArgs) Kind() string { return "refresh_sweeper" }

// Deps are what the workers use. Tokens may be set after the client is
// built, because the coordinator schedules through the client; it must be
// set before Start.
type Deps struct {
	Pool   *pgxpool.Pool
	Store  *store.Store
	Tokens *tokens.Coordinator
	Inbox  *inbox.Inbox
	Hooks  *hooks.Manager
	// Notifier sends account state changes; nil or no targets sends nothing.
	Notifier *notify.Notifier
	Logger   *slog.Logger
	Now      func() time.Time
	Skew     time.Duration
	Every    time.Duration
}

// Options configure the River client.
type Options struct {
	PollOnly   bool // DB_POOLER_MODE=transaction: LISTEN needs a session
	MaxWorkers int  // default 10 (0 also means 10: a client that must not work jobs is simply not started)
	Periodic   bool // run the sweeper (serve does, CLI commands do not)
}

// NewClient builds the River client in schema keapsync with keapsync's workers.
func NewClient(d *Deps, o Options) (*river.Client[pgx.Tx], error) {
	if o.MaxWorkers <= 0 {
		o.MaxWorkers = 10
	}
	workers := river.NewWorkers()
	river.AddWorker(workers, &refreshWorker{d: d})
	river.AddWorker(workers, &sweepWorker{d: d})
	river.AddWorker(workers, &webhookWorker{d: d})
	river.AddWorker(workers, &hookHealthWorker{d: d})
	river.AddWorker(workers, &deliverWorker{d: d})
	cfg := &river.Config{
		// Jobs usually arrive by LISTEN/NOTIFY, but River rate-limits its
		// insert notifications, so a job inserted just after another can
		// wait for the next poll: 200 ms instead of the 1 s default keeps a
		// webhook's path to its table row well under a second.
		FetchPollInterval: 200 * time.Millisecond,
		FetchCooldown:     50 * time.Millisecond,
		Schema:            store.Schema,
		Logger:            d.Logger,
		PollOnly:          o.PollOnly,
		Queues:            map[string]river.QueueConfig{river.QueueDefault: {MaxWorkers: o.MaxWorkers}},
		Workers:           workers,
	}
	if o.Periodic {
		cfg.PeriodicJobs = []*river.PeriodicJob{river.NewPeriodicJob(
			river.PeriodicInterval(SweepEvery),
			func() (river.JobArgs, *river.InsertOpts) { return RefreshSweeperArgs{}, nil },
			&river.PeriodicJobOpts{ID: "refresh_sweeper", RunOnStart: true},
		), river.NewPeriodicJob(
			river.PeriodicInterval(HookHealthEvery),
			func() (river.JobArgs, *river.InsertOpts) { return HookHealthArgs{}, nil },
			&river.PeriodicJobOpts{ID: "hook_health"},
		)}
	}
	return river.NewClient(riverpgxv5.New(d.Pool), cfg)
}

// Scheduler implements tokens.Scheduler with a River client.
type Scheduler struct {
	Client   *river.Client[pgx.Tx]
	Notifier *notify.Notifier // its targets get a deliver_event job per state change
}

// ScheduleRefresh inserts refresh_token{accountID, version} due at `at`, in
// tx; an existing twin makes it a no-op.
func (s Scheduler) ScheduleRefresh(ctx context.Context, tx pgx.Tx, accountID string, version int64, at time.Time) error {
	_, err := s.Client.InsertTx(ctx, tx, RefreshTokenArgs{AccountID: accountID, Version: version}, &river.InsertOpts{ScheduledAt: at})
	return err
}

// ensureDue makes refresh_token{accountID, version} due no later than at:
// inserted if missing, pulled forward if it waits for a later time.
func (s Scheduler) ensureDue(ctx context.Context, tx pgx.Tx, accountID string, version int64, at time.Time) (bool, error) {
	res, err := s.Client.InsertTx(ctx, tx, RefreshTokenArgs{AccountID: accountID, Version: version}, &river.InsertOpts{ScheduledAt: at})
	if err != nil {
		return false, err
	}
	if !res.UniqueSkippedAsDuplicate {
		return true, nil
	}
	j := res.Job
	if j.State == rivertype.JobStateScheduled && j.ScheduledAt.After(at) || j.State == rivertype.JobStateDiscarded || j.State == rivertype.JobStateCancelled || j.State == rivertype.JobStateCompleted {
		if _, err := s.Client.JobRetryTx(ctx, tx, j.ID); err != nil {
			return false, err
		}
		return true, nil
	}
	return false, nil
}

type refreshWorker struct {
	river.WorkerDefaults[RefreshTokenArgs]
	d *Deps
}

// Work refreshes the account if it is still at the job's version.
func (w *refreshWorker) Work(ctx context.Context, job *river.Job[RefreshTokenArgs]) error {
	err := w.d.Tokens.RefreshDue(ctx, job.Args.AccountID, job.Args.Version)
	if err == nil {
		return nil
	}
	var te *tokens.Error
	if errors.As(err, &te) && te.Code == tokens.CodeKeapUnavailable {
		if ke, ok := keap.AsError(err); ok && ke.Kind == keap.Permanent {
			// Keap refused our client credentials: retrying this job cannot
			// help; the sweeper reschedules once the account is due again.
			return river.JobCancel(err)
		}
		if ke, ok := keap.AsError(err); ok && ke.Kind == keap.Throttled {
			return river.JobSnooze(te.RetryAfter)
		}
	}
	return err // River retries with backoff
}

// Timeout bounds one refresh job.
func (w *refreshWorker) Timeout(*river.Job[RefreshTokenArgs]) time.Duration { return time.Minute }

type sweepWorker struct {
	river.WorkerDefaults[RefreshSweeperArgs]
	d *Deps
}

// Work gives every account that needs one a due refresh_token job:
// no pending job, an access token inside the skew, or a refresh token older
// than IdleRefreshAge. It also purges expired authorization states.
func (w *sweepWorker) Work(ctx context.Context, job *river.Job[RefreshSweeperArgs]) error {
	client := river.ClientFromContext[pgx.Tx](ctx)
	n, err := Sweep(ctx, w.d, Scheduler{Client: client})
	if err != nil {
		return err
	}
	if _, err := w.d.Tokens.PurgeStates(ctx); err != nil {
		return err
	}
	w.d.Logger.InfoContext(ctx, "refresh sweep done", "scheduled", n)
	return nil
}

// Sweep is the sweeper's scheduling pass; it returns how many jobs it made due.
func Sweep(ctx context.Context, d *Deps, s Scheduler) (int, error) {
	now := d.Now()
	cands, err := d.Store.SweepCandidates(ctx, d.Pool, now.Add(d.Skew), now.Add(-IdleRefreshAge))
	if err != nil {
		return 0, err
	}
	n := 0
	for _, c := range cands {
		due := now
		if c.Unscheduled && c.AccessExpiresAt.After(now.Add(d.Skew)) && c.RefreshIssuedAt.After(now.Add(-IdleRefreshAge)) {
			// Only the schedule is missing: put it back where it belongs.
			due = c.RefreshIssuedAt.Add(d.Every)
			if limit := c.AccessExpiresAt.Add(-d.Skew); due.After(limit) {
				due = limit
			}
			due = later(due, now)
		}
		var made bool
		err := pgx.BeginFunc(ctx, d.Pool, func(tx pgx.Tx) error {
			var err error
			made, err = s.ensureDue(ctx, tx, c.AccountID, c.Version, due)
			return err
		})
		if err != nil {
			return n, err
		}
		if made {
			n++
			d.Logger.InfoContext(ctx, "sweeper scheduled refresh", "account_id", c.AccountID, "version", c.Version, "due", due)
		}
	}
	return n, nil
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
