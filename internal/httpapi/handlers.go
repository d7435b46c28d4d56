package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"html/template"
	"io"
	"net/http"
	"net/url"
	"time"

	"github.com/gorilla/mux"

	"github.com/keapsync/keapsync/internal/store"
	"github.com/keapsync/keapsync/internal/tokens"
)

func (s *Server) handleHealthz() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
}

func (s *Server) handleReadyz() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := s.readyCheck(r.Context()); err != nil {
			s.Logger.WarnContext(r.Context(), "not ready", "error", err)
			writeError(w, r, &apiError{Code: "not_ready", Message: "database unreachable or schema not current"})
			return
		}
		writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
	})
}

// accountID reads and validates {account}.
func accountID(r *http.Request) (string, error) {
	id := mux.Vars(r)["account"]
	if !ValidAccountID(id) {
		return "", &apiError{Code: "invalid_account_id", Message: "account id must match [A-Za-z0-9._-]{1,128}"}
	}
	return id, nil
}

// decodeJSON reads the whole body into v: one JSON value of v's shape. With
// emptyOK an empty body leaves v as it is. A body that cannot be read is
// invalid_body (413 when too large), anything else wrong invalid_json.
func decodeJSON(r *http.Request, v any, emptyOK bool) error {
	b, err := io.ReadAll(r.Body)
	if err != nil {
		return bodyError(err)
	}
	if emptyOK && len(bytes.TrimSpace(b)) == 0 {
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(v); err != nil {
		return &apiError{Code: "invalid_json", Message: "request body must be a JSON object of the documented shape"}
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return &apiError{Code: "invalid_json", Message: "request body must hold one JSON object"}
	}
	return nil
}

func (s *Server) handleInitiate() http.Handler {
	type request struct {
		AccountID *string `json:"keap_account_id"`
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req request
		if err := decodeJSON(r, &req, false); err != nil {
			writeError(w, r, err)
			return
		}
		if req.AccountID == nil || !ValidAccountID(*req.AccountID) {
			writeError(w, r, &apiError{Code: "invalid_account_id", Message: "keap_account_id is required and must match [A-Za-z0-9._-]{1,128}"})
			return
		}
		a, err := s.Tokens.Initiate(r.Context(), *req.AccountID)
		if err != nil {
			writeError(w, r, err)
			return
		}
		writeJSON(w, http.StatusCreated, a)
	})
}

var callbackPage = template.Must(template.New("ok").Parse(`<!doctype html>
<html><head><meta charset="utf-8"><title>Keap connected</title></head>
<body><h1>Keap account connected</h1><p>Account <code>{{.}}</code> is connected to keapsync. You can close this window.</p></body></html>
`))

func (s *Server) handleCallback() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		id, err := s.Tokens.Callback(r.Context(), tokens.CallbackParams{
			Code: q.Get("code"), State: q.Get("state"), Scope: q.Get("scope"),
			Error: q.Get("error"), ErrorDescription: q.Get("error_description"),
		})
		if err != nil {
			writeError(w, r, err)
			return
		}
		if s.OAuthSuccessURL != "" {
			u, err := url.Parse(s.OAuthSuccessURL)
			if err == nil {
				v := u.Query()
				v.Set("keap_account_id", id)
				u.RawQuery = v.Encode()
				http.Redirect(w, r, u.String(), http.StatusFound)
				return
			}
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		_ = callbackPage.Execute(w, id)
	})
}

type tokenResponse struct {
	AccessToken string    `json:"access_token"`
	TokenType   string    `json:"token_type"`
	ExpiresAt   time.Time `json:"expires_at"`
}

func (s *Server) handleToken() http.Handler {
	return s.tokenHandler(s.Tokens.Get)
}

func (s *Server) handleRefresh() http.Handler {
	return s.tokenHandler(s.Tokens.Refresh)
}

func (s *Server) tokenHandler(get func(ctx context.Context, id string) (tokens.Token, error)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, err := accountID(r)
		if err != nil {
			writeError(w, r, err)
			return
		}
		tok, err := get(r.Context(), id)
		if err != nil {
			writeError(w, r, err)
			return
		}
		writeJSON(w, http.StatusOK, tokenResponse{AccessToken: tok.AccessToken.Reveal(), TokenType: "bearer", ExpiresAt: tok.ExpiresAt.UTC()})
	})
}

func (s *Server) handleAccounts() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		list, err := s.Store.ListHealth(r.Context(), s.Pool)
		if err != nil {
			writeError(w, r, err)
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"accounts": list})
	})
}

func (s *Server) handleAccount() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, err := accountID(r)
		if err != nil {
			writeError(w, r, err)
			return
		}
		h, err := s.Store.GetHealth(r.Context(), s.Pool, id)
		if err != nil {
			writeError(w, r, notFound(err))
			return
		}
		events, err := s.Store.ListEvents(r.Context(), s.Pool, id, 20)
		if err != nil {
			writeError(w, r, err)
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"account": h, "events": events})
	})
}

func (s *Server) handleDisconnect() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, err := accountID(r)
		if err != nil {
			writeError(w, r, err)
			return
		}
		disconnect := func() error { return s.Tokens.Disconnect(r.Context(), id) }
		if s.Hooks != nil {
			err = s.Hooks.Disconnect(r.Context(), id, disconnect) // hooks at Keap go first
		} else {
			err = disconnect()
		}
		if err != nil {
			writeError(w, r, err)
			return
		}
		writeJSON(w, http.StatusOK, map[string]string{"account_id": id, "status": "disconnected"})
	})
}

// notFound turns the store's ErrNotFound into the API's account_not_found.
func notFound(err error) error {
	if errors.Is(err, store.ErrNotFound) {
		return tokens.ErrNotFound
	}
	return err
}
