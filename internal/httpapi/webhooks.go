package httpapi

import (
	"errors"
	"io"
	"net/http"

	"github.com/gorilla/mux"

	"github.com/keapsync/keapsync/internal/hooks"
	"github.com/keapsync/keapsync/internal/inbox"
	"github.com/keapsync/keapsync/internal/keap"
)

var errNoEndpoint = &apiError{Code: "not_found", Message: "no such endpoint"}

// handleWebhook receives Keap's REST hooks: the verification handshake
// (echo X-Hook-Secret) and deliveries, stored durably before the 2xx. An
// unknown account and a wrong secret get the same 404.
func (s *Server) handleWebhook() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, secret := mux.Vars(r)["account"], mux.Vars(r)["secret"]
		if !ValidAccountID(id) || len(secret) > 128 {
			writeError(w, r, errNoEndpoint)
			return
		}
		ok, err := s.Hooks.VerifySecret(r.Context(), id, secret)
		if err != nil {
			writeError(w, r, err)
			return
		}
		if !ok {
			writeError(w, r, errNoEndpoint)
			return
		}
		body, err := io.ReadAll(r.Body)
		if err != nil {
			writeError(w, r, bodyError(err))
			return
		}
		if hs := r.Header.Get("X-Hook-Secret"); hs != "" {
			if len(hs) > 512 {
				writeError(w, r, &apiError{Code: "invalid_hook_secret", Message: "X-Hook-Secret is too long"})
				return
			}
			w.Header().Set("X-Hook-Secret", hs)
			writeJSON(w, http.StatusOK, map[string]string{"status": "verified"})
			return
		}
		d, err := inbox.Parse(body)
		var pe *inbox.ParseError
		if errors.As(err, &pe) {
			writeError(w, r, &apiError{Code: pe.Code, Message: pe.Message})
			return
		}
		subscribed, err := s.Hooks.Subscribed(r.Context(), id, d.EventKey)
		if err != nil {
			writeError(w, r, err)
			return
		}
		if !subscribed {
			// Keap only sends what a hook subscribed to; anything else was
			// not sent by Keap for this account.
			writeError(w, r, &apiError{Code: "event_not_subscribed", Message: "this account is not subscribed to " + d.EventKey})
			return
		}
		accepted, dups, err := s.Inbox.Ingest(r.Context(), id, d)
		if err != nil {
			writeError(w, r, err)
			return
		}
		writeJSON(w, http.StatusOK, map[string]int{"accepted": accepted, "duplicates": dups})
	})
}

// bodyError keeps the 413 of an oversized body; any other read failure
// (a broken chunked encoding, a client that stopped sending) is the
// client's fault, not ours.
func bodyError(err error) error {
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return err
	}
	return &apiError{Code: "invalid_body", Message: "the request body could not be read"}
}

func (s *Server) handleSubscribe() http.Handler {
	type request struct {
		Events []string `json:"events"`
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, err := accountID(r)
		if err != nil {
			writeError(w, r, err)
			return
		}
		req := request{}
		if err := decodeJSON(r, &req, true); err != nil {
			writeError(w, r, err)
			return
		}
		if len(req.Events) == 0 {
			req.Events = hooks.DefaultEvents
		}
		for _, ev := range req.Events {
			if !keap.EventKeyPattern.MatchString(ev) {
				writeError(w, r, &apiError{Code: "invalid_event_key", Message: "event keys look like contact.add"})
				return
			}
		}
		subs, err := s.Hooks.Subscribe(r.Context(), id, req.Events)
		if err != nil {
			writeError(w, r, err)
			return
		}
		writeJSON(w, http.StatusCreated, map[string]any{"subscriptions": subs})
	})
}

func (s *Server) handleListHooks() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, err := accountID(r)
		if err != nil {
			writeError(w, r, err)
			return
		}
		subs, err := s.Hooks.List(r.Context(), id)
		if err != nil {
			writeError(w, r, err)
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"subscriptions": subs})
	})
}

func (s *Server) handleUnsubscribe() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, err := accountID(r)
		if err != nil {
			writeError(w, r, err)
			return
		}
		n, err := s.Hooks.Unsubscribe(r.Context(), id)
		if err != nil {
			writeError(w, r, err)
			return
		}
		writeJSON(w, http.StatusOK, map[string]int{"removed": n})
	})
}
