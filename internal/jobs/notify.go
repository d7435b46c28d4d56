package jobs

import (
	"context"
	"errors"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"

	"github.com/keapsync/keapsync/internal/notify"
	"github.com/keapsync/keapsync/internal/store"
)

// DeliverEventArgs sends one account state change (a keapsync.token_events
// row) to one notification target.
type DeliverEventArgs struct {
	EventID int64  `json:"event_id"`
	Target  string `json:"target"`
}

// Kind implements river.JobArgs.
func (DeliverEventArgs) Kind() string { return "deliver_event" }

// InsertOpts implements river.JobArgsWithInsertOpts: River's backoff
// (attempt^4 seconds) over 15 attempts keeps trying for about two days.
func (DeliverEventArgs) InsertOpts() river.InsertOpts { return river.InsertOpts{MaxAttempts: 15} }

// DeliverEvent implements tokens.Scheduler: one deliver_event job per
// configured target, in tx.
func (s Scheduler) DeliverEvent(ctx context.Context, tx pgx.Tx, eventID int64) error {
	if s.Notifier == nil || len(s.Notifier.Targets) == 0 {
		return nil
	}
	params := make([]river.InsertManyParams, len(s.Notifier.Targets))
	for i, t := range s.Notifier.Targets {
		params[i] = river.InsertManyParams{Args: DeliverEventArgs{EventID: eventID, Target: t.Name}}
	}
	return s.insertMany(ctx, tx, params)
}

type deliverWorker struct {
	river.WorkerDefaults[DeliverEventArgs]
	d *Deps
}

// Work posts the event; River retries whatever the receiver did not take.
func (w *deliverWorker) Work(ctx context.Context, job *river.Job[DeliverEventArgs]) error {
	n := w.d.Notifier
	t, ok := n.Target(job.Args.Target)
	if !ok {
		// The process that changed the state had this target; this one
		// does not (a rolling deploy, a replica set up differently). Retry,
		// so a process that has it delivers, rather than drop the message.
		err := errors.New("notification target " + job.Args.Target + " is not configured in this process")
		w.d.Logger.WarnContext(ctx, "event delivery waits for a process with its target", "event_id", job.Args.EventID,
			"target", job.Args.Target, "attempt", job.Attempt)
		return err
	}
	ev, err := w.d.Store.GetEvent(ctx, w.d.Pool, job.Args.EventID)
	if errors.Is(err, store.ErrNotFound) {
		return river.JobCancel(err)
	}
	if err != nil {
		return err
	}
	err = n.Send(ctx, t, ev)
	var ne *notify.Error
	switch {
	case err == nil:
		w.d.Logger.InfoContext(ctx, "event delivered", "account_id", ev.AccountID, "event", ev.Kind, "target", t.Name)
		return nil
	case errors.As(err, &ne) && ne.Permanent:
		w.d.Logger.WarnContext(ctx, "event refused for good", "account_id", ev.AccountID, "event", ev.Kind, "target", t.Name, "error", err)
		return river.JobCancel(err)
	}
	w.d.Logger.WarnContext(ctx, "event delivery failed; river retries", "account_id", ev.AccountID, "event", ev.Kind,
		"target", t.Name, "attempt", job.Attempt, "error", err)
	return err
}

// Timeout bounds one delivery.
func (w *deliverWorker) Timeout(*river.Job[DeliverEventArgs]) time.Duration { return 30 * time.Second }
