-- When an upload in progress counts as abandoned: the expiry of the last URL handed out
-- for it (single PUT, proxy target or multipart part) plus a grace period. A client can
-- no longer send bytes after that, so the janitor's sweep marks the version failed.
ALTER TABLE versions ADD COLUMN upload_deadline timestamptz;

-- Uploads already in progress keep the rule they started under (a day after the start).
UPDATE versions SET upload_deadline = upload_started_at + interval '1 day'
    WHERE upload_status = 'uploading';

DROP INDEX versions_uploading;
CREATE INDEX versions_upload_deadline ON versions (upload_deadline)
    WHERE upload_status = 'uploading';
