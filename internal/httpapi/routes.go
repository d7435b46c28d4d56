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
	r := mux.NewRouter()
	r.NotFoundHandler, r.MethodNotAllowedHandler = notFound, notAllowed

	r.Handle("/healthz", s.handleHealthz()).Methods(http.MethodGet)
	r.Handle("/readyz", s.handleReadyz()).Methods(http.MethodGet)
	r.Handle("/metrics", promhttp.HandlerFor(s.gatherer, promhttp.HandlerOpts{})).Methods(http.MethodGet)

	// /oauth/*: per-address rate limit, then bearer auth except for the
	// browser's callback. (No subrouter: gorilla/mux subrouters answer 404
	// where 405 is due.)
	r.Handle("/oauth/callback", s.rateLimit(s.handleCallback())).Methods(http.MethodGet)
	r.Handle("/oauth/initiate", s.rateLimit(s.bearer(s.handleInitiate()))).Methods(http.MethodPost)
	r.Handle("/oauth/token/{account}", s.rateLimit(s.bearer(s.handleToken()))).Methods(http.MethodGet)
	r.Handle("/oauth/refresh/{account}", s.rateLimit(s.bearer(s.handleRefresh()))).Methods(http.MethodPost)
	r.Handle("/oauth/accounts", s.rateLimit(s.bearer(s.handleAccounts()))).Methods(http.MethodGet)
	r.Handle("/oauth/accounts/{account}", s.rateLimit(s.bearer(s.handleAccount()))).Methods(http.MethodGet)
	r.Handle("/oauth/accounts/{account}", s.rateLimit(s.bearer(s.handleDisconnect()))).Methods(http.MethodDelete)

	// Keap's REST hooks: the secret in the path is the only credential Keap
	// can carry. Hook management is internal.
	r.Handle("/webhooks/keap/{account}/{secret}", s.handleWebhook()).Methods(http.MethodPost)
	r.Handle("/hooks/{account}", s.rateLimit(s.bearer(s.handleSubscribe()))).Methods(http.MethodPost)
	r.Handle("/hooks/{account}", s.rateLimit(s.bearer(s.handleListHooks()))).Methods(http.MethodGet)
	r.Handle("/hooks/{account}", s.rateLimit(s.bearer(s.handleUnsubscribe()))).Methods(http.MethodDelete)

	return s.recoverer(s.logRequests(s.limitBody(r)))
}
