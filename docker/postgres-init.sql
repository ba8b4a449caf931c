-- Run once, by the postgres image's entrypoint, when the data volume is first initialised
-- (mounted into /docker-entrypoint-initdb.d). One database per service; each service creates
-- its own schema with its migrations at start.
CREATE DATABASE auth;
CREATE DATABASE users;
CREATE DATABASE notifications;
