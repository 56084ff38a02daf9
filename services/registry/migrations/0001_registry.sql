-- The registry: bento and model repositories, their versions, the models each bento uses,
-- and the queue of object-store deletions that runs after a commit.
--
-- Sizing: GET one version is a unique-index lookup; list pages are index scans in the
-- requested order (per repository or across an organization), label filters use GIN
-- containment, name/tag substrings use trigram indexes when pg_trgm can be installed
-- (a plain filter over the ordered scan otherwise).

CREATE TABLE repositories (
    id           bigserial PRIMARY KEY,
    uid          text NOT NULL UNIQUE DEFAULT replace(gen_random_uuid()::text, '-', ''),
    kind         text NOT NULL CHECK (kind IN ('bento', 'model')),
    organization text NOT NULL,
    name         text NOT NULL,
    description  text NOT NULL DEFAULT '',
    -- {"key": "value", ...}: one value per key, so a filter is `labels @> '{"k": "v"}'`.
    labels       jsonb NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(labels) = 'object'),
    created_by   text,
    created_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    updated_at   timestamptz,
    UNIQUE (kind, organization, name)
);

CREATE INDEX repositories_newest ON repositories (kind, organization, created_at DESC, id DESC);
CREATE INDEX repositories_by_creator
    ON repositories (kind, organization, created_by, created_at DESC, id DESC);
CREATE INDEX repositories_labels ON repositories USING gin (labels jsonb_path_ops);

CREATE TABLE versions (
    id              bigserial PRIMARY KEY,
    uid             text NOT NULL UNIQUE DEFAULT replace(gen_random_uuid()::text, '-', ''),
    repository_id   bigint NOT NULL REFERENCES repositories (id) ON DELETE CASCADE,
    -- Copies of the repository's identity, which never changes: organization-wide lists,
    -- tag search and events need no join.
    kind            text NOT NULL CHECK (kind IN ('bento', 'model')),
    organization    text NOT NULL,
    repository      text NOT NULL,
    version         text NOT NULL,
    description     text NOT NULL DEFAULT '',
    manifest        jsonb,
    labels          jsonb NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(labels) = 'object'),
    size_bytes      bigint NOT NULL DEFAULT 0 CHECK (size_bytes >= 0),
    bentoml_version text,
    build_at        timestamptz NOT NULL,
    created_by      text,
    created_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    updated_at      timestamptz,
    upload_status   text NOT NULL DEFAULT 'pending'
        CHECK (upload_status IN ('pending', 'uploading', 'success', 'failed')),
    upload_started_at      timestamptz,
    upload_finished_at     timestamptz,
    upload_finished_reason text NOT NULL DEFAULT '',
    -- The S3 multipart upload that is open for this version, if any.
    upload_id       text,
    object_key      text NOT NULL UNIQUE,
    UNIQUE (kind, organization, repository, version)
);

-- Newest first inside a repository; the partial one finds the latest successful upload.
CREATE INDEX versions_newest ON versions (repository_id, created_at DESC, id DESC);
CREATE INDEX versions_newest_success ON versions (repository_id, created_at DESC, id DESC)
    WHERE upload_status = 'success';
CREATE INDEX versions_by_build ON versions (repository_id, build_at DESC, id DESC);
CREATE INDEX versions_by_size ON versions (repository_id, size_bytes DESC, id DESC);
-- The same orders across every repository of an organization.
CREATE INDEX versions_org_newest ON versions (kind, organization, created_at DESC, id DESC);
CREATE INDEX versions_org_by_build ON versions (kind, organization, build_at DESC, id DESC);
CREATE INDEX versions_org_by_size ON versions (kind, organization, size_bytes DESC, id DESC);
CREATE INDEX versions_by_creator
    ON versions (kind, organization, created_by, created_at DESC, id DESC);
CREATE INDEX versions_labels ON versions USING gin (labels jsonb_path_ops);
-- Versions stuck in an upload, for the sweep of abandoned uploads.
CREATE INDEX versions_uploading ON versions (upload_started_at) WHERE upload_status = 'uploading';

-- The models a bento version uses, from its manifest (`models` and
-- `services[].models[].tag`). By tag, not by row: a bento may name a model that was never
-- pushed, and a model that a bento uses cannot be deleted.
CREATE TABLE bento_models (
    bento_id      bigint NOT NULL REFERENCES versions (id) ON DELETE CASCADE,
    organization  text NOT NULL,
    model         text NOT NULL,
    model_version text NOT NULL,
    PRIMARY KEY (bento_id, model, model_version)
);

CREATE INDEX bento_models_by_model ON bento_models (organization, model, model_version);

-- Object-store work queued in the transaction that made it necessary and done after the
-- commit by a background task, retried with backoff until it succeeds: an object to
-- delete (upload_id NULL), or a multipart upload to abort (upload_id set).
CREATE TABLE blob_deletions (
    id          bigserial PRIMARY KEY,
    object_key  text NOT NULL,
    upload_id   text,
    reason      text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    not_before  timestamptz NOT NULL DEFAULT now(),
    attempts    integer NOT NULL DEFAULT 0,
    last_error  text
);

CREATE INDEX blob_deletions_due ON blob_deletions (not_before, id);
CREATE INDEX blob_deletions_by_key ON blob_deletions (object_key);

-- Substring search on names and tags. pg_trgm is a trusted extension (a database owner
-- may install it; it goes to `public`, shared by every schema), but where it cannot be
-- installed the search still works, unindexed.
DO $$
BEGIN
    CREATE EXTENSION IF NOT EXISTS pg_trgm SCHEMA public;
    CREATE INDEX repositories_name_trgm ON repositories USING gin (name gin_trgm_ops);
    CREATE INDEX versions_tag_trgm
        ON versions USING gin ((repository || ':' || version) gin_trgm_ops);
EXCEPTION WHEN OTHERS THEN
    RAISE NOTICE 'registry: no trigram indexes (%)', SQLERRM;
END $$;
