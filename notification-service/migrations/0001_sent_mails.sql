-- One row per user.created event whose welcome mail the SMTP server accepted.
--
-- A row becomes visible only when the transaction that claimed the event commits, and that
-- happens only after the SMTP server accepted the mail (see src/sent_mails.rs): a committed
-- row therefore always means "mailed", and its primary key is what makes a redelivered or
-- duplicated event send nothing.
CREATE TABLE sent_mails (
    -- The AMQP message_id of the event, or the id derived from the user id when a peer sent none.
    event_id   TEXT        PRIMARY KEY,
    user_id    UUID        NOT NULL,
    recipient  TEXT        NOT NULL,
    -- The Message-ID header the mail carried, without angle brackets.
    message_id TEXT        NOT NULL,
    -- When the event was claimed, then when the SMTP server accepted the mail.
    claimed_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    sent_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- A welcome is once per user: a second user.created about the same user, even under another
-- event id, conflicts here and sends nothing either.
CREATE UNIQUE INDEX sent_mails_user_id ON sent_mails (user_id);
