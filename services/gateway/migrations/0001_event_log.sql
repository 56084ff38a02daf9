-- Every lifecycle event the gateway has seen, for the API, the dashboard and SSE replay.
CREATE TABLE event_log (
    event_id    text PRIMARY KEY,
    event_type  text NOT NULL,
    source      text NOT NULL,
    subject     text,
    occurred_at timestamptz NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    stream_seq  bigint NOT NULL,
    payload     jsonb NOT NULL
);

CREATE INDEX event_log_by_seq ON event_log (stream_seq DESC);
CREATE INDEX event_log_by_type ON event_log (event_type, stream_seq DESC);
