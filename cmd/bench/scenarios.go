package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/keapsync/keapsync/internal/hooks"
)

func failed(id, scenario, target string, err error) result {
	return result{ID: id, Scenario: scenario, Target: target, Summary: "did not run: " + err.Error(), Note: "error"}
}

// rss holds the peak RSS of the serve processes under load, for M1.
var rss struct{ b1, b4 float64 }

func (b *bench) tokenLoad(id, scenario, target string, cacheTTL string, baselinePath func(int) string, minRatio float64) result {
	srv, err := b.serve("serve "+id, "JOB_WORKERS=0", "TOKEN_CACHE_TTL="+cacheTTL)
	if err != nil {
		return failed(id, scenario, target, err)
	}
	defer srv.stop()
	body, err := b.tokenBody(srv.addr)
	if err != nil {
		return failed(id, scenario, target, err)
	}
	base, err := b.baseline(body)
	if err != nil {
		return failed(id, scenario, target, err)
	}
	defer base.stop()
	spread := func(w, s int) int { return (w*7919 + s*31) % accounts }
	ours := func(w, s int) *http.Request { return b.get(srv.addr, "/oauth/token/"+acct(spread(w, s))) }
	theirs := func(w, s int) *http.Request { return b.get(base.addr, baselinePath(spread(w, s))) }

	load(64, time.Second, theirs) // warm up
	bl := load(64, b.dur, theirs)
	load(64, time.Second, ours)
	ctx, stop := context.WithCancel(context.Background())
	peak := sampleRSS(ctx, srv)
	got := load(64, b.dur, ours)
	stop()
	if id == "B1" {
		rss.b1 = <-peak
	}
	ratio := got.perSecond() / bl.perSecond()
	p99x := float64(got.pct(99)) / float64(bl.pct(99))
	return result{
		ID: id, Scenario: scenario, Target: target,
		Figures:  map[string]float64{"req_per_s": got.perSecond(), "p50_ms": ms(got.pct(50)), "p99_ms": ms(got.pct(99)), "errors": float64(got.Errors), "throughput_ratio": ratio, "p99_ratio": p99x},
		Baseline: map[string]float64{"req_per_s": bl.perSecond(), "p50_ms": ms(bl.pct(50)), "p99_ms": ms(bl.pct(99))},
		Pass:     ratio >= minRatio && p99x <= 2 && got.Errors == 0,
		Summary: fmt.Sprintf("%.0f req/s (%.2f x baseline %.0f), p50 %.2f ms, p99 %.2f ms (%.2f x baseline %.2f ms), %d errors",
			got.perSecond(), ratio, bl.perSecond(), ms(got.pct(50)), ms(got.pct(99)), p99x, ms(bl.pct(99)), got.Errors),
	}
}

func (b *bench) b1() result {
	return b.tokenLoad("B1", "GET /oauth/token, fresh tokens, cache on, 64 conns, 1,000 accounts",
		"req/s >= 0.6 x bare handler; p99 <= 2 x", "30s", func(int) string { return "/bare" }, 0.6)
}

func (b *bench) b2() result {
	return b.tokenLoad("B2", "GET /oauth/token, cache off (row read + decrypt), 64 conns",
		"req/s >= 0.7 x pgxpool SELECT handler; p99 <= 2 x", "0", func(i int) string { return "/select/" + acct(i) }, 0.7)
}

