-- name: HookEndpointGet
SELECT e.account_id, e.secret_hash, e.key_id, e.secret_ct,
       coalesce(array_agg(s.event_key ORDER BY s.event_key) FILTER (WHERE s.event_key IS NOT NULL), '{}') AS event_keys
FROM keapsync.hook_endpoints e
LEFT JOIN keapsync.hook_subscriptions s ON s.account_id = e.account_id
WHERE e.account_id = $1
GROUP BY e.account_id;

-- name: HookEndpointDelete
DELETE FROM keapsync.hook_endpoints WHERE account_id = $1;

-- name: HookSubscriptionDeleteAll
DELETE FROM keapsync.hook_subscriptions WHERE account_id = $1;

-- name: HookEndpointInsert
INSERT INTO keapsync.hook_endpoints (account_id, secret_hash, key_id, secret_ct)
VALUES ($1, $2, $3, $4)
ON CONFLICT (account_id) DO NOTHING;

-- name: HookSubscriptionUpsert
INSERT INTO keapsync.hook_subscriptions (account_id, keap_key, event_key, status, last_checked_at)
VALUES ($1, $2, $3, $4, now())
ON CONFLICT (account_id, keap_key) DO UPDATE
SET event_key = EXCLUDED.event_key, status = EXCLUDED.status, last_checked_at = now(), updated_at = now();

-- name: HookSubscriptionList
SELECT account_id, keap_key, event_key, status, last_checked_at, last_verify_at, last_verify_result, created_at
FROM keapsync.hook_subscriptions
WHERE account_id = $1
ORDER BY event_key, keap_key;

-- name: HookSubscriptionDelete
DELETE FROM keapsync.hook_subscriptions WHERE account_id = $1 AND keap_key = $2;

-- name: HookSubscriptionRecordVerify
UPDATE keapsync.hook_subscriptions
SET status = $3, last_verify_at = now(), last_verify_result = $4, last_checked_at = now(), updated_at = now()
WHERE account_id = $1 AND keap_key = $2;

-- name: HookAccounts
SELECT DISTINCT s.account_id
FROM keapsync.hook_subscriptions s
JOIN keapsync.accounts a ON a.id = s.account_id
WHERE a.status = 'connected'
ORDER BY s.account_id;

-- name: InboxInsert
INSERT INTO keapsync.webhook_events (account_id, event_key, object_type, object_id, occurred_at, object_key)
SELECT $1, $2, $3, u.object_id, u.occurred_at, u.object_key
FROM unnest($4::bigint[], $5::timestamptz[], $6::jsonb[]) AS u (object_id, occurred_at, object_key)
ON CONFLICT ON CONSTRAINT webhook_events_dedup DO NOTHING
RETURNING id;

-- name: InboxGet
SELECT id, account_id, event_key, object_type, object_id, occurred_at, object_key, status, attempts
FROM keapsync.webhook_events
WHERE id = $1;

-- name: InboxFinish
UPDATE keapsync.webhook_events
SET status = $2, last_error = $3, attempts = attempts + 1, processed_at = now()
WHERE id = $1;

-- name: InboxAttempt
UPDATE keapsync.webhook_events
SET attempts = attempts + 1, last_error = $2
WHERE id = $1;

-- name: ContactUpsert
INSERT INTO public.keap_contacts AS c
    (account_id, keap_id, email, given_name, family_name, company_name, data, keap_updated_at, synced_at, deleted_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, now(), NULL)
ON CONFLICT (account_id, keap_id) DO UPDATE
SET email = EXCLUDED.email,
    given_name = EXCLUDED.given_name,
    family_name = EXCLUDED.family_name,
    company_name = EXCLUDED.company_name,
    data = EXCLUDED.data,
    keap_updated_at = EXCLUDED.keap_updated_at,
    synced_at = now(),
    deleted_at = NULL
WHERE (c.keap_updated_at IS NULL OR EXCLUDED.keap_updated_at > c.keap_updated_at)
  AND (c.deleted_at IS NULL OR EXCLUDED.keap_updated_at > c.deleted_at);

-- name: ContactSoftDelete
UPDATE public.keap_contacts
SET deleted_at = $3, synced_at = now()
WHERE account_id = $1 AND keap_id = $2 AND deleted_at IS NULL;

-- name: ObjectUpsert
INSERT INTO public.keap_objects AS o (account_id, object_type, object_id, event_key, data, occurred_at)
VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (account_id, object_type, object_id) DO UPDATE
SET event_key = EXCLUDED.event_key, data = EXCLUDED.data, occurred_at = EXCLUDED.occurred_at, synced_at = now()
WHERE o.occurred_at IS NULL OR EXCLUDED.occurred_at IS NULL OR EXCLUDED.occurred_at >= o.occurred_at;

-- name: SyncedCounts
SELECT (SELECT count(*) FROM public.keap_contacts) AS contacts,
       (SELECT count(*) FROM public.keap_objects) AS objects;
