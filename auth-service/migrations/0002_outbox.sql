-- Transactional outbox: events written in the same transaction as the state they announce,
-- published by the relay, marked published only after the broker's confirm.
CREATE TABLE outbox (
    id           uuid        PRIMARY KEY,           -- the event id (AMQP message_id)
    pattern      text        NOT NULL,              -- routing key, e.g. user.created
    payload      jsonb       NOT NULL,              -- the event's `data`
    traceparent  text,                              -- W3C trace context of the request
    created_at   timestamptz NOT NULL DEFAULT now(),
    published_at timestamptz,
    attempts     integer     NOT NULL DEFAULT 0,    -- failed publish attempts
    last_error   text
);

-- What the relay scans: unpublished rows, oldest first. Published rows stay out of it.
CREATE INDEX outbox_unpublished ON outbox (created_at, id) WHERE published_at IS NULL;
