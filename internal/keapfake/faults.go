package keapfake

import (
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
)

// 429 bodies, byte for byte the throttle_429_*.json files in testdata/keap/ (copies of the shared Keap fixtures).
const (
	// Throttle429QuotaNew is Keap's newer quota answer, the ThrottleNext default.
	Throttle429QuotaNew = `{"code": "429", "message": "Quota Exceeded", "status": "Request Throttled", "details": null}`
	// Throttle429QuotaApigee is Apigee's quota violation.
	Throttle429QuotaApigee = `{"fault": {"faultstring": "Rate limit quota violation. Quota limit  exceeded. Identifier : abc123", "detail": {"errorcode": "policies.ratelimit.QuotaViolation"}}}`
	// Throttle429SpikeApigee is Apigee's spike arrest, sent when SetRateLimit's budget is spent.
	Throttle429SpikeApigee = `{"fault": {"faultstring": "Spike arrest violation. Allowed rate : MessageRate{messagesPerPeriod=25, periodInMicroseconds=1000000, maxBurstMessageCount=25.0}", "detail": {"errorcode": "policies.ratelimit.SpikeArrestViolation"}}}`
)

// Keap's published limits, reported in the quota headers.
const (
	productQuotaPerDay    = 150000
	productSpikePerSecond = 25
	tenantThrottlePerMin  = 10000
)

// Values of Request.ClientAuth: where a token request put its client credentials.
const (
	ClientAuthNone  = ""
	ClientAuthBasic = "basic"
	ClientAuthBody  = "body"
)

// Request is one request as the fake received it.
type Request struct {
	Time        time.Time
	Method      string
	Path        string
	Query       url.Values
	ContentType string
	// Form is the parsed form body of a /token request, nil otherwise.
	Form url.Values
	// Body is the raw body, cut at 64 KiB.
	Body                 []byte
	BasicUser, BasicPass string
	HasBasic             bool
	Bearer               string
	// ClientAuth is where a /token request's client credentials were read from:
	// ClientAuthBasic, ClientAuthBody or ClientAuthNone. Basic wins when both are sent.
	ClientAuth string
	// Status is the status written, 0 when the connection was dropped or the client went away.
	Status int
}

type faultRule struct {
	prefix     string
	remaining  int
	status     int
	body       []byte
	retryAfter string
}

type faultState struct {
	latency       time.Duration
	rules         []*faultRule
	drops         int
	rateLimit     int
	denyAuthorize bool
}

// quotaCounters count the requests that passed the gateway, for the headers and the rate limit.
type quotaCounters struct {
	dayStart    time.Time
	dayUsed     int
	secondStart time.Time
	secondUsed  int
}

// SetLatency delays every later request by d before it is handled. A request whose context ends
// first is abandoned with nothing written.
func (s *Server) SetLatency(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults.latency = d
}

// FailNext makes the next n requests whose path starts with path ("" = any) fail with status and
// body, before the endpoint sees them. Rules are consumed in the order they were added.
func (s *Server) FailNext(path string, n int, status int, body []byte) {
	s.addRule(&faultRule{prefix: path, remaining: n, status: status, body: slices.Clone(body)})
}

// ThrottleNext makes the next n requests whose path starts with path ("" = any) get 429 with
// body (nil: Throttle429QuotaNew). Retry-After is sent only when retryAfter is not "".
func (s *Server) ThrottleNext(path string, n int, retryAfter string, body []byte) {
	if body == nil {
		body = []byte(Throttle429QuotaNew)
	}
	s.addRule(&faultRule{
		prefix: path, remaining: n, status: http.StatusTooManyRequests,
		body: slices.Clone(body), retryAfter: retryAfter,
	})
}

func (s *Server) addRule(r *faultRule) {
	if r.remaining <= 0 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults.rules = append(s.faults.rules, r)
}

// DropAfterProcessNext makes the next n POST /token requests be processed in full (tokens
// rotate) and then have their TCP connection closed without a response.
func (s *Server) DropAfterProcessNext(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults.drops += n
}

// SetRateLimit turns on a spike arrest of perSecond requests per clock second, shared by /token
// and /crm/rest. Requests over it get 429 with Throttle429SpikeApigee. 0 turns it off.
func (s *Server) SetRateLimit(perSecond int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults.rateLimit = max(perSecond, 0)
}

// SetDenyAuthorize makes the authorize endpoint redirect with error=access_denied.
func (s *Server) SetDenyAuthorize(deny bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults.denyAuthorize = deny
}

