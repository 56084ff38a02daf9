-- Webhook subscriptions: endpoints, one delivery per endpoint and event, each attempt.

-- Signing secrets are stored encrypted (see services/gateway/events/secrets.py); when no
-- key is configured, one is generated and kept here.
CREATE TABLE webhook_keys (
    id         integer PRIMARY KEY CHECK (id = 1),
    key        bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE webhook_endpoints (
    id                bigserial PRIMARY KEY,
    uid               text NOT NULL UNIQUE DEFAULT replace(gen_random_uuid()::text, '-', ''),
    organization_id   bigint NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    url               text NOT NULL,
    -- Event type patterns (`bento.pushed`, `deployment.*`); empty: every type.
    types             text[] NOT NULL DEFAULT '{}',
    description       text NOT NULL DEFAULT '',
    secret_encrypted  bytea NOT NULL,
    enabled           boolean NOT NULL DEFAULT true,
    disabled_reason   text,
    disabled_at       timestamptz,
    -- Deliveries in a row that failed every attempt; a success resets it.
    failure_streak    integer NOT NULL DEFAULT 0,
    created_by        text NOT NULL,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz
);

CREATE INDEX webhook_endpoints_by_org ON webhook_endpoints (organization_id, id);

-- One row per endpoint x event: the exact body signed and sent (so a retry or a
-- redelivery sends the same bytes with the same webhook-id), and where it stands.
CREATE TABLE webhook_deliveries (
    id              bigserial PRIMARY KEY,
    uid             text NOT NULL UNIQUE DEFAULT replace(gen_random_uuid()::text, '-', ''),
    endpoint_id     bigint NOT NULL REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
    event_id        text NOT NULL,
    event_type      text NOT NULL,
    -- Deliveries of one endpoint with the same subject go out one at a time, in stream
    -- order; '' for an event without a subject.
    subject         text NOT NULL,
    stream_seq      bigint NOT NULL,
    webhook_id      text NOT NULL,
    body            text NOT NULL,
    status          text NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'succeeded', 'failed')),
    attempts        integer NOT NULL DEFAULT 0,
    -- Attempts left before the delivery fails; a redelivery grants a fresh budget.
    attempts_left   integer NOT NULL,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    -- Claimed by a worker until then (FOR UPDATE SKIP LOCKED, then a lease).
    leased_until    timestamptz,
    last_status_code integer,
    last_error      text,
    -- When the row was written, not when its transaction began (a batch waits for events).
    created_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    finished_at     timestamptz,
    UNIQUE (endpoint_id, event_id)
);

-- The claim walks due deliveries in this order and probes the next for each's head.
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at, id)
    WHERE status = 'pending';
CREATE INDEX webhook_deliveries_order
    ON webhook_deliveries (endpoint_id, subject, stream_seq, id)
    WHERE status = 'pending';
CREATE INDEX webhook_deliveries_by_endpoint ON webhook_deliveries (endpoint_id, id DESC);
CREATE INDEX webhook_deliveries_finished ON webhook_deliveries (finished_at)
    WHERE finished_at IS NOT NULL;

CREATE TABLE webhook_attempts (
    id            bigserial PRIMARY KEY,
    delivery_id   bigint NOT NULL REFERENCES webhook_deliveries (id) ON DELETE CASCADE,
    attempt       integer NOT NULL,
    at            timestamptz NOT NULL DEFAULT clock_timestamp(),
    status_code   integer,
    latency_ms    double precision NOT NULL,
    error         text,
    response_body text
);

CREATE INDEX webhook_attempts_by_delivery ON webhook_attempts (delivery_id, attempt);

CREATE FUNCTION webhook_deliveries_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify(TG_TABLE_SCHEMA || '_webhooks', '');
    RETURN NULL;
END $$;

CREATE TRIGGER webhook_deliveries_notify AFTER INSERT ON webhook_deliveries
    FOR EACH STATEMENT EXECUTE FUNCTION webhook_deliveries_notify();