// b3: one expired account, 1,000 concurrent GETs over three serve
// processes, the fake answering the token endpoint after 200 ms.
func (b *bench) b3() result {
	const id, scenario = "B3", "refresh storm: 1,000 concurrent GETs, 3 serve processes, one expired account, keap 200 ms"
	const latency = 200 * time.Millisecond
	target := "exactly 1 token call; 0 errors; p99 < 450 ms"
	var srvs []*proc
	defer func() {
		for _, s := range srvs {
			s.stop()
		}
	}()
	for i := range 3 {
		s, err := b.serve(fmt.Sprintf("serve B3-%d", i), "JOB_WORKERS=0")
		if err != nil {
			return failed(id, scenario, target, err)
		}
		srvs = append(srvs, s)
	}
	ctx := context.Background()
	if err := b.connect("storm"); err != nil {
		return failed(id, scenario, target, err)
	}
	if _, err := b.pool.Exec(ctx, `UPDATE keapsync.oauth_tokens SET access_expires_at = now() - interval '1 minute' WHERE account_id = 'storm'`); err != nil {
		return failed(id, scenario, target, err)
	}
	b.fake.ResetLog()
	b.fake.SetLatency(latency)
	defer b.fake.SetLatency(0)

	client := newClient(1000)
	defer client.CloseIdleConnections()
	// Open the 1,000 connections first (GET /healthz on each), as internal
	// callers keep theirs alive: the figure is then the refresh's
	// coordination, not 1,000 simultaneous TCP accepts on two cores.
	var warm sync.WaitGroup
	for i := range 1000 {
		warm.Add(1)
		go func() {
			defer warm.Done()
			if resp, err := client.Get("http://" + srvs[i%3].addr + "/healthz"); err == nil {
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		}()
	}
	warm.Wait()
	time.Sleep(2 * time.Second) // let the previous scenario's load (checkpoints, vacuum) settle
	var wg sync.WaitGroup
	lat := make([]time.Duration, 1000)
	tokens := make([]string, 1000)
	var errs atomic.Int64
	gate := make(chan struct{})
	for i := range 1000 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req := b.get(srvs[i%3].addr, "/oauth/token/storm")
			<-gate
			t0 := time.Now()
			resp, err := client.Do(req)
			if err != nil {
				errs.Add(1)
				lat[i] = time.Since(t0)
				return
			}
			var body struct {
				AccessToken string `json:"access_token"`
			}
			_ = json.NewDecoder(resp.Body).Decode(&body)
			resp.Body.Close()
			lat[i] = time.Since(t0)
			tokens[i] = body.AccessToken
			if resp.StatusCode != 200 {
				errs.Add(1)
			}
		}()
	}
	time.Sleep(100 * time.Millisecond) // let every goroutine reach the gate
	close(gate)
	wg.Wait()
	st := finish(lat, int(errs.Load()), 0)
	same := 0
	for _, t := range tokens {
		if t != "" && t == tokens[0] {
			same++
		}
	}
	calls := len(b.fake.TokenRequests("refresh_token"))
	return result{
		ID: id, Scenario: scenario, Target: target,
		Figures:  map[string]float64{"token_calls": float64(calls), "errors": float64(st.Errors), "p50_ms": ms(st.pct(50)), "p99_ms": ms(st.pct(99)), "same_token": float64(same)},
		Baseline: map[string]float64{"fake_latency_ms": ms(latency)},
		Pass:     calls == 1 && st.Errors == 0 && same == 1000 && st.pct(99) < latency+250*time.Millisecond,
		Summary:  fmt.Sprintf("%d token call(s), %d errors, %d/1000 got the same token, p50 %.0f ms, p99 %.0f ms (fake latency 200 ms)", calls, st.Errors, same, ms(st.pct(50)), ms(st.pct(99))),
	}
}

