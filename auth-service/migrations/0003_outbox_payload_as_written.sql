-- The relay publishes the payload exactly as it was written (a contract's fields in their
-- declared order, as a NestJS peer writes them). jsonb reorders keys; json keeps the text.
ALTER TABLE outbox ALTER COLUMN payload TYPE json USING payload::json;
