-- The SHA-256 of a version's archive, when whoever streamed it computed one (the gateway
-- does for proxied uploads); carried in the pushed event for consumers that verify bytes.
ALTER TABLE versions ADD COLUMN sha256 text CHECK (sha256 ~ '^[0-9a-f]{64}$');
