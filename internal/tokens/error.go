package tokens

import (
	"errors"
	"time"
)

// Error codes. They are part of the HTTP contract (the `error` field) and
// map to statuses in one table in internal/httpapi.
const (
	CodeAccountNotFound   = "account_not_found"
	CodeReauthRequired    = "reauthorization_required"
	CodeKeapUnavailable   = "keap_unavailable"
	CodeStateMissing      = "state_missing"
	CodeStateUnknown      = "state_unknown"
	CodeStateExpired      = "state_expired"
	CodeStateReplayed     = "state_replayed"
	CodeAuthorizationDeny = "authorization_denied"
	CodeAuthorizationFail = "authorization_failed"
	CodeCodeMissing       = "code_missing"
	CodeCodeRejected      = "code_rejected"
	CodeExchangeFailed    = "code_exchange_failed"
	CodeTenantMismatch    = "tenant_mismatch"
)

// Error is a failure with a stable code that callers may show to users.
// Message never contains a token.
type Error struct {
	Code       string
	Message    string
	RetryAfter time.Duration // for CodeKeapUnavailable
	Err        error         // cause, for logs and errors.Is
}

func (e *Error) Error() string {
	if e.Err != nil {
		return e.Code + ": " + e.Message + ": " + e.Err.Error()
	}
	return e.Code + ": " + e.Message
}

func (e *Error) Unwrap() error { return e.Err }

// ErrorCode returns err's code, or "" when it is not an *Error.
func ErrorCode(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return ""
}

func errf(code, msg string, cause error) *Error {
	return &Error{Code: code, Message: msg, Err: cause}
}

// ErrNotFound is the error for an account with no tokens.
var ErrNotFound = &Error{Code: CodeAccountNotFound, Message: "no connected account with that id"}

// ErrReauthRequired is the error for an account Keap no longer accepts.
var ErrReauthRequired = &Error{Code: CodeReauthRequired, Message: "keap rejected the stored refresh token: the account must be authorized again"}
