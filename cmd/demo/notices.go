package main

import (
	"crypto/hmac"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/keapsync/keapsync/internal/notify"
)

// notice is one notification the demo's receiver took.
type notice struct {
	ID, Type, Account string
	Verified          bool
}

// receiver stands in for the operator's EVENTS_WEBHOOK_URL: it checks each
// POST's Standard Webhooks signature and hands the notice on.
type receiver struct {
	url, secret string
	got         chan notice
	srv         *http.Server
}

func startReceiver() (*receiver, error) {
	key := randomBytes(32)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	r := &receiver{url: "http://" + ln.Addr().String() + "/keapsync-events",
		secret: "whsec_" + base64.StdEncoding.EncodeToString(key), got: make(chan notice, 16)}
	r.srv = &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(io.LimitReader(req.Body, 1<<20))
		id := req.Header.Get("webhook-id")
		ts, _ := strconv.ParseInt(req.Header.Get("webhook-timestamp"), 10, 64)
		want := notify.Sign(key, id, time.Unix(ts, 0), body)
		var msg struct {
			Type string `json:"type"`
			Data struct {
				AccountID string `json:"account_id"`
			} `json:"data"`
		}
		_ = json.Unmarshal(body, &msg)
		r.got <- notice{ID: id, Type: msg.Type, Account: msg.Data.AccountID,
			Verified: hmac.Equal([]byte(want), []byte(req.Header.Get("webhook-signature")))}
		w.WriteHeader(http.StatusNoContent)
	})}
	go func() { _ = r.srv.Serve(ln) }()
	return r, nil
}

// expect waits for the notice of type typ and prints it.
func (d *demo) expect(r *receiver, typ string) error {
	timeout := time.After(15 * time.Second)
	for {
		select {
		case n := <-r.got:
			if n.Type != typ {
				continue
			}
			if !n.Verified {
				return fmt.Errorf("notification %s arrived with a signature that does not verify", n.ID)
			}
			d.detail("EVENTS_WEBHOOK_URL got %s for %s (webhook-id %s, signature verified)", n.Type, n.Account, n.ID)
			return nil
		case <-timeout:
			return fmt.Errorf("no %s notification within 15 s", typ)
		}
	}
}
