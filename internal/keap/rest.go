package keap

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/keapsync/keapsync/internal/seal"
)

// limiter is the one gate every call of this process to Keap passes (REST
// and token endpoint): Keap's quota (1,500/min, ~25/s spike arrest) is
// shared by every tenant of a client id. The per-second gate has a burst of
// one because a spike arrest smooths its rate (25/s means one call per
// 40 ms), so a burst would trip it even under the average. It also pauses
// when Keap says its per-second budget is nearly spent
// (x-keap-product-throttle-available).
type limiter struct {
	second, minute *rate.Limiter
	mu             sync.Mutex
	pauseUntil     time.Time
}

func newLimiter(perSecond, perMinute float64) *limiter {
	return &limiter{
		second: rate.NewLimiter(rate.Limit(perSecond), 1),
		minute: rate.NewLimiter(rate.Limit(perMinute/60), max(1, int(perMinute/60))),
	}
}

func (l *limiter) wait(ctx context.Context) error {
	l.mu.Lock()
	pause := time.Until(l.pauseUntil)
	l.mu.Unlock()
	if pause > 0 {
		t := time.NewTimer(pause)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if err := l.minute.Wait(ctx); err != nil {
		return err
	}
	return l.second.Wait(ctx)
}

// observe reads Keap's throttle headers: with under a tenth of the
// per-second budget left, calls wait for the next window.
func (l *limiter) observe(h http.Header, now time.Time) {
	avail, err1 := strconv.Atoi(h.Get("x-keap-product-throttle-available"))
	limit, err2 := strconv.Atoi(h.Get("x-keap-product-throttle-limit"))
	if err1 != nil || err2 != nil || limit <= 0 {
		return
	}
	if avail*10 < limit {
		l.mu.Lock()
		if until := now.Add(time.Second); until.After(l.pauseUntil) {
			l.pauseUntil = until
		}
		l.mu.Unlock()
	}
}

// EventKeyPattern is the shape of a Keap event key (contact.add, invoice.payment.edit).
var EventKeyPattern = regexp.MustCompile(`^[A-Za-z][A-Za-z_]*(\.[A-Za-z][A-Za-z_]*){1,3}$`)

// Hook is a REST hook subscription as Keap returns it.
type Hook struct {
	Key      string `json:"key"`
	EventKey string `json:"eventKey"`
	HookURL  string `json:"hookUrl"`
	Status   string `json:"status"`
}

// NotFound reports a 404: for a contact, it was deleted (or never existed).
func (e *Error) NotFound() bool { return e.Status == http.StatusNotFound }

// Unauthorized reports a 401: the access token was refused.
func (e *Error) Unauthorized() bool { return e.Status == http.StatusUnauthorized }

// GetContact fetches a contact by id (v1), returning Keap's JSON as is.
func (c *Client) GetContact(ctx context.Context, token seal.Secret, id int64) (json.RawMessage, error) {
	var raw json.RawMessage
	err := c.rest(ctx, "get contact", http.MethodGet, fmt.Sprintf("/v1/contacts/%d", id), token, nil, &raw)
	return raw, err
}

// EventKeys lists the event keys Keap accepts for REST hooks.
func (c *Client) EventKeys(ctx context.Context, token seal.Secret) ([]string, error) {
	var keys []string
	err := c.rest(ctx, "list event keys", http.MethodGet, "/v1/hooks/event_keys", token, nil, &keys)
	return keys, err
}

// ListHooks lists the tenant's REST hook subscriptions.
func (c *Client) ListHooks(ctx context.Context, token seal.Secret) ([]Hook, error) {
	var hooks []Hook
	err := c.rest(ctx, "list hooks", http.MethodGet, "/v1/hooks", token, nil, &hooks)
	return hooks, err
}

// CreateHook subscribes hookURL to eventKey. Keap performs the verification
// handshake against hookURL before it answers, so the receiver must be live.
func (c *Client) CreateHook(ctx context.Context, token seal.Secret, eventKey, hookURL string) (Hook, error) {
	var h Hook
	err := c.rest(ctx, "create hook", http.MethodPost, "/v1/hooks", token, map[string]string{"eventKey": eventKey, "hookUrl": hookURL}, &h)
	return h, err
}

// DeleteHook removes a subscription; an unknown key is not an error.
func (c *Client) DeleteHook(ctx context.Context, token seal.Secret, key string) error {
	err := c.rest(ctx, "delete hook", http.MethodDelete, "/v1/hooks/"+key, token, nil, nil)
	if e, ok := AsError(err); ok && e.NotFound() {
		return nil
	}
	return err
}

// VerifyHook asks Keap to redo the handshake of an Unverified or Inactive hook.
func (c *Client) VerifyHook(ctx context.Context, token seal.Secret, key string) (Hook, error) {
	var h Hook
	err := c.rest(ctx, "verify hook", http.MethodPost, "/v1/hooks/"+key+"/verify", token, nil, &h)
	return h, err
}

// rest performs one REST call through the process limiter and classifies
// its failure. Errors never carry the URL (a hook URL holds a secret) or
// the token.
func (c *Client) rest(ctx context.Context, op, method, path string, token seal.Secret, in, out any) error {
	if err := c.limit.wait(ctx); err != nil {
		return &Error{Op: op, Kind: Transient, Message: "waiting for the keap rate limiter: " + err.Error()}
	}
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	ctx, cancel := context.WithTimeout(ctx, c.opts.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, c.opts.APIURL+path, body)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+token.Reveal())
	req.Header.Set("Accept", "application/json")
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.opts.HTTPClient.Do(req)
	if err != nil {
		return transportError(op, err)
	}
	defer resp.Body.Close()
	c.limit.observe(resp.Header, c.opts.Now())
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if err != nil {
		return transportError(op, err)
	}
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		if out == nil || len(bytes.TrimSpace(raw)) == 0 {
			return nil
		}
		if err := json.Unmarshal(raw, out); err != nil {
			return &Error{Op: op, Kind: Transient, Status: resp.StatusCode, Message: "unreadable JSON from keap"}
		}
		return nil
	}
	e := &Error{Op: op, Status: resp.StatusCode, RetryAfter: ParseRetryAfter(resp.Header.Get("Retry-After"), c.opts.Now())}
	var msg struct {
		Message string `json:"message"`
	}
	if json.Unmarshal(raw, &msg) == nil {
		e.Description = truncate(msg.Message, 200)
	}
	switch {
	case resp.StatusCode == http.StatusTooManyRequests:
		e.Kind = Throttled
	case resp.StatusCode >= 500:
		e.Kind, e.Ambiguous = Transient, true
	default:
		e.Kind = Permanent
	}
	return e
}
