-- Token vault: accounts, their encrypted OAuth tokens, pending authorization
-- states and the audit trail. Everything lives in schema keapsync, never in
-- public, because Supabase exposes public through its REST API.

CREATE TABLE keapsync.accounts (
    id            text PRIMARY KEY CHECK (id ~ '^[A-Za-z0-9._-]{1,128}$'),
    -- Keap app name from the token scope ("full|ab123.infusionsoft.com" -> ab123.infusionsoft.com).
    tenant        text,
    status        text NOT NULL CHECK (status IN ('connected', 'reauth_required', 'disconnected')),
    status_reason text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);

-- Token versions come from one sequence so a version is never reused, even
-- when an account is disconnected and connected again: refresh_token jobs
-- are unique by (account_id, version).
CREATE SEQUENCE keapsync.token_version_seq;

-- One row per connected account. Ciphertexts are AES-256-GCM sealed with the
-- key named by key_id and bound (AAD) to account id and field name, so a
-- ciphertext copied to another row or column does not decrypt.
CREATE TABLE keapsync.oauth_tokens (
    account_id          text PRIMARY KEY REFERENCES keapsync.accounts (id) ON DELETE CASCADE,
    key_id              text NOT NULL,
    access_token_ct     bytea NOT NULL,
    refresh_token_ct    bytea NOT NULL,
    access_expires_at   timestamptz NOT NULL,
    -- When the current refresh token was issued; Keap kills one unused for 45 days.
    refresh_issued_at   timestamptz NOT NULL,
    scope               text NOT NULL,
    -- Moves forward with every write of new tokens; refresh_token jobs are keyed by it.
    version             bigint NOT NULL DEFAULT nextval('keapsync.token_version_seq'),
    refresh_failures    integer NOT NULL DEFAULT 0,
    -- After a transient failure, callers get 503 until then instead of calling Keap again.
    retry_after         timestamptz,
    -- The last failure may have reached Keap (timeout, reset, 5xx): Keap may
    -- already have rotated the stored refresh token.
    last_failure_ambiguous boolean NOT NULL DEFAULT false,
    last_error          text,
    refreshed_at        timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX oauth_tokens_refresh_issued_at ON keapsync.oauth_tokens (refresh_issued_at);

-- Authorization states: only the SHA-256 of the state is stored.
CREATE TABLE keapsync.oauth_states (
    state_hash  bytea PRIMARY KEY,
    account_id  text NOT NULL CHECK (account_id ~ '^[A-Za-z0-9._-]{1,128}$'),
    created_at  timestamptz NOT NULL,
    expires_at  timestamptz NOT NULL,
    consumed_at timestamptz
);

CREATE INDEX oauth_states_expires_at ON keapsync.oauth_states (expires_at);

-- Audit trail of everything that happened to an account's connection. Never
-- holds a secret: detail is written from typed Go values, not from Keap bodies.
CREATE TABLE keapsync.token_events (
    id         bigserial PRIMARY KEY,
    account_id text NOT NULL,
    kind       text NOT NULL,
    detail     jsonb NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX token_events_account ON keapsync.token_events (account_id, id DESC);
