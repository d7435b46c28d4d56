package httpapi

import (
	"encoding/json"
	"errors"
	"net/http"
	"strconv"

	"github.com/keapsync/keapsync/internal/hooks"
	"github.com/keapsync/keapsync/internal/keap"
	"github.com/keapsync/keapsync/internal/tokens"
)

// statusByCode maps every stable error code to its HTTP status: the one
// place where kinds become statuses.
var statusByCode = map[string]int{
	tokens.CodeAccountNotFound:   http.StatusNotFound,
	tokens.CodeReauthRequired:    http.StatusConflict,
	tokens.CodeKeapUnavailable:   http.StatusServiceUnavailable,
	tokens.CodeStateMissing:      http.StatusBadRequest,
	tokens.CodeStateUnknown:      http.StatusBadRequest,
	tokens.CodeStateExpired:      http.StatusGone,
	tokens.CodeStateReplayed:     http.StatusConflict,
	tokens.CodeAuthorizationDeny: http.StatusForbidden,
	tokens.CodeAuthorizationFail: http.StatusBadRequest,
	tokens.CodeCodeMissing:       http.StatusBadRequest,
	tokens.CodeCodeRejected:      http.StatusBadRequest,
	tokens.CodeExchangeFailed:    http.StatusBadGateway,
	tokens.CodeTenantMismatch:    http.StatusConflict,
	"invalid_json":               http.StatusBadRequest,
	"invalid_event_key":          http.StatusBadRequest,
	hooks.CodeUnknownEventKey:    http.StatusBadRequest,
	"invalid_object_keys":        http.StatusBadRequest,
	"invalid_object_id":          http.StatusBadRequest,
	"invalid_timestamp":          http.StatusBadRequest,
	"too_many_objects":           http.StatusBadRequest,
	"invalid_hook_secret":        http.StatusBadRequest,
	"invalid_body":               http.StatusBadRequest,
	"event_not_subscribed":       http.StatusBadRequest,
	"invalid_account_id":         http.StatusBadRequest,
	"unauthorized":               http.StatusUnauthorized,
	"body_too_large":             http.StatusRequestEntityTooLarge,
	"rate_limited":               http.StatusTooManyRequests,
	"not_found":                  http.StatusNotFound,
	"method_not_allowed":         http.StatusMethodNotAllowed,
	"not_ready":                  http.StatusServiceUnavailable,
	"keap_error":                 http.StatusBadGateway,
	"internal":                   http.StatusInternalServerError,
}

// apiError is an error that carries its code to the client.
type apiError struct {
	Code       string
	Message    string
	RetryAfter int // seconds, 0 = no header
}

func (e *apiError) Error() string { return e.Code + ": " + e.Message }

// toAPIError keeps the code and message of known errors; anything else is
// "internal" with a generic message, its detail only in the log.
func toAPIError(err error) *apiError {
	var ae *apiError
	if errors.As(err, &ae) {
		return ae
	}
	var te *tokens.Error
	if errors.As(err, &te) {
		out := &apiError{Code: te.Code, Message: te.Message}
		if te.RetryAfter > 0 {
			out.RetryAfter = max(1, int(te.RetryAfter.Seconds()+0.999))
		}
		return out
	}
	if ke, ok := keap.AsError(err); ok {
		if ke.Kind == keap.Permanent {
			return &apiError{Code: "keap_error", Message: ke.Error()}
		}
		return &apiError{Code: tokens.CodeKeapUnavailable, Message: ke.Error(), RetryAfter: max(1, int(ke.RetryAfter.Seconds()))}
	}
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return &apiError{Code: "body_too_large", Message: "request body exceeds " + strconv.FormatInt(mbe.Limit, 10) + " bytes"}
	}
	return &apiError{Code: "internal", Message: "internal error"}
}

func writeError(w http.ResponseWriter, r *http.Request, err error) {
	ae := toAPIError(err)
	status, ok := statusByCode[ae.Code]
	if !ok {
		status = http.StatusInternalServerError
	}
	if ae.RetryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(ae.RetryAfter))
	}
	if lw, ok := w.(*logWriter); ok && status >= 500 && ae.Code == "internal" {
		lw.err = err // logged once, by logRequests
	}
	writeJSON(w, status, map[string]string{"error": ae.Code, "message": ae.Message})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	// No HTML escaping: an authorization_url with "\u0026" for "&" cannot be
	// pasted into a browser or curl as it stands.
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(v)
}
