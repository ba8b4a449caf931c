#!/usr/bin/env bash
# Entrypoint of the local postgres stand-in: the subset of the official image's entrypoint
# that this project uses (see the Dockerfile beside this file).
set -Eeuo pipefail

: "${PGDATA:=/var/lib/postgresql/data}"
export PGDATA

log() { printf '%s [entrypoint] %s\n' "$(date -u +'%Y-%m-%d %H:%M:%S UTC')" "$*"; }

# `docker run image -c fsync=off` means `postgres -c fsync=off`.
if [ "${1:0:1}" = '-' ]; then
  set -- postgres "$@"
fi

if [ "$1" = 'postgres' ] && [ "$(id -u)" = '0' ]; then
  # Own the data directory (a fresh volume or bind mount may belong to root), then drop to
  # the postgres user for everything else.
  mkdir -p "$PGDATA" /var/run/postgresql
  chown -R postgres:postgres "$PGDATA" /var/run/postgresql
  chmod 700 "$PGDATA"
  exec setpriv --reuid=postgres --regid=postgres --init-groups "${BASH_SOURCE[0]}" "$@"
fi

# POSTGRES_PASSWORD_FILE: the password read from a file (as the official image's file_env;
# setting both is an error there too).
if [ -n "${POSTGRES_PASSWORD_FILE:-}" ]; then
  if [ -n "${POSTGRES_PASSWORD:-}" ]; then
    echo >&2 'error: both POSTGRES_PASSWORD and POSTGRES_PASSWORD_FILE are set (but are exclusive)'
    exit 1
  fi
  POSTGRES_PASSWORD=$(<"$POSTGRES_PASSWORD_FILE")
  export POSTGRES_PASSWORD
fi

initialise() {
  local user="${POSTGRES_USER:-postgres}"
  local db="${POSTGRES_DB:-$user}"
  local auth="${POSTGRES_HOST_AUTH_METHOD:-}"
  if [ -z "${POSTGRES_PASSWORD:-}" ] && [ "$auth" != 'trust' ]; then
    cat >&2 <<'MSG'
Error: Database is uninitialized and superuser password is not specified.
       You must specify POSTGRES_PASSWORD to a non-empty value for the superuser, or use
       POSTGRES_HOST_AUTH_METHOD=trust to allow all connections without a password.
MSG
    exit 1
  fi
  [ -n "$auth" ] || auth='scram-sha-256'

  log "initialising a new cluster in $PGDATA"
  # shellcheck disable=SC2206 # POSTGRES_INITDB_ARGS is a list of words, as in the official image
  local args=(--username="$user" --auth-local=trust --auth-host="$auth" ${POSTGRES_INITDB_ARGS:-} -D "$PGDATA")
  if [ -n "${POSTGRES_PASSWORD:-}" ]; then
    initdb "${args[@]}" --pwfile=<(printf '%s\n' "$POSTGRES_PASSWORD")
  else
    initdb "${args[@]}"
  fi
  printf '\nhost all all all %s\n' "$auth" >> "$PGDATA/pg_hba.conf"
  printf "\nlisten_addresses = '*'\n" >> "$PGDATA/postgresql.conf"

  # A temporary server on the Unix socket only, its log on stdout (as in the official image).
  pg_ctl -D "$PGDATA" -o "-c listen_addresses='' -p 5432" -w start

  local psql=(psql -v ON_ERROR_STOP=1 --username "$user" --no-password --no-psqlrc)
  if [ "$db" != 'postgres' ]; then
    "${psql[@]}" --dbname postgres --set db="$db" <<<'CREATE DATABASE :"db" ;'
  fi
  local file
  for file in /docker-entrypoint-initdb.d/*; do
    case "$file" in
      *.sh)
        log "running $file"
        if [ -x "$file" ]; then
          "$file"
        else
          # shellcheck disable=SC1090
          . "$file"
        fi
        ;;
      *.sql) log "running $file"; "${psql[@]}" --dbname "$db" -f "$file" ;;
      *.sql.gz) log "running $file"; gunzip -c "$file" | "${psql[@]}" --dbname "$db" ;;
      *) if [ -e "$file" ]; then log "ignoring $file"; fi ;;
    esac
  done

  pg_ctl -D "$PGDATA" -m fast -w stop
  log 'PostgreSQL init process complete; ready for start up.'
}

if [ "$1" = 'postgres' ] && [ ! -s "$PGDATA/PG_VERSION" ]; then
  initialise
fi

exec "$@"