// b4: webhook ingest against a pgxpool loop writing the same rows.
func (b *bench) b4() result {
	const id, scenario = "B4", "webhook ingest, deliveries of 1 and of 100 objects, 32 conns"
	target := "objects/s >= 0.5 x pgxpool insert loop; p99 <= 2 x"
	srv, err := b.serve("serve B4", "JOB_WORKERS=0")
	if err != nil {
		return failed(id, scenario, target, err)
	}
	defer srv.stop()
	ctx := context.Background()
	// Subscribed through the API, as in production (deliveries of events an
	// account did not subscribe to are refused); the receiver URL is then
	// read back through the same code that built it.
	if err := b.subscribe(srv.addr, acct(2), "contact.edit"); err != nil {
		return failed(id, scenario, target, err)
	}
	mgr := &hooks.Manager{Pool: b.pool, Store: b.store, Keyring: b.ring, PublicBaseURL: "http://" + srv.addr, Logger: slog.New(slog.DiscardHandler)}
	hookURL, err := mgr.Endpoint(ctx, acct(2))
	if err != nil {
		return failed(id, scenario, target, err)
	}
	var next atomic.Int64
	next.Store(1_000_000)
	ids := func(n int) []int64 {
		out := make([]int64, n)
		first := next.Add(int64(n)) - int64(n)
		for i := range out {
			out[i] = first + int64(i)
		}
		return out
	}
	deliver := func(n int) func(int, int) *http.Request {
		return func(int, int) *http.Request {
			keys := make([]string, n)
			for i, id := range ids(n) {
				keys[i] = fmt.Sprintf(`{"apiUrl":"","id":%d,"timestamp":"2026-03-30T08:01:12Z"}`, id)
			}
			body := `{"event_key":"contact.edit","object_type":"contact","object_keys":[` + strings.Join(keys, ",") + `]}`
			req, _ := http.NewRequest(http.MethodPost, hookURL, strings.NewReader(body))
			req.Header.Set("Content-Type", "application/json")
			return req
		}
	}
	floor := func(n int) func(int, int) error {
		return func(int, int) error {
			return pgx.BeginFunc(ctx, b.pool, func(tx pgx.Tx) error {
				batch := ids(n)
				times := make([]*time.Time, n)
				keys := make([]json.RawMessage, n)
				ts := time.Date(2026, 3, 30, 8, 1, 12, 0, time.UTC)
				for i, id := range batch {
					times[i] = &ts
					keys[i] = json.RawMessage(fmt.Sprintf(`{"apiUrl":"","id":%d,"timestamp":"2026-03-30T08:01:12Z"}`, id))
				}
				rows, err := b.store.InsertInbox(ctx, tx, acct(3), "contact.edit", "contact", batch, times, keys)
				if err != nil {
					return err
				}
				_, err = tx.Exec(ctx, `INSERT INTO keapsync.river_job (args, kind, max_attempts, queue, state, scheduled_at, priority)
					SELECT jsonb_build_object('event_id', e, 'account_id', $1::text), 'process_webhook_event', 25, 'default', 'available', now(), 1
					FROM unnest($2::bigint[]) AS e`, acct(3), rows)
				return err
			})
		}
	}
	figs, base := map[string]float64{}, map[string]float64{}
	pass := true
	var summary []string
	ctxRSS, stop := context.WithCancel(ctx)
	peak := sampleRSS(ctxRSS, srv)
	for _, n := range []int{1, 100} {
		loop(ctx, 32, time.Second/2, floor(n))
		bl := loop(ctx, 32, b.dur, floor(n))
		load(32, time.Second/2, deliver(n))
		got := load(32, b.dur, deliver(n))
		objRatio := got.perSecond() / bl.perSecond()
		p99x := float64(got.pct(99)) / float64(bl.pct(99))
		k := fmt.Sprintf("n%d_", n)
		figs[k+"deliveries_per_s"] = got.perSecond()
		figs[k+"objects_per_s"] = got.perSecond() * float64(n)
		figs[k+"p99_ms"] = ms(got.pct(99))
		figs[k+"errors"] = float64(got.Errors)
		figs[k+"objects_ratio"] = objRatio
		figs[k+"p99_ratio"] = p99x
		base[k+"objects_per_s"] = bl.perSecond() * float64(n)
		base[k+"p99_ms"] = ms(bl.pct(99))
		pass = pass && objRatio >= 0.5 && p99x <= 2 && got.Errors == 0
		summary = append(summary, fmt.Sprintf("%d/delivery: %.0f deliveries/s, %.0f objects/s (%.2f x baseline %.0f), p99 %.1f ms (%.2f x baseline %.1f ms), %d errors",
			n, got.perSecond(), got.perSecond()*float64(n), objRatio, bl.perSecond()*float64(n), ms(got.pct(99)), p99x, ms(bl.pct(99)), got.Errors))
	}
	stop()
	rss.b4 = <-peak
	// The rows are only load; keep them from feeding later scenarios' workers.
	_, _ = b.pool.Exec(ctx, `DELETE FROM keapsync.river_job WHERE kind = 'process_webhook_event'`)
	_, _ = b.pool.Exec(ctx, `DELETE FROM keapsync.webhook_events`)
	return result{ID: id, Scenario: scenario, Target: target, Figures: figs, Baseline: base, Pass: pass, Summary: strings.Join(summary, "; ")}
}

