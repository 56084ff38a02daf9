-- The deployer: deployments, their immutable revisions, and organization secrets.
--
-- A deployment is unique by name in its organization (what the API addresses) and by
-- (cluster, namespace, name) (the BentoDeployment it is on a cluster). Every change of what
-- it runs is a new revision; a revision's content never changes afterwards (a trigger
-- refuses it), only what the cluster said about it (the generation the BentoDeployment had
-- when the revision was written to it, and when a build was asked for).

CREATE TABLE deployments (
    id                bigserial PRIMARY KEY,
    uid               text NOT NULL UNIQUE DEFAULT replace(gen_random_uuid()::text, '-', ''),
    organization      text NOT NULL,
    name              text NOT NULL,
    cluster           text NOT NULL,
    namespace         text NOT NULL,
    created_by        text,
    status            text NOT NULL,
    status_reason     text,
    status_message    text,
    status_updated_at timestamptz,
    -- {"key": "value", ...}, filtered by containment like the registry's labels.
    labels            jsonb NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(labels) = 'object'),
    urls              jsonb NOT NULL DEFAULT '[]'::jsonb CHECK (jsonb_typeof(urls) = 'array'),
    created_at        timestamptz NOT NULL DEFAULT clock_timestamp(),
    updated_at        timestamptz,
    UNIQUE (organization, name),
    UNIQUE (cluster, namespace, name)
);

CREATE INDEX deployments_newest ON deployments (organization, created_at DESC, id DESC);
CREATE INDEX deployments_by_cluster ON deployments (cluster, namespace, name);
CREATE INDEX deployments_labels ON deployments USING gin (labels jsonb_path_ops);

CREATE TABLE revisions (
    id                 bigserial PRIMARY KEY,
    uid                text NOT NULL UNIQUE DEFAULT replace(gen_random_uuid()::text, '-', ''),
    deployment_id      bigint NOT NULL REFERENCES deployments (id) ON DELETE CASCADE,
    number             integer NOT NULL CHECK (number >= 1),
    bento              jsonb NOT NULL,
    config             jsonb NOT NULL,
    spec               jsonb NOT NULL,
    source             text NOT NULL CHECK (source IN ('api', 'cluster', 'rollback')),
    created_by         text,
    created_at         timestamptz NOT NULL DEFAULT clock_timestamp(),
    -- metadata.generation of the BentoDeployment once this revision was applied (or read).
    kube_generation    bigint,
    build_requested_at timestamptz,
    -- Set by build.failed for the bento this revision runs: image-build-failed until a
    -- new revision.
    build_failed_reason text,
    UNIQUE (deployment_id, number)
);

CREATE FUNCTION revisions_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.bento IS DISTINCT FROM OLD.bento OR NEW.config IS DISTINCT FROM OLD.config
       OR NEW.spec IS DISTINCT FROM OLD.spec OR NEW.number IS DISTINCT FROM OLD.number
       OR NEW.source IS DISTINCT FROM OLD.source
       OR NEW.deployment_id IS DISTINCT FROM OLD.deployment_id THEN
        RAISE EXCEPTION 'revisions are immutable';
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER revisions_immutable BEFORE UPDATE ON revisions
    FOR EACH ROW EXECUTE FUNCTION revisions_immutable();

CREATE TABLE org_secrets (
    id           bigserial PRIMARY KEY,
    uid          text NOT NULL UNIQUE DEFAULT replace(gen_random_uuid()::text, '-', ''),
    organization text NOT NULL,
    name         text NOT NULL,
    description  text NOT NULL DEFAULT '',
    -- [{"key": ..., "value": ...}]: written to a Kubernetes Secret in each namespace a
    -- deployment using it runs in; values never leave the deployer otherwise.
    items        jsonb NOT NULL CHECK (jsonb_typeof(items) = 'array'),
    created_by   text,
    created_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    updated_at   timestamptz,
    UNIQUE (organization, name)
);
