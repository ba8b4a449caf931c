-- sent_mails becomes a claim and a record: a row is written, and committed, *before* the SMTP
-- conversation starts (state 'sending'), and turns 'sent' once the SMTP server accepted the
-- mail (see src/sent_mails.rs). No transaction is held while SMTP runs any more, so a database
-- fault during a send can no longer roll a sent mail's record back.
--
-- Every row written by 0001 is a mail that was accepted (a row was only visible after the
-- 250), so existing rows become 'sent', attempt 1, with no owner.
ALTER TABLE sent_mails
    -- 'sending': an attempt claimed the event and may be talking to the SMTP server;
    -- 'sent': the SMTP server accepted the mail.
    ADD COLUMN state      TEXT        NOT NULL DEFAULT 'sent' CHECK (state IN ('sending', 'sent')),
    -- 1 for the first attempt, +1 each time a later attempt takes the claim over.
    ADD COLUMN attempt    INTEGER     NOT NULL DEFAULT 1 CHECK (attempt > 0),
    -- The process (a random id per start) whose attempt holds the claim, or last held it.
    ADD COLUMN owner      UUID,
    -- When the current attempt took the claim (claimed_at stays the first claim's time).
    ADD COLUMN started_at TIMESTAMPTZ,
    -- Whether the current attempt is a resend after an attempt that did not finish and may
    -- have been accepted (the one ambiguous case; its mail carries the same Message-ID).
    ADD COLUMN ambiguous  BOOLEAN     NOT NULL DEFAULT false,
    ALTER COLUMN sent_at DROP NOT NULL,
    ALTER COLUMN sent_at DROP DEFAULT;

UPDATE sent_mails SET started_at = claimed_at;

ALTER TABLE sent_mails
    ALTER COLUMN started_at SET NOT NULL,
    ALTER COLUMN started_at SET DEFAULT clock_timestamp(),
    ALTER COLUMN claimed_at SET DEFAULT clock_timestamp(),
    ALTER COLUMN state DROP DEFAULT,
    -- sent_at is set exactly when the mail is recorded as sent.
    ADD CONSTRAINT sent_mails_sent_at CHECK ((state = 'sent') = (sent_at IS NOT NULL)),
    -- An attempt in progress always names its owner.
    ADD CONSTRAINT sent_mails_sending_owner CHECK (state = 'sent' OR owner IS NOT NULL);

COMMENT ON TABLE sent_mails IS
    'One row per user.created event being mailed (state sending) or mailed (state sent); '
    'the event id is the primary key, the user id is unique (one welcome per user).';
