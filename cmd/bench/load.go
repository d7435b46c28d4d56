package main

import (
	"context"
	"errors"
	"io"
	"net/http"
	"sort"
	"sync"
	"sync/atomic"
	"time"
)

// stats summarises one load run. Latencies are kept whole and sorted, so
// percentiles are exact rather than estimated.
type stats struct {
	N, Errors int
	Elapsed   time.Duration
	lat       []time.Duration
}

// perSecond counts successful operations only.
func (s stats) perSecond() float64 { return float64(s.N-s.Errors) / s.Elapsed.Seconds() }

func (s stats) pct(p float64) time.Duration {
	if len(s.lat) == 0 {
		return 0
	}
	i := int(float64(len(s.lat)-1) * p / 100)
	return s.lat[i]
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func newClient(conns int) *http.Client {
	return &http.Client{
		Timeout: 30 * time.Second,
		Transport: &http.Transport{
			MaxIdleConns:        conns,
			MaxIdleConnsPerHost: conns,
			MaxConnsPerHost:     conns,
			DisableCompression:  true,
		},
	}
}

// load runs `conns` workers for `dur`, each sending the request mk returns
// and reading the whole answer; a status other than 200 is an error.
func load(conns int, dur time.Duration, mk func(worker, seq int) *http.Request) stats {
	client := newClient(conns)
	defer client.CloseIdleConnections()
	return loop(context.Background(), conns, dur, func(w, seq int) error {
		resp, err := client.Do(mk(w, seq))
		if err != nil {
			return err
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return errStatus
		}
		return nil
	})
}

var errStatus = errors.New("status other than 200")

// loop runs `workers` goroutines calling op for `dur`, timing every call.
func loop(ctx context.Context, workers int, dur time.Duration, op func(worker, seq int) error) stats {
	var mu sync.Mutex
	var all []time.Duration
	var errs atomic.Int64
	deadline := time.Now().Add(dur)
	start := time.Now()
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			lat := make([]time.Duration, 0, 4096)
			for seq := 0; time.Now().Before(deadline) && ctx.Err() == nil; seq++ {
				t0 := time.Now()
				if err := op(w, seq); err != nil {
					errs.Add(1)
				}
				lat = append(lat, time.Since(t0))
			}
			mu.Lock()
			all = append(all, lat...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	return finish(all, int(errs.Load()), time.Since(start))
}

func finish(all []time.Duration, errs int, elapsed time.Duration) stats {
	sort.Slice(all, func(i, j int) bool { return all[i] < all[j] })
	return stats{N: len(all), Errors: errs, Elapsed: elapsed, lat: all}
}
