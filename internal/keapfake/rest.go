package keapfake

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Hook subscription statuses.
const (
	HookUnverified = "Unverified"
	HookVerified   = "Verified"
	HookInactive   = "Inactive"
)

// keapTimeLayout is how Keap's v1 API writes times: 2026-03-29T10:55:37.000+0000.
const keapTimeLayout = "2006-01-02T15:04:05.000-0700"

// eventKeys is what GET /v1/hooks/event_keys returns, from WIRE.md.
var eventKeys = func() []string {
	keys := []string{
		"contact.add", "contact.edit", "contact.delete", "contact.redact",
		"contactGroup.add", "contactGroup.edit", "contactGroup.delete",
		"contactGroup.applied", "contactGroup.removed",
		"opportunity.add", "opportunity.edit", "opportunity.delete", "opportunity.stage_move",
	}
	for _, obj := range []string{
		"company", "order", "invoice", "invoice.payment", "note", "task",
		"appointment", "product", "subscription", "leadsource", "user",
	} {
		keys = append(keys, obj+".add", obj+".edit", obj+".delete")
	}
	return keys
}()

// Hook is a REST hook subscription as Keap returns it.
type Hook struct {
	Key      string `json:"key"`
	EventKey string `json:"eventKey"`
	HookURL  string `json:"hookUrl"`
	Status   string `json:"status"`
}

type hook struct {
	Hook
	secret   string      // last X-Hook-Secret sent
	failures int         // delivery attempts failed in a row
	outbox   []objectKey // changes waiting for delivery
}

// objectKey is one queued change.
type objectKey struct {
	seq      uint64
	eventKey string
	id       int64
	at       time.Time
}

type contact struct {
	fields  map[string]any
	created time.Time
	updated time.Time
	deleted bool
}

// Tenant gives a test access to one Keap app's data. Get one from Server.Tenant.
type Tenant struct {
	s    *Server
	name string
}

// Name returns the app name, as in scope "full|<name>.infusionsoft.com".
func (t *Tenant) Name() string { return t.name }

// Mint issues a live token pair for this tenant, as a code exchange would.
func (t *Tenant) Mint() TokenPair {
	t.s.mu.Lock()
	defer t.s.mu.Unlock()
	return t.s.mintLocked(t.name)
}

// AuthorizeCode issues an authorization code for this tenant, bound to redirectURI.
func (t *Tenant) AuthorizeCode(redirectURI string) string {
	return t.s.issueCode(t.name, redirectURI)
}

// PutContact creates or updates (merging top-level fields; a nil value removes a field) the
// contact c["id"], or a new contact when the id is absent or 0. It stamps last_updated with the
// clock, at least 1 ms after the previous stamp, queues contact.add or contact.edit, and returns
// the id. It panics if c cannot be encoded as JSON.
func (t *Tenant) PutContact(c map[string]any) int64 {
	fields := normalize(c)
	id := idOf(c["id"])
	for _, k := range []string{"id", "date_created", "last_updated"} {
		delete(fields, k)
	}

	s := t.s
	s.mu.Lock()
	defer s.mu.Unlock()
	ts := s.tenants[t.name]
	if id <= 0 {
		id = ts.nextContactID
	}
	ts.nextContactID = max(ts.nextContactID, id+1)
	stamp := s.stampLocked()
	ct := ts.contacts[id]
	event := "contact.edit"
	if ct == nil || ct.deleted {
		ct = &contact{fields: map[string]any{
			"email_addresses": []any{}, "phone_numbers": []any{}, "addresses": []any{}, "tag_ids": []any{},
		}, created: stamp}
		ts.contacts[id] = ct
		event = "contact.add"
	}
	for k, v := range fields {
		if v == nil {
			delete(ct.fields, k)
		} else {
			ct.fields[k] = v
		}
	}
	ct.updated = stamp
	s.queueLocked(ts, event, id, stamp)
	return id
}

