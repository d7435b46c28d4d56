// Package keapfake is an in-process imitation of Keap (Infusionsoft): its OAuth server, the parts
// of its REST API keapsync uses (contacts, REST hooks) and its REST-hook deliveries. Tests mount
// it with httptest.NewServer; `make demo` and the benchmarks use it in place of Keap.
//
// The fake follows WIRE.md in the shared Keap notes (shared/keap). It is meant to fail the way Keap fails, so a client
// that survives the fake has a fair chance against Keap.
//
// # Faithful
//
//   - Paths: GET /app/oauth/authorize, POST /token, and /crm/rest/v1/... for contacts and hooks, so
//     a client can point its auth, token and API base URLs at the fake.
//   - Authorize auto-approves: it redirects with a single-use code (valid 10 minutes, bound to the
//     redirect_uri), the state unchanged and scope "full|<tenant>.infusionsoft.com". SetDenyAuthorize
//     makes it redirect with error=access_denied instead.
//   - The token endpoint takes only application/x-www-form-urlencoded. Any other body gets 400
//     {"error":"invalid_request","error_description":"response_type or grant_type is required"}.
//     Credentials may come in the body or as HTTP Basic; the request log records which.
//   - Refresh tokens rotate strictly: a successful refresh kills the refresh token it used at once,
//     with no grace window. The access token minted with it stays valid until its own expiry.
//     A refresh token dies RefreshTTL (45 days) after it was issued, and Keap's misleading errors
//     are copied: wrong client credentials on a refresh get 400 invalid_request "Invalid Refresh
//     Token", and on a code exchange they get 401 invalid_client.
//   - Every response from /token and /crm/rest carries Keap's x-keap-product-quota-*,
//     x-keap-product-throttle-* and (once the tenant is known from the bearer token)
//     x-keap-tenant-* headers. The numbers come from real counters.
//   - SetRateLimit turns on a per-second spike arrest for /token and /crm/rest. It answers 429
//     with Apigee's SpikeArrestViolation body and no Retry-After. The quota and the spike arrest
//     are shared by every tenant, as Keap shares them per client id.
//   - Creating a hook (or calling /verify) performs the X-Hook-Secret handshake while the
//     request is still in flight, and the mutex is not held, so the receiver may call back into
//     the fake. Only a 2xx answer that echoes the secret verifies the hook. delayedVerify
//     completes a handshake later.
//   - A change is queued at once for each Verified hook subscribed to its event key. Events
//     during an Unverified or Inactive period are lost, as at Keap. Deliver sends the queued
//     events in batches of up to 1,000 object keys, one event key per POST, unsigned, with ids
//     only. After 4 failed attempts in a row, or any 410, the hook becomes Inactive and its queue
//     is dropped.
//   - DropAfterProcessNext processes a token request (rotating the tokens) and then closes the
//     TCP connection without answering. This is the "lost response" of CASES.md.
//
// # Simplified
//
//   - No users, no consent page and no HTTPS. Any client_id other than Options.ClientID is
//     unknown. Redirect URIs are checked against Options.RedirectURIs only when that list is set.
//   - Tenants live in one process. Options.Tenant is the default tenant. Server.Tenant(name)
//     reaches the others, and SetAuthorizeTenant picks the app the fake user authorizes.
//   - Contacts are free-form JSON objects. PutContact merges fields like a PATCH and only stamps
//     id, date_created and last_updated. Only v1 GET by id is served; v2 and search are not.
//   - Hook deliveries happen when the test calls Deliver, not 30–60 s after the change. Retries
//     are the next Deliver call, not a schedule of delays.
//   - A failed handshake leaves a hook Unverified, even one that was Inactive before.
//   - Changing a hook's hookUrl with PUT redoes the handshake. Keap's behaviour there is not
//     documented.
//   - 401 bodies are {"message":"Unauthorized"}, and other REST errors are {"message":"..."}.
//     Keap's gateway uses several shapes, so a client should key on the status.
//   - Without a rate limit, x-keap-product-throttle-* report Keap's nominal 25/s and the
//     requests counted in the current second, but nothing is enforced.
package keapfake
