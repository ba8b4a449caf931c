-- The users projection: one row per user id, written only by the `user.created` consumer
-- (src/projection.rs) and read by `get_user`. No other service reads or writes it.
CREATE TABLE users (
    id         uuid        PRIMARY KEY,
    email      text        NOT NULL,
    name       text        NOT NULL,
    -- The account's creation time as the event states it. Together with event_id it is also
    -- the row's version: an event replaces the row only when its (created_at, event_id) is
    -- greater, so duplicates and out-of-order deliveries converge on the same row.
    created_at timestamptz NOT NULL,
    -- The AMQP message_id of the event that wrote the row ('' when its publisher set none).
    event_id   text        NOT NULL DEFAULT '',
    -- When this service last wrote the row: diagnostics only, never part of the ordering.
    updated_at timestamptz NOT NULL DEFAULT now()
);
