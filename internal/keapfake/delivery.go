package keapfake

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"slices"
	"time"
)

// maxBatch is the most object keys Keap puts in one delivery.
const maxBatch = 1000

// maxFailures is how many failed attempts in a row make a hook Inactive.
const maxFailures = 4

const userAgent = "keapfake-hooks/1"

type deliveryBody struct {
	EventKey   string        `json:"event_key"`
	ObjectType string        `json:"object_type"`
	ObjectKeys []deliveryKey `json:"object_keys"`
	APIURL     string        `json:"api_url"`
}

type deliveryKey struct {
	APIURL    string `json:"apiUrl"`
	ID        int64  `json:"id"`
	Timestamp string `json:"timestamp"`
}

// handshake sends a fresh X-Hook-Secret to hook key's URL, with the mutex released so the
// receiver may call back into the fake, and sets the status from the answer. It returns key.
func (s *Server) handshake(ctx context.Context, t *tenant, key string) string {
	secret := randomToken()
	s.mu.Lock()
	h := t.hooks[key]
	if h == nil {
		s.mu.Unlock()
		return key
	}
	h.secret = secret
	target := h.HookURL
	s.mu.Unlock()

	ok, why := s.postHandshake(ctx, target, secret)

	s.mu.Lock()
	defer s.mu.Unlock()
	// A hook deleted, re-verified or completed by delayedVerify meanwhile has moved on.
	h = t.hooks[key]
	if h == nil || h.secret != secret {
		return key
	}
	if ok {
		h.Status = HookVerified
		h.failures = 0
	} else {
		h.Status = HookUnverified
		h.outbox = nil
	}
	s.logf("keapfake: hook %s/%s handshake with %s: %s", t.name, key, target, why)
	return key
}

func (s *Server) postHandshake(ctx context.Context, target, secret string) (bool, string) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, target, http.NoBody)
	if err != nil {
		return false, err.Error()
	}
	req.Header.Set("X-Hook-Secret", secret)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", userAgent)
	resp, err := s.opts.HTTPClient.Do(req)
	if err != nil {
		return false, err.Error()
	}
	defer drain(resp)
	switch {
	case resp.StatusCode < 200 || resp.StatusCode > 299:
		return false, "answered " + resp.Status
	case resp.Header.Get("X-Hook-Secret") != secret:
		return false, "did not echo X-Hook-Secret"
	}
	return true, "verified"
}

// PendingDeliveries returns how many object keys are queued for delivery, over all tenants.
func (s *Server) PendingDeliveries() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, t := range s.tenants {
		for _, h := range t.hooks {
			n += len(h.outbox)
		}
	}
	return n
}

// delivery is the queued work of one hook, split into POSTs.
type delivery struct {
	t       *tenant
	key     string
	url     string
	batches [][]objectKey
}

// Deliver sends queued changes as Keap does: for each Verified hook, one POST per event key and
// up to 1,000 object keys. It returns the number of POSTs made. An attempt fails on a transport
// error or a status outside 200–399, and stops that hook's flush; its changes stay queued for the
// next Deliver. After 4 failed attempts in a row, or any 410, the hook becomes Inactive and its
// queue is dropped. The error is non-nil only when ctx ends.
func (s *Server) Deliver(ctx context.Context) (int, error) {
	s.deliverMu.Lock()
	defer s.deliverMu.Unlock()

	posts := 0
	for _, d := range s.pendingDeliveries() {
		for _, batch := range d.batches {
			if err := ctx.Err(); err != nil {
				return posts, err
			}
			status, err := s.post(ctx, d.url, batch)
			posts++
			if ctx.Err() != nil {
				return posts, ctx.Err() // our own cancellation is not the receiver's failure
			}
			if !s.settle(d, batch, status, err) {
				break
			}
		}
	}
	return posts, nil
}

func (s *Server) pendingDeliveries() []delivery {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []delivery
	for _, t := range s.sortedTenantsLocked() {
		for _, hk := range t.hookList() {
			h := t.hooks[hk.Key]
			if h.Status != HookVerified || len(h.outbox) == 0 {
				continue
			}
			d := delivery{t: t, key: h.Key, url: h.HookURL}
			var order []string
			groups := map[string][]objectKey{}
			for _, ok := range h.outbox {
				if _, seen := groups[ok.eventKey]; !seen {
					order = append(order, ok.eventKey)
				}
				groups[ok.eventKey] = append(groups[ok.eventKey], ok)
			}
			for _, ek := range order {
				for chunk := range slices.Chunk(groups[ek], maxBatch) {
					d.batches = append(d.batches, chunk)
				}
			}
			out = append(out, d)
		}
	}
	return out
}

func (s *Server) post(ctx context.Context, target string, batch []objectKey) (int, error) {
	body := deliveryBody{
		EventKey:   batch[0].eventKey,
		ObjectType: objectType(batch[0].eventKey),
		ObjectKeys: make([]deliveryKey, len(batch)),
	}
	for i, ok := range batch {
		body.ObjectKeys[i] = deliveryKey{ID: ok.id, Timestamp: ok.at.UTC().Format(time.RFC3339)}
	}
	b, err := json.Marshal(body)
	if err != nil {
		return 0, err
	}
	resp, err := s.DeliverRaw(ctx, target, b)
	if err != nil {
		return 0, err
	}
	drain(resp)
	return resp.StatusCode, nil
}

// settle records the outcome of one delivery POST and reports whether to go on with the hook.
func (s *Server) settle(d delivery, batch []objectKey, status int, err error) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	h := d.t.hooks[d.key]
	if h == nil || h.HookURL != d.url {
		return false // deleted or moved while we were posting
	}
	if err == nil && status >= 200 && status < 400 {
		sent := make(map[uint64]bool, len(batch))
		for _, ok := range batch {
			sent[ok.seq] = true
		}
		h.outbox = slices.DeleteFunc(h.outbox, func(ok objectKey) bool { return sent[ok.seq] })
		h.failures = 0
		return true
	}
	h.failures++
	if status == http.StatusGone || h.failures >= maxFailures {
		h.Status = HookInactive
		h.outbox = nil
	}
	if err != nil {
		s.logf("keapfake: delivery to hook %s/%s failed (%d in a row): %v", d.t.name, d.key, h.failures, err)
	} else {
		s.logf("keapfake: delivery to hook %s/%s answered %d (%d in a row)", d.t.name, d.key, status, h.failures)
	}
	return false
}

// DeliverRaw POSTs body, unchanged, to hookURL as Keap's delivery would, for tests of forged or
// odd deliveries. The caller closes the response body.
func (s *Server) DeliverRaw(ctx context.Context, hookURL string, body []byte) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, hookURL, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", userAgent)
	return s.opts.HTTPClient.Do(req)
}

// drain reads what is left of resp's body, so the connection can be reused, and closes it.
func drain(resp *http.Response) {
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	_ = resp.Body.Close()
}
