package jobs

import (
	"context"
	"errors"
	"log/slog"
	"testing"

	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"
	"github.com/stretchr/testify/require"

	"github.com/keapsync/keapsync/internal/notify"
)

// A process without the job's target must leave the job to be retried (by
// a process that has it), never cancel it: that would lose the message.
func TestDeliveryWaitsForAProcessWithItsTarget(t *testing.T) {
	t.Parallel()
	for _, n := range []*notify.Notifier{nil, {Targets: []notify.Target{{Name: notify.TargetEdgeFunction, URL: "http://127.0.0.1:1/f"}}}} {
		w := &deliverWorker{d: &Deps{Notifier: n, Logger: slog.New(slog.DiscardHandler)}}
		err := w.Work(context.Background(), &river.Job[DeliverEventArgs]{JobRow: &rivertype.JobRow{Attempt: 1},
			Args: DeliverEventArgs{EventID: 1, Target: notify.TargetWebhook}})
		require.ErrorContains(t, err, "not configured in this process")
		var cancel *rivertype.JobCancelError
		require.False(t, errors.As(err, &cancel), "must not cancel")
	}
}