// b5: a change at Keap until its row lands in public.keap_contacts.
func (b *bench) b5() result {
	const id, scenario = "B5", "delivery -> row in public.keap_contacts, fake Keap without added latency"
	target := "p99 < 1 s"
	srv, err := b.serve("serve B5")
	if err != nil {
		return failed(id, scenario, target, err)
	}
	defer srv.stop()
	if err := b.subscribe(srv.addr, acct(1), "contact.add", "contact.edit"); err != nil {
		return failed(id, scenario, target, err)
	}
	ctx := context.Background()
	const n = 60
	lat := make([]time.Duration, 0, n)
	errs := 0
	for i := range n {
		cid := b.fake.PutContact(map[string]any{"given_name": fmt.Sprintf("Bench %d", i)})
		t0 := time.Now()
		if _, err := b.fake.Deliver(ctx); err != nil {
			errs++
			continue
		}
		for {
			var one int
			err := b.pool.QueryRow(ctx, `SELECT 1 FROM public.keap_contacts WHERE account_id = $1 AND keap_id = $2`, acct(1), cid).Scan(&one)
			if err == nil {
				lat = append(lat, time.Since(t0))
				break
			}
			if time.Since(t0) > 10*time.Second {
				errs++
				break
			}
			time.Sleep(2 * time.Millisecond)
		}
	}
	st := finish(lat, errs, 0)
	return result{
		ID: id, Scenario: scenario, Target: target,
		Figures: map[string]float64{"p50_ms": ms(st.pct(50)), "p99_ms": ms(st.pct(99)), "samples": float64(st.N), "errors": float64(errs)},
		Pass:    errs == 0 && st.N == n && st.pct(99) < time.Second,
		Summary: fmt.Sprintf("%d contacts: p50 %.0f ms, p99 %.0f ms end to end, %d lost", st.N, ms(st.pct(50)), ms(st.pct(99)), errs),
	}
}

