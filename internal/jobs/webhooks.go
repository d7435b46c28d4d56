package jobs

import (
	"context"
	"errors"
	"math/rand/v2"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"

	"github.com/keapsync/keapsync/internal/inbox"
)

// HookHealthEvery is how often the hook_health job runs.
const HookHealthEvery = 15 * time.Minute

// ProcessWebhookEventArgs processes one inbox row.
type ProcessWebhookEventArgs struct {
	EventID   int64  `json:"event_id"`
	AccountID string `json:"account_id"`
}

// Kind implements river.JobArgs.
func (ProcessWebhookEventArgs) Kind() string { return "process_webhook_event" }

// HookHealthArgs is the periodic check of every account's Keap hooks.
type HookHealthArgs struct{}

// Kind implements river.JobArgs.
func (HookHealthArgs) Kind() string { return "hook_health" }

// copyThreshold is the batch size from which COPY beats one INSERT: COPY
// costs an extra round trip, which dominates small deliveries.
const copyThreshold = 10

// EnqueueEvents implements inbox.Enqueuer: one job per inbox row, in tx.
// Large batches use River's COPY-based bulk insert (the jobs need no
// uniqueness: the inbox row is the dedup); in the B4 profile the INSERT path
// was a quarter of the receiver's CPU at 100 objects per delivery.
func (s Scheduler) EnqueueEvents(ctx context.Context, tx pgx.Tx, accountID string, eventIDs []int64) error {
	params := make([]river.InsertManyParams, len(eventIDs))
	for i, id := range eventIDs {
		params[i] = river.InsertManyParams{Args: ProcessWebhookEventArgs{EventID: id, AccountID: accountID}}
	}
	return s.insertMany(ctx, tx, params)
}

// insertMany inserts jobs that need no uniqueness in tx, by COPY from
// copyThreshold jobs on.
func (s Scheduler) insertMany(ctx context.Context, tx pgx.Tx, params []river.InsertManyParams) error {
	if len(params) < copyThreshold {
		_, err := s.Client.InsertManyTx(ctx, tx, params)
		return err
	}
	_, err := s.Client.InsertManyFastTx(ctx, tx, params)
	return err
}

type webhookWorker struct {
	river.WorkerDefaults[ProcessWebhookEventArgs]
	d *Deps
}

// Work processes the row; waits that are not failures (re-authorization
// pending, throttling, Keap down) snooze the job so the row stays pending
// without spending attempts.
func (w *webhookWorker) Work(ctx context.Context, job *river.Job[ProcessWebhookEventArgs]) error {
	err := w.d.Inbox.Process(ctx, job.Args.EventID)
	var rl *inbox.RetryLater
	if errors.As(err, &rl) {
		wait := rl.After
		if wait <= 0 {
			// No Retry-After: back off exponentially with jitter, capped.
			wait = min(time.Duration(1<<min(job.Attempt, 8))*time.Second, 5*time.Minute)
			wait += time.Duration(rand.Int64N(int64(wait)/2 + 1))
		}
		w.d.Logger.InfoContext(ctx, "webhook event waits", "account_id", job.Args.AccountID, "event_id", job.Args.EventID, "reason", rl.Reason, "retry_in", wait)
		return river.JobSnooze(wait)
	}
	if err != nil && job.Attempt >= job.MaxAttempts {
		// River discards the job now; say so on the row instead of leaving it pending.
		if ferr := w.d.Inbox.FailEvent(ctx, job.Args.EventID, "gave up after "+strconv.Itoa(job.Attempt)+" attempts: "+err.Error()); ferr != nil {
			w.d.Logger.ErrorContext(ctx, "could not mark webhook event failed", "event_id", job.Args.EventID, "error", ferr)
		}
	}
	return err
}

// Timeout bounds one event.
func (w *webhookWorker) Timeout(*river.Job[ProcessWebhookEventArgs]) time.Duration {
	return time.Minute
}

type hookHealthWorker struct {
	river.WorkerDefaults[HookHealthArgs]
	d *Deps
}

// Work re-verifies hooks Keap reports as not Verified.
func (w *hookHealthWorker) Work(ctx context.Context, job *river.Job[HookHealthArgs]) error {
	n, err := w.d.Hooks.CheckHealth(ctx)
	w.d.Logger.InfoContext(ctx, "hook health check done", "reverified", n)
	return err
}
