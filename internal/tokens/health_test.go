package tokens_test

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/keapsync/keapsync/internal/keaptest"
	"github.com/keapsync/keapsync/internal/store"
	"github.com/keapsync/keapsync/internal/tokens"
)

func TestHealthCollectorCountsAccountsByHealth(t *testing.T) {
	t.Parallel()
	h := keaptest.New(t, keaptest.Options{})
	for _, id := range []string{"a", "b", "c"} {
		h.Connect(id)
	}
	h.SetStatus("b", store.StatusReauthRequired)
	h.SetStatus("c", store.StatusDisconnected)

	c := tokens.NewHealthCollector(h.Pool, h.Store, h.Log)
	reg := prometheus.NewRegistry()
	reg.MustRegister(c)
	gauges := func() map[string]float64 {
		t.Helper()
		families, err := reg.Gather()
		require.NoError(t, err)
		require.Len(t, families, 1)
		out := map[string]float64{}
		for _, m := range families[0].Metric {
			out[m.Label[0].GetValue()] = m.Gauge.GetValue()
		}
		return out
	}
	got := gauges()
	require.Len(t, got, len(tokens.HealthClasses), "every class is exported, empty ones as 0")
	require.Equal(t, 1.0, got["ok"])
	require.Equal(t, 1.0, got["reauth_required"])
	require.Equal(t, 1.0, got["disconnected"])
	require.Equal(t, 0.0, got["refresh_failing"])

	// Scrapes within MaxAge reuse the last reading...
	h.SetStatus("a", store.StatusReauthRequired)
	require.Equal(t, 1.0, gauges()["reauth_required"])
	// ...and read the view again once it has passed.
	c.MaxAge = 0
	got = gauges()
	require.Equal(t, 2.0, got["reauth_required"])
	require.Equal(t, 0.0, got["ok"])

	// A database that cannot answer leaves the series out, not the scrape.
	h.Pool.Close()
	families, err := reg.Gather()
	require.NoError(t, err)
	require.Empty(t, families)
}
