// Package notify delivers account state changes (connected, reauth_required,
// recovered, disconnected) to the receivers an operator configured: any HTTP
// endpoint (EVENTS_WEBHOOK_URL) and a Supabase Edge Function
// (SUPABASE_EVENTS_FUNCTION). Each POST is signed the Standard Webhooks way,
// so a receiver can use any of that format's libraries to check it. The
// deliveries themselves are River jobs (internal/jobs), inserted in the
// transaction that changed the state: retried, never lost, never in the way
// of a refresh.
package notify

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/keapsync/keapsync/internal/seal"
	"github.com/keapsync/keapsync/internal/store"
)

// Target names, stored in each delivery job.
const (
	TargetWebhook      = "webhook"
	TargetEdgeFunction = "edge_function"
)

// Target is one receiver.
type Target struct {
	Name string
	URL  string
	// Bearer, when set, goes out as "Authorization: Bearer ..." (the Edge
	// Function's service role key).
	Bearer seal.Secret
}

// Notifier sends events to its targets. The zero value sends nothing.
type Notifier struct {
	Targets []Target
	Secret  []byte       // signing key, from ParseSecret
	Client  *http.Client // default: 10 s timeout, no redirects
	Now     func() time.Time
}

// ParseSecret reads a Standard Webhooks secret: "whsec_" and the base64 of
// 24 to 64 random bytes.
func ParseSecret(s string) ([]byte, error) {
	b64, ok := strings.CutPrefix(s, "whsec_")
	if !ok {
		return nil, errors.New(`must start with "whsec_" (make one with: echo "whsec_$(openssl rand -base64 32)")`)
	}
	key, err := base64.StdEncoding.DecodeString(b64)
	if err != nil || len(key) < 24 || len(key) > 64 {
		return nil, errors.New(`must be "whsec_" and the base64 of 24 to 64 random bytes`)
	}
	return key, nil
}

// Sign returns the webhook-signature header for one message.
func Sign(key []byte, msgID string, ts time.Time, body []byte) string {
	mac := hmac.New(sha256.New, key)
	fmt.Fprintf(mac, "%s.%d.", msgID, ts.Unix())
	mac.Write(body)
	return "v1," + base64.StdEncoding.EncodeToString(mac.Sum(nil))
}

// Target returns the configured target called name. A nil Notifier has none.
func (n *Notifier) Target(name string) (Target, bool) {
	if n == nil {
		return Target{}, false
	}
	for _, t := range n.Targets {
		if t.Name == name {
			return t, true
		}
	}
	return Target{}, false
}

// MessageID is an event's webhook-id: the same on every retry, so
// receivers can drop duplicates.
func MessageID(ev store.Event) string { return "evt_" + strconv.FormatInt(ev.ID, 10) }

// Payload is the body sent for ev, in the Standard Webhooks shape
// {type, timestamp, data}. data.sequence is the audit event's id: one
// account's events are written under its lock, so a higher sequence is a
// later state, and a retried old delivery can be told from a new one. The
// audit detail holds no secret by contract.
func Payload(ev store.Event) ([]byte, error) {
	return json.Marshal(map[string]any{
		"type":      "account." + ev.Kind,
		"timestamp": ev.CreatedAt.UTC().Format(time.RFC3339Nano),
		"data": map[string]any{
			"account_id": ev.AccountID,
			"event":      ev.Kind,
			"sequence":   ev.ID,
			"detail":     ev.Detail,
		},
	})
}

// Error is a delivery that the receiver refused or never answered.
// Permanent means trying again cannot help (410 Gone).
type Error struct {
	Target    string
	Status    int // 0: no answer
	Permanent bool
	Err       error
}

func (e *Error) Error() string {
	if e.Status == 0 {
		return fmt.Sprintf("notify %s: %v", e.Target, e.Err)
	}
	return fmt.Sprintf("notify %s: receiver answered %d", e.Target, e.Status)
}

func (e *Error) Unwrap() error { return e.Err }

// Send POSTs ev to t, signed. Any 2xx is success; anything else is an *Error.
func (n *Notifier) Send(ctx context.Context, t Target, ev store.Event) error {
	body, err := Payload(ev)
	if err != nil {
		return err
	}
	now := time.Now
	if n.Now != nil {
		now = n.Now
	}
	id, ts := MessageID(ev), now()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, t.URL, bytes.NewReader(body))
	if err != nil {
		return &Error{Target: t.Name, Permanent: true, Err: err}
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "keapsync")
	req.Header.Set("webhook-id", id)
	req.Header.Set("webhook-timestamp", strconv.FormatInt(ts.Unix(), 10))
	if len(n.Secret) > 0 {
		req.Header.Set("webhook-signature", Sign(n.Secret, id, ts, body))
	}
	if b := t.Bearer.Reveal(); b != "" {
		req.Header.Set("Authorization", "Bearer "+b)
	}
	client := n.Client
	if client == nil {
		client = &http.Client{Timeout: 10 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse // a redirect is not a delivery
		}}
	}
	resp, err := client.Do(req)
	if err != nil {
		// Keep the cause, not the URL: a receiver URL may carry a token.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return &Error{Target: t.Name, Err: err}
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return nil
	}
	return &Error{Target: t.Name, Status: resp.StatusCode, Permanent: resp.StatusCode == http.StatusGone}
}
