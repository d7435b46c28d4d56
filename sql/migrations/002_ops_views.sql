-- Ops views: which accounts are unhealthy, why, and what runs next.
-- River's tables live in the same schema (keapsync.river_job).

CREATE VIEW keapsync.account_health AS
SELECT
    a.id AS account_id,
    a.tenant,
    a.status,
    a.status_reason,
    t.version,
    t.access_expires_at,
    t.refresh_issued_at,
    t.refreshed_at,
    t.refresh_failures,
    t.retry_after,
    t.last_error,
    next_job.scheduled_at AS next_refresh_at,
    next_job.state        AS next_refresh_state,
    CASE
        WHEN a.status <> 'connected' THEN a.status
        WHEN t.account_id IS NULL THEN 'no_tokens'
        WHEN t.access_expires_at < now() THEN 'access_expired'
        WHEN t.refresh_issued_at < now() - interval '30 days' THEN 'refresh_token_aging'
        WHEN t.refresh_failures > 0 THEN 'refresh_failing'
        WHEN next_job.id IS NULL THEN 'no_refresh_scheduled'
        ELSE 'ok'
    END AS health
FROM keapsync.accounts a
LEFT JOIN keapsync.oauth_tokens t ON t.account_id = a.id
LEFT JOIN LATERAL (
    SELECT j.id, j.scheduled_at, j.state::text AS state
    FROM keapsync.river_job j
    WHERE j.kind = 'refresh_token'
      AND j.args ->> 'account_id' = a.id
      AND (j.args ->> 'version')::bigint = t.version
      AND j.state IN ('available', 'scheduled', 'retryable', 'running', 'pending')
    ORDER BY j.scheduled_at
    LIMIT 1
) next_job ON true;

CREATE INDEX IF NOT EXISTS river_job_refresh_account
    ON keapsync.river_job ((args ->> 'account_id'))
    WHERE kind = 'refresh_token';
