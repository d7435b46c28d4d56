package httpapi

import (
	"net/http"

	"github.com/gorilla/mux"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// routes is the whole API, with each route's middleware in the order a
// request meets it. Everything passes recoverer, logging and the body limit.
func (s *Server) routes() http.Handler {
	notFound := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeError(w, r, &apiError{Code: "not_found", Message: "no such endpoint"})
	})
	notAllowed := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeError(w, r, &apiError{Code: "method_not_allowed", Message: "method not allowed on this endpoint"})
	})
	// SkipClean: no 301 to a "cleaned" path (which also bypassed every
	// middleware); odd paths get a JSON 404 or 400 instead.
	r := mux.NewRouter().SkipClean(true)
	r.NotFoundHandler, r.MethodNotAllowedHandler = notFound, notAllowed
	r.Use(s.routeInfo)

	r.Handle("/healthz", s.handleHealthz()).Methods(http.MethodGet, http.MethodHead)
	r.Handle("/readyz", s.handleReadyz()).Methods(http.MethodGet, http.MethodHead)
	r.Handle("/metrics", promhttp.HandlerFor(s.gatherer, promhttp.HandlerOpts{})).Methods(http.MethodGet)

	// /oauth/*: the browser's callback is rate limited per client address;
	// the internal endpoints need the bearer, and only requests that fail it
	// count against the address's limit, so a flood of bad requests from
	// behind a shared proxy cannot starve authenticated callers. (No
	// subrouter: gorilla/mux subrouters answer 404 where 405 is due.)
	r.Handle("/oauth/callback", s.rateLimit(s.handleCallback())).Methods(http.MethodGet)
	r.Handle("/oauth/initiate", s.bearer(s.handleInitiate())).Methods(http.MethodPost)
	r.Handle("/oauth/token/{account}", s.bearer(s.handleToken())).Methods(http.MethodGet)
	r.Handle("/oauth/refresh/{account}", s.bearer(s.handleRefresh())).Methods(http.MethodPost)
	r.Handle("/oauth/accounts", s.bearer(s.handleAccounts())).Methods(http.MethodGet)
	r.Handle("/oauth/accounts/{account}", s.bearer(s.handleAccount())).Methods(http.MethodGet)
	r.Handle("/oauth/accounts/{account}", s.bearer(s.handleDisconnect())).Methods(http.MethodDelete)

	// Keap's REST hooks: the secret in the path is the only credential Keap
	// can carry. Hook management is internal.
	r.Handle("/webhooks/keap/{account}/{secret}", s.handleWebhook()).Methods(http.MethodPost)
	r.Handle("/hooks/{account}", s.bearer(s.handleSubscribe())).Methods(http.MethodPost)
	r.Handle("/hooks/{account}", s.bearer(s.handleListHooks())).Methods(http.MethodGet)
	r.Handle("/hooks/{account}", s.bearer(s.handleUnsubscribe())).Methods(http.MethodDelete)

	return s.recoverer(s.logRequests(s.limitBody(r)))
}