// DeleteContact deletes contact id, after which GET answers 404, and queues contact.delete.
// Deleting an unknown or deleted contact does nothing.
func (t *Tenant) DeleteContact(id int64) {
	s := t.s
	s.mu.Lock()
	defer s.mu.Unlock()
	ts := s.tenants[t.name]
	ct := ts.contacts[id]
	if ct == nil || ct.deleted {
		return
	}
	ct.deleted = true
	s.queueLocked(ts, "contact.delete", id, s.stampLocked())
}

// Contact returns contact id as GET /v1/contacts/{id} would, with id as an int64.
func (t *Tenant) Contact(id int64) (map[string]any, bool) {
	t.s.mu.Lock()
	defer t.s.mu.Unlock()
	ct := t.s.tenants[t.name].contacts[id]
	if ct == nil || ct.deleted {
		return nil, false
	}
	return renderContact(id, ct), true
}

// RecordEvent queues a change of any object type (e.g. "company.add", 12) for delivery.
func (t *Tenant) RecordEvent(eventKey string, id int64) {
	s := t.s
	s.mu.Lock()
	defer s.mu.Unlock()
	s.queueLocked(s.tenants[t.name], eventKey, id, s.stampLocked())
}

// Hooks returns this tenant's hook subscriptions ordered by key.
func (t *Tenant) Hooks() []Hook {
	t.s.mu.Lock()
	defer t.s.mu.Unlock()
	return t.s.tenants[t.name].hookList()
}

// SetHookStatus sets hook key's status, e.g. HookInactive. Leaving Verified drops its queue.
func (t *Tenant) SetHookStatus(key, status string) {
	t.s.mu.Lock()
	defer t.s.mu.Unlock()
	if h := t.s.tenants[t.name].hooks[key]; h != nil {
		h.Status = status
		h.failures = 0
		if status != HookVerified {
			h.outbox = nil
		}
	}
}

// The Server's seeding helpers act on the default tenant, Options.Tenant.

func (s *Server) defaultTenant() *Tenant { return &Tenant{s: s, name: s.opts.Tenant} }

// PutContact is Tenant.PutContact on the default tenant.
func (s *Server) PutContact(c map[string]any) int64 { return s.defaultTenant().PutContact(c) }

// DeleteContact is Tenant.DeleteContact on the default tenant.
func (s *Server) DeleteContact(id int64) { s.defaultTenant().DeleteContact(id) }

// Contact is Tenant.Contact on the default tenant.
func (s *Server) Contact(id int64) (map[string]any, bool) { return s.defaultTenant().Contact(id) }

// RecordEvent is Tenant.RecordEvent on the default tenant.
func (s *Server) RecordEvent(eventKey string, id int64) {
	s.defaultTenant().RecordEvent(eventKey, id)
}

// Hooks is Tenant.Hooks on the default tenant.
func (s *Server) Hooks() []Hook { return s.defaultTenant().Hooks() }

// SetHookStatus is Tenant.SetHookStatus on the default tenant.
func (s *Server) SetHookStatus(key, status string) { s.defaultTenant().SetHookStatus(key, status) }

// stampLocked returns the time for a change: the clock in milliseconds, kept strictly
// increasing even when the clock stands still.
func (s *Server) stampLocked() time.Time {
	now := s.now().UTC().Truncate(time.Millisecond)
	if !now.After(s.lastStamp) {
		now = s.lastStamp.Add(time.Millisecond)
	}
	s.lastStamp = now
	return now
}

// queueLocked queues a change for every hook Verified for its event key at this moment.
func (s *Server) queueLocked(t *tenant, eventKey string, id int64, at time.Time) {
	s.eventSeq++
	for _, h := range t.hooks {
		if h.Status == HookVerified && h.EventKey == eventKey {
			h.outbox = append(h.outbox, objectKey{seq: s.eventSeq, eventKey: eventKey, id: id, at: at})
		}
	}
}

func (t *tenant) hookList() []Hook {
	out := make([]Hook, 0, len(t.hooks))
	for _, h := range t.hooks {
		out = append(out, h.Hook)
	}
	slices.SortFunc(out, func(a, b Hook) int { return compareKeys(a.Key, b.Key) })
	return out
}

