package httpapi

import (
	"net/http"

	"github.com/gorilla/mux"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// routes is the whole API, with each route's middleware in the order a
// request meets it. Everything passes recoverer, logging and the body limit.
func (s *Server) routes() http.Handler {
	r := mux.NewRouter()
	r.NotFoundHandler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeError(w, r, &apiError{Code: "not_found", Message: "no such endpoint"})
	})
	r.MethodNotAllowedHandler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeError(w, r, &apiError{Code: "method_not_allowed", Message: "method not allowed on this endpoint"})
	})

	r.Handle("/healthz", s.handleHealthz()).Methods(http.MethodGet)
	r.Handle("/readyz", s.handleReadyz()).Methods(http.MethodGet)
	r.Handle("/metrics", promhttp.HandlerFor(s.gatherer, promhttp.HandlerOpts{})).Methods(http.MethodGet)

	oauth := r.PathPrefix("/oauth").Subrouter()
	oauth.Use(s.rateLimit)
	oauth.Handle("/callback", s.handleCallback()).Methods(http.MethodGet)
	oauth.Handle("/initiate", s.bearer(s.handleInitiate())).Methods(http.MethodPost)
	oauth.Handle("/token/{account}", s.bearer(s.handleToken())).Methods(http.MethodGet)
	oauth.Handle("/refresh/{account}", s.bearer(s.handleRefresh())).Methods(http.MethodPost)
	oauth.Handle("/accounts", s.bearer(s.handleAccounts())).Methods(http.MethodGet)
	oauth.Handle("/accounts/{account}", s.bearer(s.handleAccount())).Methods(http.MethodGet)
	oauth.Handle("/accounts/{account}", s.bearer(s.handleDisconnect())).Methods(http.MethodDelete)

	return s.recoverer(s.logRequests(s.limitBody(r)))
}
