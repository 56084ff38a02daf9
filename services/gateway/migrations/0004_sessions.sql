-- Passwords and browser sessions (the dashboard signs people in through these).
-- A password is kept only as an Argon2id hash (argon2-cffi's encoded form, parameters included).
ALTER TABLE users ADD COLUMN password_hash text, ADD COLUMN password_set_at timestamptz;

-- A session is a second kind of bearer secret, like an API token: only its SHA-256 is kept.
-- One signed in with an API token lives no longer than the token (and carries its scopes).
CREATE TABLE sessions (
    id              bigserial PRIMARY KEY,
    uid             text NOT NULL UNIQUE DEFAULT replace(gen_random_uuid()::text, '-', ''),
    secret_hash     bytea NOT NULL UNIQUE CHECK (octet_length(secret_hash) = 32),
    organization_id bigint NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    user_id         bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    token_id        bigint REFERENCES api_tokens (id) ON DELETE CASCADE,
    method          text NOT NULL CHECK (method IN ('password', 'api_token')),
    user_agent      text NOT NULL DEFAULT '',
    created_at      timestamptz NOT NULL DEFAULT now(),
    expires_at      timestamptz NOT NULL,
    last_seen_at    timestamptz NOT NULL DEFAULT now(),
    revoked_at      timestamptz
);

CREATE INDEX sessions_by_user ON sessions (user_id);

-- Failed password sign-ins, per user name (known or not), for throttling. Old rows are
-- removed as new ones are written.
CREATE TABLE login_failures (
    id       bigserial PRIMARY KEY,
    username text NOT NULL,
    at       timestamptz NOT NULL DEFAULT clock_timestamp()
);

CREATE INDEX login_failures_by_name ON login_failures (username, at DESC);

-- The first admin's one-time setup code (hashed), until they set a password.
CREATE TABLE password_setups (
    user_id     bigint PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    secret_hash bytea NOT NULL UNIQUE CHECK (octet_length(secret_hash) = 32),
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL
);
