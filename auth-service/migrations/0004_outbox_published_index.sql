-- What the relay prunes: published rows, oldest publication first (OUTBOX_RETENTION_SECS).
CREATE INDEX outbox_published ON outbox (published_at) WHERE published_at IS NOT NULL;
