-- Pruning after the retention period (see shared/outbox/relay.py) reads by age.
CREATE INDEX outbox_published ON outbox (published_at) WHERE published_at IS NOT NULL;
CREATE INDEX processed_events_by_age ON processed_events (processed_at);
