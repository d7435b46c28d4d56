package tokens

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/keapsync/keapsync/internal/store"
)

// HealthClasses are the values of keapsync.account_health.health, each
// exported (with 0 when no account is in it) so that an alert such as
// keapsync_accounts{health="reauth_required"} > 0 never meets a missing series.
var HealthClasses = []string{
	"ok", "access_expired", "refresh_token_aging", "refresh_failing", "no_refresh_scheduled",
	"no_tokens", "reauth_required", "disconnected",
}

// HealthCollector exports keapsync_accounts{health}: how many accounts the
// ops view puts in each class, read from the database at most once per
// MaxAge however often Prometheus scrapes (every replica serves the same
// figure; the view joins River's jobs, so it is not free).
type HealthCollector struct {
	DB     store.DBTX
	Store  *store.Store
	Logger *slog.Logger
	MaxAge time.Duration // NewHealthCollector sets 15s; 0 reads on every scrape

	desc *prometheus.Desc
	mu   sync.Mutex
	at   time.Time
	last map[string]int64
}

// NewHealthCollector returns a collector reading through db.
func NewHealthCollector(db store.DBTX, st *store.Store, log *slog.Logger) *HealthCollector {
	return &HealthCollector{DB: db, Store: st, Logger: log, MaxAge: 15 * time.Second,
		desc: prometheus.NewDesc("keapsync_accounts", "Accounts by health class of the keapsync.account_health view.", []string{"health"}, nil)}
}

// Describe implements prometheus.Collector.
func (c *HealthCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

// Collect implements prometheus.Collector. When the database cannot answer,
// the series are left out of that scrape (the rest of /metrics still works)
// and the failure is logged.
func (c *HealthCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.last == nil || time.Since(c.at) >= c.MaxAge {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		counts, err := c.Store.HealthCounts(ctx, c.DB)
		cancel()
		if err != nil {
			c.Logger.Warn("account health metrics", "error", err)
			return
		}
		c.last, c.at = counts, time.Now()
	}
	seen := map[string]bool{}
	for _, h := range HealthClasses {
		seen[h] = true
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(c.last[h]), h)
	}
	for h, n := range c.last { // a class the view gained later still shows
		if !seen[h] {
			ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(n), h)
		}
	}
}