// subscribe creates Verified hooks for account through a serve process.
func (b *bench) subscribe(addr, account string, events ...string) error {
	body, _ := json.Marshal(map[string][]string{"events": events})
	req, _ := http.NewRequest(http.MethodPost, "http://"+addr+"/hooks/"+account, bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+b.apiKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 201 || strings.Contains(string(raw), "Unverified") {
		return fmt.Errorf("subscribe answered %d: %s", resp.StatusCode, raw)
	}
	return nil
}

// b6: every account due at once against Keap's spike arrest.
func (b *bench) b6() result {
	const id, scenario = "B6", "1,000 accounts all due for refresh, fake Keap limiting to 50/s"
	const limit = 50
	target := "all refreshed; rate within 10% of 50/s; 0 over it (no 429)"
	ctx := context.Background()
	before := map[string]int64{}
	rows, err := b.pool.Query(ctx, `SELECT account_id, version FROM keapsync.oauth_tokens WHERE account_id LIKE 'acct-%'`)
	if err != nil {
		return failed(id, scenario, target, err)
	}
	for rows.Next() {
		var a string
		var v int64
		_ = rows.Scan(&a, &v)
		before[a] = v
	}
	rows.Close()
	if _, err := b.pool.Exec(ctx, `UPDATE keapsync.oauth_tokens SET access_expires_at = now() + interval '2 minutes' WHERE account_id LIKE 'acct-%'`); err != nil {
		return failed(id, scenario, target, err)
	}
	b.fake.SetRateLimit(limit)
	defer b.fake.SetRateLimit(0)
	b.fake.ResetLog()
	// 95% of Keap's limit: the margin keeps clock skew between our limiter
	// and Keap's window from ever tripping it.
	srv, err := b.serve("serve B6", fmt.Sprintf("KEAP_RATE_PER_SECOND=%g", 0.95*limit), "KEAP_RATE_PER_MINUTE=100000")
	if err != nil {
		return failed(id, scenario, target, err)
	}
	defer srv.stop()
	deadline := time.Now().Add(100 * time.Second)
	missed := len(before)
	for time.Now().Before(deadline) && missed > 0 {
		time.Sleep(250 * time.Millisecond)
		missed = len(before) - b.movedCount(ctx, before)
	}
	var ok []time.Time
	throttled := 0
	for _, r := range b.fake.TokenRequests("refresh_token") {
		switch r.Status {
		case 200:
			ok = append(ok, r.Time)
		case 429:
			throttled++
		}
	}
	rate := 0.0
	if len(ok) > 1 {
		rate = float64(len(ok)-1) / ok[len(ok)-1].Sub(ok[0]).Seconds()
	}
	return result{
		ID: id, Scenario: scenario, Target: target,
		Figures:  map[string]float64{"accounts_per_s": rate, "refreshes": float64(len(ok)), "http_429": float64(throttled), "missed": float64(missed)},
		Baseline: map[string]float64{"limit_per_s": limit},
		Pass:     missed == 0 && throttled == 0 && rate >= 0.9*limit && rate <= limit,
		Summary:  fmt.Sprintf("%d refreshed at %.1f/s (%.0f%% of the %d/s limit), %d 429s, %d missed", len(ok), rate, 100*rate/limit, limit, throttled, missed),
	}
}

func (b *bench) movedCount(ctx context.Context, before map[string]int64) int {
	rows, err := b.pool.Query(ctx, `SELECT account_id, version FROM keapsync.oauth_tokens WHERE account_id LIKE 'acct-%'`)
	if err != nil {
		return 0
	}
	defer rows.Close()
	n := 0
	for rows.Next() {
		var a string
		var v int64
		_ = rows.Scan(&a, &v)
		if v != before[a] {
			n++
		}
	}
	return n
}

// b7: the pool against a new connection per read.
func (b *bench) b7() result {
	const id, scenario = "B7", "token row read through the pool vs a new connection per read"
	target := "pooled p50 <= 0.05 x unpooled"
	ctx := context.Background()
	pooled := make([]time.Duration, 0, 2000)
	for i := range 2000 {
		t0 := time.Now()
		if _, err := b.store.GetToken(ctx, b.pool, acct(i%accounts)); err != nil {
			return failed(id, scenario, target, err)
		}
		pooled = append(pooled, time.Since(t0))
	}
	unpooled := make([]time.Duration, 0, 200)
	for i := range 200 {
		t0 := time.Now()
		conn, err := pgx.Connect(ctx, b.dbURL)
		if err != nil {
			return failed(id, scenario, target, err)
		}
		_, err = b.store.GetToken(ctx, conn, acct(i%accounts))
		conn.Close(ctx)
		if err != nil {
			return failed(id, scenario, target, err)
		}
		unpooled = append(unpooled, time.Since(t0))
	}
	p, u := finish(pooled, 0, 0), finish(unpooled, 0, 0)
	ratio := float64(p.pct(50)) / float64(u.pct(50))
	return result{
		ID: id, Scenario: scenario, Target: target,
		Figures:  map[string]float64{"pooled_p50_ms": ms(p.pct(50)), "ratio": ratio},
		Baseline: map[string]float64{"unpooled_p50_ms": ms(u.pct(50))},
		Pass:     ratio <= 0.05,
		Summary:  fmt.Sprintf("pooled p50 %.3f ms, unpooled p50 %.2f ms: %.3f x", ms(p.pct(50)), ms(u.pct(50)), ratio),
	}
}

// m1: resident memory of serve idle (after 3 s) and at peak under B1 and B4.
func (b *bench) m1() result {
	const id, scenario = "M1", "peak RSS of a serve process: idle, during B1, during B4"
	target := "idle < 40 MiB; under load < 150 MiB"
	srv, err := b.serve("serve M1")
	if err != nil {
		return failed(id, scenario, target, err)
	}
	time.Sleep(3 * time.Second)
	_, idle := srv.rssMiB()
	srv.stop()
	pass := idle > 0 && idle < 40 && rss.b1 > 0 && rss.b1 < 150 && rss.b4 > 0 && rss.b4 < 150
	return result{
		ID: id, Scenario: scenario, Target: target,
		Figures: map[string]float64{"idle_mib": idle, "b1_mib": rss.b1, "b4_mib": rss.b4},
		Pass:    pass,
		Summary: fmt.Sprintf("idle %.1f MiB, under B1 %.1f MiB, under B4 %.1f MiB", idle, rss.b1, rss.b4),
	}
}
