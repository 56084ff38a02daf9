-- Identity: organizations, users, their memberships with a role, API tokens, and the audit
-- log of every change. `id` columns are internal keys; the API shows `uid` and `name` only.

CREATE TABLE organizations (
    id          bigserial PRIMARY KEY,
    uid         text NOT NULL UNIQUE DEFAULT replace(gen_random_uuid()::text, '-', ''),
    name        text NOT NULL UNIQUE,
    description text NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz,
    deleted_at  timestamptz
);

-- Users are global: one account can be a member of several organizations.
CREATE TABLE users (
    id          bigserial PRIMARY KEY,
    uid         text NOT NULL UNIQUE DEFAULT replace(gen_random_uuid()::text, '-', ''),
    name        text NOT NULL UNIQUE,
    email       text NOT NULL DEFAULT '',
    first_name  text NOT NULL DEFAULT '',
    last_name   text NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz,
    deleted_at  timestamptz
);

-- An empty email means "none given"; two real addresses may not collide, whatever the case.
CREATE UNIQUE INDEX users_email_unique ON users (lower(email)) WHERE email <> '';

CREATE TABLE members (
    organization_id bigint NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    user_id         bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    role            text NOT NULL CHECK (role IN ('admin', 'developer', 'guest')),
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz,
    PRIMARY KEY (organization_id, user_id)
);

CREATE INDEX members_by_user ON members (user_id);

-- The secret is never stored: only its SHA-256 (the token carries 256 random bits, so a
-- fast hash is enough and lets a request find its token by an index lookup) and a short
-- prefix that helps a person recognise a token in a list.
CREATE TABLE api_tokens (
    id              bigserial PRIMARY KEY,
    uid             text NOT NULL UNIQUE DEFAULT replace(gen_random_uuid()::text, '-', ''),
    organization_id bigint NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    user_id         bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name            text NOT NULL,
    description     text NOT NULL DEFAULT '',
    token_hash      bytea NOT NULL UNIQUE CHECK (octet_length(token_hash) = 32),
    token_prefix    text NOT NULL,
    scopes          text[] NOT NULL DEFAULT '{}',
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz,
    expired_at      timestamptz,
    last_used_at    timestamptz,
    -- Revoked tokens stay, so their holder gets "revoked on ..." rather than "unknown".
    revoked_at      timestamptz
);

-- A name is unique among a user's live tokens in an organization; a revoked token frees it.
CREATE UNIQUE INDEX api_tokens_name_unique ON api_tokens (organization_id, user_id, name)
    WHERE revoked_at IS NULL;
CREATE INDEX api_tokens_by_owner ON api_tokens (organization_id, user_id, id DESC);

-- Who changed what. The actor's and token's names are copied, so a record still reads
-- correctly after the user or token is gone.
CREATE TABLE audit_log (
    id              bigserial PRIMARY KEY,
    at              timestamptz NOT NULL DEFAULT clock_timestamp(),
    organization_id bigint REFERENCES organizations (id) ON DELETE CASCADE,
    actor_user_id   bigint REFERENCES users (id) ON DELETE SET NULL,
    actor_name      text NOT NULL,
    token_uid       text,
    token_name      text,
    request_id      text,
    action          text NOT NULL,
    resource_type   text NOT NULL,
    resource        text NOT NULL,
    details         jsonb NOT NULL DEFAULT '{}'::jsonb
);

CREATE INDEX audit_log_newest ON audit_log (organization_id, id DESC);
CREATE INDEX audit_log_by_action ON audit_log (organization_id, action, id DESC);