// ClearFaults turns off every knob: latency, pending failures, throttles and drops, the rate
// limit and the deny switch.
func (s *Server) ClearFaults() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = faultState{}
}

// Requests returns a copy of the request log, oldest first.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Request, len(s.log))
	for i, e := range s.log {
		out[i] = *e
	}
	return out
}

// TokenRequests returns the logged POST /token requests with that grant_type ("" = all).
func (s *Server) TokenRequests(grantType string) []Request {
	var out []Request
	for _, r := range s.Requests() {
		if r.Method == http.MethodPost && r.Path == "/token" &&
			(grantType == "" || r.Form.Get("grant_type") == grantType) {
			out = append(out, r)
		}
	}
	return out
}

// ResetLog empties the request log.
func (s *Server) ResetLog() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.log = nil
}

func (s *Server) logRequest(r *http.Request, body []byte) *Request {
	e := &Request{
		Time:        s.now(),
		Method:      r.Method,
		Path:        r.URL.Path,
		Query:       r.URL.Query(),
		ContentType: r.Header.Get("Content-Type"),
		Body:        slices.Clone(body[:min(len(body), maxLoggedBody)]),
	}
	e.BasicUser, e.BasicPass, e.HasBasic = r.BasicAuth()
	e.Bearer = bearerToken(r)
	if r.URL.Path == "/token" && strings.HasPrefix(e.ContentType, "application/x-www-form-urlencoded") {
		e.Form, _ = url.ParseQuery(string(body))
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.log = append(s.log, e)
	return e
}

func bearerToken(r *http.Request) string {
	scheme, token, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return ""
	}
	return strings.TrimSpace(token)
}

// recorder records the status in the log entry before the status can reach the client, so a test
// that has its response always finds the status in the log.
type recorder struct {
	http.ResponseWriter
	s     *Server
	entry *Request
	wrote bool
}

func (rw *recorder) WriteHeader(code int) {
	if !rw.wrote {
		rw.wrote = true
		rw.s.mu.Lock()
		rw.entry.Status = code
		rw.s.mu.Unlock()
	}
	rw.ResponseWriter.WriteHeader(code)
}

func (rw *recorder) Write(b []byte) (int, error) {
	if !rw.wrote {
		rw.WriteHeader(http.StatusOK)
	}
	return rw.ResponseWriter.Write(b)
}

func (rw *recorder) Unwrap() http.ResponseWriter { return rw.ResponseWriter }

// entryOf returns the log entry of the request w answers. A bare writer gets a throwaway entry.
func entryOf(w http.ResponseWriter) *Request {
	if rw, ok := w.(*recorder); ok {
		return rw.entry
	}
	return &Request{}
}

// abortConnection closes the client's connection without a response. Without a hijackable
// connection (HTTP/2, httptest.ResponseRecorder) it panics with http.ErrAbortHandler, which
// net/http turns into a reset stream or closed connection.
func abortConnection(w http.ResponseWriter) {
	hj, ok := w.(http.Hijacker)
	if rw, isRec := w.(*recorder); isRec {
		hj, ok = rw.ResponseWriter.(http.Hijacker)
	}
	if !ok {
		panic(http.ErrAbortHandler)
	}
	conn, _, err := hj.Hijack()
	if err != nil {
		panic(http.ErrAbortHandler)
	}
	_ = conn.Close()
}

// wait applies the latency knob. It reports false when the client gave up first.
func (s *Server) wait(r *http.Request) bool {
	s.mu.Lock()
	d := s.faults.latency
	s.mu.Unlock()
	if d <= 0 {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-r.Context().Done():
		return false
	}
}

// injectFault answers r from the first matching FailNext/ThrottleNext rule, if any.
func (s *Server) injectFault(w http.ResponseWriter, r *http.Request) bool {
	s.mu.Lock()
	var rule *faultRule
	for i, fr := range s.faults.rules {
		if strings.HasPrefix(r.URL.Path, fr.prefix) {
			rule = fr
			if fr.remaining--; fr.remaining == 0 {
				s.faults.rules = slices.Delete(s.faults.rules, i, i+1)
			}
			break
		}
	}
	var h http.Header
	if rule != nil && isAPIPath(r.URL.Path) {
		h = s.quotaHeadersLocked(s.accessTenantLocked(bearerToken(r), false))
	}
	s.mu.Unlock()
	if rule == nil {
		return false
	}
	copyHeader(w.Header(), h)
	if rule.retryAfter != "" {
		w.Header().Set("Retry-After", rule.retryAfter)
	}
	writeRaw(w, rule.status, rule.body)
	return true
}

