-- Credentials: who may log in. Profiles (name) belong to user-service, fed by user.created.
CREATE TABLE credentials (
    id            uuid        PRIMARY KEY,
    email         text        NOT NULL,
    password_hash text        NOT NULL,
    created_at    timestamptz NOT NULL
);

-- One account per email, compared case-insensitively; also the index login looks up by.
CREATE UNIQUE INDEX credentials_email_key ON credentials (lower(email));
