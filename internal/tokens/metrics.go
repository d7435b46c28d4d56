package tokens

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the coordinator's Prometheus series.
type Metrics struct {
	refreshes *prometheus.CounterVec
	cache     *prometheus.CounterVec
}

// NewMetrics creates the series and registers them with reg when not nil.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		refreshes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "keapsync_token_refreshes_total",
			Help: "Refresh attempts by outcome: ok, shared (another worker refreshed), transient, throttled, rejected, reauth_required.",
		}, []string{"outcome"}),
		cache: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "keapsync_token_cache_requests_total",
			Help: "Access token cache lookups by result (hit or miss); hit ratio = hit / (hit + miss).",
		}, []string{"result"}),
	}
	if reg != nil {
		reg.MustRegister(m.refreshes, m.cache)
	}
	return m
}
