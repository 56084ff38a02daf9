-- The builder's builds: one row per attempt at an image of a bento version, and its logs.
--
-- A build is identified by its content-derived image tag: the same bento content with the
-- same build configuration gets the same tag, so at most one build per (organization,
-- bento, tag, namespace) is pending or building at a time (the partial unique index), and
-- a succeeded one is reused instead of built again.
--
-- Logs live here, not in the object store: the builder holds no S3 credentials (it reads
-- bentos through presigned URLs), build output is small (a few thousand lines, capped by
-- EKIBEN_BUILDER_LOG_MAX_LINES), and a log read while a build runs is one index range scan
-- (`seq > $after`), which is what the gateway's streaming /logs endpoint polls.

CREATE TABLE builds (
    id              text PRIMARY KEY,
    organization    text NOT NULL,
    bento_name      text NOT NULL,
    bento_version   text NOT NULL,
    status          text NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'building', 'succeeded', 'failed')),
    trigger         text NOT NULL CHECK (trigger IN ('push', 'manual', 'deployment')),
    reason          text,
    message         text,
    image_repository text NOT NULL,
    image_tag       text NOT NULL,
    -- What the tag was derived from: the archive's sha256 (or a hash of the version's
    -- manifest and size when the uploader computed none) and the build configuration.
    content_digest  text NOT NULL,
    digest          text CHECK (digest IS NULL OR digest LIKE 'sha256:%'),
    attempts        integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    force           boolean NOT NULL DEFAULT false,
    backend         text NOT NULL,
    namespace       text NOT NULL,
    -- The BentoRequest generation this build is for: a failed build is retried only for
    -- another generation (a spec change) or a forced rebuild.
    generation      bigint,
    requested_by    text,
    -- The BentoRequest's `ekiben.dev/rebuild` annotation this build answered, if any.
    rebuild_token   text,
    log_tail        jsonb NOT NULL DEFAULT '[]'::jsonb,
    created_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    started_at      timestamptz,
    finished_at     timestamptz,
    updated_at      timestamptz
);

CREATE UNIQUE INDEX builds_one_active
    ON builds (organization, bento_name, bento_version, image_tag, namespace)
    WHERE status IN ('pending', 'building');
CREATE INDEX builds_newest ON builds (organization, created_at DESC, id DESC);
CREATE INDEX builds_by_bento
    ON builds (organization, bento_name, bento_version, created_at DESC, id DESC);
CREATE INDEX builds_by_status ON builds (organization, status, created_at DESC, id DESC);
-- The sweep that (re)writes BentoRequests of builds not finished.
CREATE INDEX builds_unfinished ON builds (created_at) WHERE status IN ('pending', 'building');

CREATE TABLE build_logs (
    build_id text NOT NULL REFERENCES builds (id) ON DELETE CASCADE,
    seq      bigint NOT NULL,
    line     text NOT NULL,
    PRIMARY KEY (build_id, seq)
);