// takeDrop consumes one armed DropAfterProcessNext, reporting whether there was one.
func (s *Server) takeDrop() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.faults.drops <= 0 {
		return false
	}
	s.faults.drops--
	return true
}

func isAPIPath(p string) bool {
	return p == "/token" || p == "/crm/rest" || strings.HasPrefix(p, "/crm/rest/")
}

// admit is the gateway in front of /token and /crm/rest: it counts the request against the
// quotas, enforces the spike arrest and sets the quota headers.
func (s *Server) admit(w http.ResponseWriter, r *http.Request) bool {
	s.mu.Lock()
	t := s.accessTenantLocked(bearerToken(r), false)
	s.rollWindowsLocked(t)
	limited := s.faults.rateLimit > 0 && s.quota.secondUsed >= s.faults.rateLimit
	if !limited {
		s.quota.secondUsed++
		s.quota.dayUsed++
		if t != nil {
			t.minuteUsed++
		}
	}
	h := s.quotaHeadersLocked(t)
	s.mu.Unlock()

	copyHeader(w.Header(), h)
	if limited {
		writeRaw(w, http.StatusTooManyRequests, []byte(Throttle429SpikeApigee))
		return false
	}
	return true
}

func (s *Server) rollWindowsLocked(t *tenant) {
	now := s.now()
	if sec := now.Truncate(time.Second); !sec.Equal(s.quota.secondStart) {
		s.quota.secondStart, s.quota.secondUsed = sec, 0
	}
	if day := startOfUTCDay(now); !day.Equal(s.quota.dayStart) {
		s.quota.dayStart, s.quota.dayUsed = day, 0
	}
	if t != nil {
		if m := now.Truncate(time.Minute); !m.Equal(t.minuteStart) {
			t.minuteStart, t.minuteUsed = m, 0
		}
	}
}

func startOfUTCDay(t time.Time) time.Time {
	y, m, d := t.UTC().Date()
	return time.Date(y, m, d, 0, 0, 0, 0, time.UTC)
}

// quotaHeadersLocked builds Keap's quota headers from the counters. Tenant headers are left out
// when the tenant is unknown (no or unknown bearer token, /token).
func (s *Server) quotaHeadersLocked(t *tenant) http.Header {
	s.rollWindowsLocked(t)
	h := http.Header{}
	itoa := strconv.Itoa
	dayExpiry := startOfUTCDay(s.now()).Add(24 * time.Hour)
	h.Set("x-keap-product-quota-limit", itoa(productQuotaPerDay))
	h.Set("x-keap-product-quota-time-unit", "day")
	h.Set("x-keap-product-quota-interval", "1")
	h.Set("x-keap-product-quota-used", itoa(s.quota.dayUsed))
	h.Set("x-keap-product-quota-available", itoa(max(productQuotaPerDay-s.quota.dayUsed, 0)))
	h.Set("x-keap-product-quota-expiry-time", strconv.FormatInt(dayExpiry.UnixMilli(), 10))

	spike := productSpikePerSecond
	if s.faults.rateLimit > 0 {
		spike = s.faults.rateLimit
	}
	h.Set("x-keap-product-throttle-limit", itoa(spike))
	h.Set("x-keap-product-throttle-time-unit", "second")
	h.Set("x-keap-product-throttle-interval", "1")
	h.Set("x-keap-product-throttle-used", itoa(s.quota.secondUsed))
	h.Set("x-keap-product-throttle-available", itoa(max(spike-s.quota.secondUsed, 0)))

	if t != nil {
		h.Set("x-keap-tenant-id", t.name)
		h.Set("x-keap-tenant-throttle-limit", itoa(tenantThrottlePerMin))
		h.Set("x-keap-tenant-throttle-time-unit", "minute")
		h.Set("x-keap-tenant-throttle-interval", "1")
		h.Set("x-keap-tenant-throttle-used", itoa(t.minuteUsed))
		h.Set("x-keap-tenant-throttle-available", itoa(max(tenantThrottlePerMin-t.minuteUsed, 0)))
	}
	return h
}

func copyHeader(dst, src http.Header) {
	for k, v := range src {
		dst[k] = v
	}
}
