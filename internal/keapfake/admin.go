package keapfake

import (
	"encoding/json"
	"io"
	"net/http"
	"strconv"
)

// AdminPrefix is where the fake's control endpoints live, for processes that
// drive `keapsync fake-keap` from outside (make demo, benchmarks). They are
// the HTTP twins of PutContact, DeleteContact, Deliver and SetHookStatus,
// act on the default tenant, skip the request log and fault knobs, and exist
// only on the fake.
const AdminPrefix = "/_fake/"

func (s *Server) adminRoutes() *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /_fake/contacts", func(w http.ResponseWriter, r *http.Request) {
		var c map[string]any
		if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&c); err != nil || c == nil {
			writeMessage(w, http.StatusBadRequest, "body must be a JSON object")
			return
		}
		writeJSON(w, http.StatusOK, map[string]int64{"id": s.PutContact(c)})
	})
	mux.HandleFunc("DELETE /_fake/contacts/{id}", func(w http.ResponseWriter, r *http.Request) {
		id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
		if err != nil {
			writeMessage(w, http.StatusBadRequest, "id must be an integer")
			return
		}
		s.DeleteContact(id)
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("POST /_fake/deliver", func(w http.ResponseWriter, r *http.Request) {
		n, err := s.Deliver(r.Context())
		if err != nil {
			writeMessage(w, http.StatusInternalServerError, err.Error())
			return
		}
		writeJSON(w, http.StatusOK, map[string]int{"posts": n, "pending": s.PendingDeliveries()})
	})
	mux.HandleFunc("GET /_fake/hooks", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, s.Hooks())
	})
	mux.HandleFunc("POST /_fake/hooks/{key}/status", func(w http.ResponseWriter, r *http.Request) {
		var body struct {
			Status string `json:"status"`
		}
		if err := json.NewDecoder(io.LimitReader(r.Body, 1<<10)).Decode(&body); err != nil ||
			(body.Status != HookVerified && body.Status != HookUnverified && body.Status != HookInactive) {
			writeMessage(w, http.StatusBadRequest, `body must be {"status":"Verified|Unverified|Inactive"}`)
			return
		}
		s.SetHookStatus(r.PathValue("key"), body.Status)
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("/_fake/", func(w http.ResponseWriter, _ *http.Request) {
		writeMessage(w, http.StatusNotFound, "Not Found")
	})
	return mux
}