// compareKeys orders hook keys numerically ("2" before "10").
func compareKeys(a, b string) int {
	if len(a) != len(b) {
		return len(a) - len(b)
	}
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func renderContact(id int64, ct *contact) map[string]any {
	out := deepCopy(ct.fields).(map[string]any)
	out["id"] = id
	out["date_created"] = ct.created.Format(keapTimeLayout)
	out["last_updated"] = ct.updated.Format(keapTimeLayout)
	return out
}

// normalize turns c into what encoding/json decodes from it, so the fake never aliases the
// caller's values and answers the same types it would read back.
func normalize(c map[string]any) map[string]any {
	b, err := json.Marshal(c)
	if err != nil {
		panic(fmt.Sprintf("keapfake: contact is not JSON: %v", err))
	}
	out := map[string]any{}
	if err := json.Unmarshal(b, &out); err != nil {
		panic(fmt.Sprintf("keapfake: contact is not a JSON object: %v", err))
	}
	return out
}

func deepCopy(v any) any {
	switch v := v.(type) {
	case map[string]any:
		m := make(map[string]any, len(v))
		for k, e := range v {
			m[k] = deepCopy(e)
		}
		return m
	case []any:
		s := make([]any, len(v))
		for i, e := range v {
			s[i] = deepCopy(e)
		}
		return s
	}
	return v
}

func idOf(v any) int64 {
	switch v := v.(type) {
	case int:
		return int64(v)
	case int32:
		return int64(v)
	case int64:
		return v
	case float64:
		return int64(v)
	case json.Number:
		n, _ := v.Int64()
		return n
	case string:
		n, _ := strconv.ParseInt(v, 10, 64)
		return n
	}
	return 0
}

// authed wraps a REST handler: a live bearer token is required, and it names the tenant.
func (s *Server) authed(h func(http.ResponseWriter, *http.Request, *tenant)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		t := s.accessTenantLocked(bearerToken(r), true)
		s.mu.Unlock()
		if t == nil {
			w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
			writeMessage(w, http.StatusUnauthorized, "Unauthorized")
			return
		}
		h(w, r, t)
	}
}

func (s *Server) handleGetContact(w http.ResponseWriter, r *http.Request, t *tenant) {
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if err != nil {
		writeMessage(w, http.StatusBadRequest, "Invalid contact id: "+r.PathValue("id"))
		return
	}
	s.mu.Lock()
	ct := t.contacts[id]
	var body map[string]any
	if ct != nil && !ct.deleted {
		body = renderContact(id, ct)
	}
	s.mu.Unlock()
	if body == nil {
		writeMessage(w, http.StatusNotFound, fmt.Sprintf("Contact with ID %d not found", id))
		return
	}
	writeJSON(w, http.StatusOK, body)
}

func (s *Server) handleEventKeys(w http.ResponseWriter, _ *http.Request, _ *tenant) {
	writeJSON(w, http.StatusOK, eventKeys)
}

func (s *Server) handleListHooks(w http.ResponseWriter, _ *http.Request, t *tenant) {
	s.mu.Lock()
	list := t.hookList()
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, list)
}

type hookInput struct {
	EventKey *string `json:"eventKey"`
	HookURL  *string `json:"hookUrl"`
}

// decodeHookInput reads and validates a create or update body. On create both fields are
// required.
func decodeHookInput(r *http.Request, create bool) (hookInput, string) {
	var in hookInput
	if err := json.NewDecoder(r.Body).Decode(&in); err != nil {
		return in, "Invalid request body"
	}
	if create && (in.EventKey == nil || in.HookURL == nil) {
		return in, "eventKey and hookUrl are required"
	}
	if in.EventKey != nil && !slices.Contains(eventKeys, *in.EventKey) {
		return in, "Invalid eventKey: " + *in.EventKey
	}
	if in.HookURL != nil {
		u, err := url.Parse(*in.HookURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return in, "Invalid hookUrl: " + *in.HookURL
		}
	}
	return in, ""
}

