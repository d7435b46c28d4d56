-- REST hooks: per-account receiver secrets, Keap subscriptions, and the
-- durable inbox of deliveries. Synced Keap objects land in public.keap_*.

-- One receiver URL per account: PUBLIC_BASE_URL/webhooks/keap/{account}/{secret}.
-- The secret is compared by its SHA-256; a sealed copy (AES-GCM, bound to the
-- account) lets keapsync rebuild the URL when it subscribes more events.
CREATE TABLE keapsync.hook_endpoints (
    account_id  text PRIMARY KEY REFERENCES keapsync.accounts (id) ON DELETE CASCADE,
    secret_hash bytea NOT NULL,
    key_id      text NOT NULL,
    secret_ct   bytea NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- Subscriptions as created at Keap, with the status Keap last reported.
CREATE TABLE keapsync.hook_subscriptions (
    account_id       text NOT NULL REFERENCES keapsync.accounts (id) ON DELETE CASCADE,
    keap_key         text NOT NULL,
    event_key        text NOT NULL,
    status           text NOT NULL,
    last_checked_at  timestamptz,
    last_verify_at   timestamptz,
    last_verify_result text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (account_id, keap_key)
);

-- The inbox: one row per object key of a delivery, written before Keap gets
-- its 2xx. The dedup key makes a replayed delivery insert nothing. A key
-- without a timestamp is never a duplicate (NULLs are distinct): storing a
-- replay twice costs one idempotent fetch, while dedup on (id, NULL) would
-- drop every later change of that object.
CREATE TABLE keapsync.webhook_events (
    id           bigserial PRIMARY KEY,
    account_id   text NOT NULL,
    event_key    text NOT NULL,
    object_type  text NOT NULL,
    object_id    bigint NOT NULL,
    occurred_at  timestamptz,
    object_key   jsonb NOT NULL,
    status       text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'done', 'failed')),
    attempts     integer NOT NULL DEFAULT 0,
    last_error   text,
    received_at  timestamptz NOT NULL DEFAULT now(),
    processed_at timestamptz,
    CONSTRAINT webhook_events_dedup UNIQUE (account_id, event_key, object_id, occurred_at)
);

CREATE INDEX webhook_events_pending ON keapsync.webhook_events (account_id, received_at) WHERE status = 'pending';

-- Synced contacts. Written only from what Keap's API returned for the id,
-- never from a delivery body. keap_updated_at is Keap's last_updated: an
-- older version never overwrites a newer one; a deletion is a soft delete.
CREATE TABLE public.keap_contacts (
    account_id      text NOT NULL,
    keap_id         bigint NOT NULL,
    email           text,
    given_name      text,
    family_name     text,
    company_name    text,
    data            jsonb,
    keap_updated_at timestamptz,
    synced_at       timestamptz NOT NULL DEFAULT now(),
    deleted_at      timestamptz,
    PRIMARY KEY (account_id, keap_id)
);

-- Every other object type Keap notifies about, kept with its raw object key
-- so nothing Keap sends is dropped.
CREATE TABLE public.keap_objects (
    account_id  text NOT NULL,
    object_type text NOT NULL,
    object_id   bigint NOT NULL,
    event_key   text NOT NULL,
    data        jsonb NOT NULL,
    occurred_at timestamptz,
    synced_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (account_id, object_type, object_id)
);

-- Supabase exposes public through its REST API and by default grants new
-- tables there to anon and authenticated. Not these: RLS on, with no policy,
-- grants revoked; only service_role (and keapsync's own login) may touch them.
ALTER TABLE public.keap_contacts ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.keap_objects ENABLE ROW LEVEL SECURITY;
REVOKE ALL ON public.keap_contacts, public.keap_objects FROM PUBLIC;
REVOKE ALL ON SCHEMA keapsync FROM PUBLIC;

DO $$
DECLARE r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['anon', 'authenticated'] LOOP
        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
            EXECUTE format('REVOKE ALL ON public.keap_contacts, public.keap_objects FROM %I', r);
            EXECUTE format('REVOKE ALL ON SCHEMA keapsync FROM %I', r);
            EXECUTE format('REVOKE ALL ON ALL TABLES IN SCHEMA keapsync FROM %I', r);
            EXECUTE format('REVOKE ALL ON ALL SEQUENCES IN SCHEMA keapsync FROM %I', r);
            EXECUTE format('REVOKE ALL ON ALL FUNCTIONS IN SCHEMA keapsync FROM %I', r);
        END IF;
    END LOOP;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'service_role') THEN
        GRANT ALL ON public.keap_contacts, public.keap_objects TO service_role;
    END IF;
END
$$;
