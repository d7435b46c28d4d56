-- name: AdvisoryXactLock
SELECT pg_advisory_xact_lock($1);

-- name: TokenGet
SELECT t.account_id, a.tenant, a.status, t.key_id, t.access_token_ct, t.refresh_token_ct,
       t.access_expires_at, t.refresh_issued_at, t.scope, t.version, t.refresh_failures,
       t.retry_after, t.last_failure_ambiguous
FROM keapsync.oauth_tokens t
JOIN keapsync.accounts a ON a.id = t.account_id
WHERE t.account_id = $1;

-- name: TokenUpsert
INSERT INTO keapsync.oauth_tokens AS t
    (account_id, key_id, access_token_ct, refresh_token_ct, access_expires_at, refresh_issued_at, scope, refreshed_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $6)
ON CONFLICT (account_id) DO UPDATE
SET key_id = EXCLUDED.key_id,
    access_token_ct = EXCLUDED.access_token_ct,
    refresh_token_ct = EXCLUDED.refresh_token_ct,
    access_expires_at = EXCLUDED.access_expires_at,
    refresh_issued_at = EXCLUDED.refresh_issued_at,
    scope = EXCLUDED.scope,
    version = nextval('keapsync.token_version_seq'),
    refresh_failures = 0,
    retry_after = NULL,
    last_failure_ambiguous = false,
    last_error = NULL,
    refreshed_at = EXCLUDED.refreshed_at,
    updated_at = now()
RETURNING version;

-- name: TokenRotate
UPDATE keapsync.oauth_tokens
SET key_id = $3,
    access_token_ct = $4,
    refresh_token_ct = $5,
    access_expires_at = $6,
    refresh_issued_at = $7,
    scope = $8,
    version = nextval('keapsync.token_version_seq'),
    refresh_failures = 0,
    retry_after = NULL,
    last_failure_ambiguous = false,
    last_error = NULL,
    refreshed_at = $7,
    updated_at = now()
WHERE account_id = $1 AND version = $2
RETURNING version;

-- name: TokenRecordFailure
UPDATE keapsync.oauth_tokens
SET refresh_failures = refresh_failures + 1,
    retry_after = $3,
    last_failure_ambiguous = $4,
    last_error = $5,
    updated_at = now()
WHERE account_id = $1 AND version = $2
RETURNING refresh_failures;

-- name: TokenDelete
DELETE FROM keapsync.oauth_tokens WHERE account_id = $1;

-- name: StateInsert
INSERT INTO keapsync.oauth_states (state_hash, account_id, created_at, expires_at)
VALUES ($1, $2, $3, $4);

-- name: StateConsume
UPDATE keapsync.oauth_states
SET consumed_at = $2
WHERE state_hash = $1 AND consumed_at IS NULL
RETURNING account_id, expires_at;

-- name: StateExists
SELECT EXISTS (SELECT 1 FROM keapsync.oauth_states WHERE state_hash = $1);

-- name: StatePurge
DELETE FROM keapsync.oauth_states WHERE expires_at < $1;

-- name: SweepCandidates
SELECT t.account_id, t.version, t.access_expires_at, t.refresh_issued_at,
       NOT EXISTS (
           SELECT 1 FROM keapsync.river_job j
           WHERE j.kind = 'refresh_token'
             AND j.args ->> 'account_id' = t.account_id
             AND (j.args ->> 'version')::bigint = t.version
             AND j.state IN ('available', 'scheduled', 'retryable', 'running', 'pending')
       ) AS unscheduled
FROM keapsync.oauth_tokens t
JOIN keapsync.accounts a ON a.id = t.account_id
WHERE a.status = 'connected'
  AND (t.access_expires_at < $1
       OR t.refresh_issued_at < $2
       OR NOT EXISTS (
           SELECT 1 FROM keapsync.river_job j
           WHERE j.kind = 'refresh_token'
             AND j.args ->> 'account_id' = t.account_id
             AND (j.args ->> 'version')::bigint = t.version
             AND j.state IN ('available', 'scheduled', 'retryable', 'running', 'pending')))
ORDER BY t.account_id;

-- name: RefreshJobsDropStale
-- Jobs for versions older than the current one would only wake up to do
-- nothing; a running one is left to finish.
DELETE FROM keapsync.river_job
WHERE kind = 'refresh_token'
  AND args ->> 'account_id' = $1
  AND (args ->> 'version')::bigint < $2
  AND state IN ('available', 'scheduled', 'retryable', 'pending');