// handleCreateHook registers a subscription, then performs the handshake before answering, as
// Keap does.
func (s *Server) handleCreateHook(w http.ResponseWriter, r *http.Request, t *tenant) {
	in, problem := decodeHookInput(r, true)
	if problem != "" {
		writeMessage(w, http.StatusBadRequest, problem)
		return
	}
	s.mu.Lock()
	key := strconv.Itoa(t.nextHookKey)
	t.nextHookKey++
	t.hooks[key] = &hook{Hook: Hook{Key: key, EventKey: *in.EventKey, HookURL: *in.HookURL, Status: HookUnverified}}
	s.mu.Unlock()

	s.writeHook(w, t, s.handshake(r.Context(), t, key))
}

func (s *Server) handleGetHook(w http.ResponseWriter, r *http.Request, t *tenant) {
	s.writeHook(w, t, r.PathValue("key"))
}

func (s *Server) handleUpdateHook(w http.ResponseWriter, r *http.Request, t *tenant) {
	key := r.PathValue("key")
	in, problem := decodeHookInput(r, false)
	s.mu.Lock()
	h := t.hooks[key]
	if h == nil {
		s.mu.Unlock()
		writeHookNotFound(w, key)
		return
	}
	if problem != "" {
		s.mu.Unlock()
		writeMessage(w, http.StatusBadRequest, problem)
		return
	}
	if in.EventKey != nil && *in.EventKey != h.EventKey {
		h.EventKey = *in.EventKey
		h.outbox = nil
	}
	moved := in.HookURL != nil && *in.HookURL != h.HookURL
	if moved {
		h.HookURL = *in.HookURL
		h.Status = HookUnverified
		h.outbox = nil
	}
	s.mu.Unlock()
	if moved {
		s.handshake(r.Context(), t, key)
	}
	s.writeHook(w, t, key)
}

func (s *Server) handleDeleteHook(w http.ResponseWriter, r *http.Request, t *tenant) {
	key := r.PathValue("key")
	s.mu.Lock()
	_, ok := t.hooks[key]
	delete(t.hooks, key)
	s.mu.Unlock()
	if !ok {
		writeHookNotFound(w, key)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) handleVerifyHook(w http.ResponseWriter, r *http.Request, t *tenant) {
	key := r.PathValue("key")
	s.mu.Lock()
	_, ok := t.hooks[key]
	s.mu.Unlock()
	if !ok {
		writeHookNotFound(w, key)
		return
	}
	s.writeHook(w, t, s.handshake(r.Context(), t, key))
}

// handleDelayedVerify completes a handshake whose receiver did not echo the secret in time: the
// caller proves it saw the secret by sending it back in X-Hook-Secret.
func (s *Server) handleDelayedVerify(w http.ResponseWriter, r *http.Request, t *tenant) {
	key := r.PathValue("key")
	secret := r.Header.Get("X-Hook-Secret")
	s.mu.Lock()
	h := t.hooks[key]
	ok := h != nil && secret != "" && h.secret == secret
	if ok {
		h.Status = HookVerified
		h.failures = 0
		h.secret = "" // single use; also tells a handshake still in flight not to overrule this
	}
	s.mu.Unlock()
	switch {
	case h == nil:
		writeHookNotFound(w, key)
	case !ok:
		writeMessage(w, http.StatusBadRequest, "X-Hook-Secret does not match")
	default:
		s.writeHook(w, t, key)
	}
}

func (s *Server) writeHook(w http.ResponseWriter, t *tenant, key string) {
	s.mu.Lock()
	h, ok := t.hooks[key]
	var body Hook
	if ok {
		body = h.Hook
	}
	s.mu.Unlock()
	if !ok {
		writeHookNotFound(w, key)
		return
	}
	writeJSON(w, http.StatusOK, body)
}

func writeHookNotFound(w http.ResponseWriter, key string) {
	writeMessage(w, http.StatusNotFound, "Hook subscription "+key+" not found")
}

// objectType is the object part of an event key: "invoice.payment.add" -> "invoice.payment".
func objectType(eventKey string) string {
	if i := strings.LastIndexByte(eventKey, '.'); i >= 0 {
		return eventKey[:i]
	}
	return eventKey
}
