package keap

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"syscall"
	"time"
)

// Kind says what a caller should do about a failed call to Keap.
type Kind int

const (
	// Transient: network trouble, timeouts, 5xx. Retry with backoff.
	Transient Kind = iota + 1
	// Throttled: 429. Retry after RetryAfter, or back off with jitter.
	Throttled
	// Permanent: Keap refused the request (invalid_grant, invalid_client,
	// invalid_request, other 4xx). Retrying the same request cannot help.
	Permanent
)

func (k Kind) String() string {
	switch k {
	case Transient:
		return "transient"
	case Throttled:
		return "throttled"
	case Permanent:
		return "permanent"
	}
	return "unknown"
}

// Error is a classified failure of a call to Keap.
type Error struct {
	Op          string        // "refresh", "code exchange", "get contact"...
	Kind        Kind          //
	Status      int           // HTTP status, 0 when no response arrived
	Code        string        // OAuth error code ("invalid_grant") or similar
	Description string        // Keap's description, truncated
	Message     string        // our words when there was no response
	RetryAfter  time.Duration // from Retry-After, 0 when absent
	// Ambiguous: the request may have reached Keap and been processed even
	// though no usable answer came back (timeout, reset, 5xx). For a refresh
	// that means the stored refresh token may already be dead.
	Ambiguous bool
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("keap ")
	b.WriteString(e.Op)
	b.WriteString(": ")
	if e.Status != 0 {
		fmt.Fprintf(&b, "%d", e.Status)
	}
	if e.Code != "" {
		b.WriteString(" " + e.Code)
	}
	if e.Description != "" {
		b.WriteString(": " + e.Description)
	}
	if e.Message != "" {
		if e.Status != 0 || e.Code != "" {
			b.WriteString(": ")
		}
		b.WriteString(e.Message)
	}
	return b.String()
}

// InvalidGrant reports whether Keap rejected the grant itself (the refresh
// token or code is dead), as opposed to our credentials or the network.
func (e *Error) InvalidGrant() bool { return e.Kind == Permanent && e.Code == "invalid_grant" }

// AsError unwraps err to an *Error when it is one.
func AsError(err error) (*Error, bool) {
	var e *Error
	ok := errors.As(err, &e)
	return e, ok
}

// transportError classifies an error that came with no HTTP response.
func transportError(op string, err error) *Error {
	e := &Error{Op: op, Kind: Transient, Ambiguous: true}
	var opErr *net.OpError
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		e.Message = "timed out waiting for keap"
	case errors.Is(err, context.Canceled):
		e.Message = "request cancelled"
	case errors.As(err, &opErr) && opErr.Op == "dial":
		// Nothing was sent, so nothing can have been processed.
		e.Message, e.Ambiguous = "cannot connect to keap", false
	case errors.Is(err, syscall.ECONNREFUSED):
		e.Message, e.Ambiguous = "connection refused", false
	default:
		e.Message = "connection failed before a response arrived"
	}
	return e
}
