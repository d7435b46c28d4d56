-- name: AccountUpsertConnected
INSERT INTO keapsync.accounts (id, tenant, status)
VALUES ($1, $2, 'connected')
ON CONFLICT (id) DO UPDATE
SET tenant = EXCLUDED.tenant, status = 'connected', status_reason = NULL, updated_at = now();

-- name: AccountGet
SELECT id, tenant, status, status_reason, created_at, updated_at
FROM keapsync.accounts
WHERE id = $1;

-- name: AccountSetStatus
UPDATE keapsync.accounts
SET status = $2, status_reason = $3, updated_at = now()
WHERE id = $1;

-- name: AccountHealthList
SELECT account_id, tenant, status, status_reason, version, access_expires_at, refresh_issued_at,
       refreshed_at, refresh_failures, retry_after, last_error, next_refresh_at, next_refresh_state, health
FROM keapsync.account_health
ORDER BY account_id;

-- name: AccountHealthGet
SELECT account_id, tenant, status, status_reason, version, access_expires_at, refresh_issued_at,
       refreshed_at, refresh_failures, retry_after, last_error, next_refresh_at, next_refresh_state, health
FROM keapsync.account_health
WHERE account_id = $1;

-- name: EventInsert
INSERT INTO keapsync.token_events (account_id, kind, detail)
VALUES ($1, $2, $3)
RETURNING id;

-- name: EventGet
SELECT id, account_id, kind, detail, created_at
FROM keapsync.token_events
WHERE id = $1;

-- name: EventList
SELECT id, account_id, kind, detail, created_at
FROM keapsync.token_events
WHERE account_id = $1
ORDER BY id DESC
LIMIT $2;

-- name: Notify
SELECT pg_notify('keapsync_events', $1);

-- name: AccountHealthCounts
SELECT health, count(*) AS n
FROM keapsync.account_health
GROUP BY health;
