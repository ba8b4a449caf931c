#!/usr/bin/env bash
# Run once, by the postgres image's entrypoint, when the data volume is first initialised
# (mounted into /docker-entrypoint-initdb.d). For each service: a role that can log in with
# the password secrets-init generated (docker/secrets-init.sh), and is no superuser and can
# create neither databases nor roles, owning the service's database; no other role but the
# superuser may connect to it. Each service creates its own schema with its migrations at start
# (as the database's owner, it owns the public schema on PostgreSQL 15 and later).
set -Eeuo pipefail

secrets=${DB_SECRETS_DIR:-/run/db-secrets}

service_database() { # role database password-file
  local password
  password=$(cat "$secrets/$3")
  [ -n "$password" ] || { echo "postgres-init: $secrets/$3 is empty" >&2; return 1; }
  psql -v ON_ERROR_STOP=1 --username "${POSTGRES_USER:-postgres}" --no-password --no-psqlrc \
    --dbname postgres --set role="$1" --set db="$2" --set password="$password" <<'SQL'
CREATE ROLE :"role" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION PASSWORD :'password';
CREATE DATABASE :"db" OWNER :"role";
REVOKE ALL ON DATABASE :"db" FROM PUBLIC;
SQL
  echo "postgres-init: role $1 owns database $2"
}

service_database auth_service auth auth-password
service_database user_service users users-password
service_database notification_service notifications notifications-password
# Nor may the service roles connect to the maintenance database.
psql -v ON_ERROR_STOP=1 --username "${POSTGRES_USER:-postgres}" --no-password --no-psqlrc --dbname postgres \
  -c 'REVOKE CONNECT ON DATABASE postgres FROM PUBLIC;'
