#!/usr/bin/env bash
# The compose stack's one-shot `secrets-init` step (docker-compose.yml): on the first start it
# generates every credential of the stack at random, so that no key or password of a fresh
# stack is in the source; on every start it (re)writes what each container reads from them.
#
#   /secrets                       (volume `secrets`, mounted here only) the generated values,
#                                  created once and kept: jwt-secret, rabbitmq-<user>.password,
#                                  postgres-<role>.password, postgres-superuser.password
#   /out/auth-service              (volume `auth-secrets`, read-only in auth-service)
#   /out/user-service              (volume `user-secrets`)
#   /out/notification-service      (volume `notification-secrets`)
#                                  amqp-url, database-url (and jwt-secret for auth-service):
#                                  the services' AMQP_URL_FILE, DATABASE_URL_FILE,
#                                  JWT_SECRET_FILE; owned by the services' user (uid 10001), 0400
#   /out/rabbitmq                  (volume `broker-secrets`) definitions.json, which the broker
#                                  loads at start (docker/rabbitmq/security.conf): the vhost, one
#                                  user per service with permissions limited to its queues and
#                                  the events exchange (no guest), and the `admin` user of the
#                                  management UI; admin-password for the operator
#   /out/postgres                  (volume `db-secrets`) the superuser's and each service role's
#                                  password, read by docker/postgres-init.sh and the image
#
# Names come from the same variables the services read (USER_QUEUE, USER_EVENTS_QUEUE,
# NOTIFICATION_QUEUE, EVENTS_EXCHANGE), the broker hosts from AMQP_HOSTS (comma-separated
# host:port, several on a cluster) and the default queue type of the vhost from
# RABBITMQ_DEFAULT_QUEUE_TYPE (classic, or quorum on a cluster).
#
# To use credentials of your own instead, set the services' variables (AUTH_AMQP_URL,
# AUTH_DATABASE_URL, JWT_SECRET, ...): a variable wins over its file. To rotate a generated
# one, delete it from the `secrets` volume and re-create the stack's volumes (docker/README.md).
set -Eeuo pipefail

SECRETS=${SECRETS_DIR:-/secrets}
OUT=${OUT_DIR:-/out}
APP_UID=${APP_UID:-10001}
USER_QUEUE=${USER_QUEUE:-user_queue}
USER_EVENTS_QUEUE=${USER_EVENTS_QUEUE:-user_events_queue}
NOTIFICATION_QUEUE=${NOTIFICATION_QUEUE:-notification_queue}
EVENTS_EXCHANGE=${EVENTS_EXCHANGE:-events}
AMQP_HOSTS=${AMQP_HOSTS:-rabbitmq:5672}
POSTGRES_HOST=${POSTGRES_HOST:-postgres:5432}
RABBITMQ_DEFAULT_QUEUE_TYPE=${RABBITMQ_DEFAULT_QUEUE_TYPE:-classic}

log() { printf 'secrets-init: %s\n' "$*"; }

# A random string of $1 characters from [A-Za-z0-9] (no escaping needed in URLs or SQL).
random() {
  local out=""
  while [ "${#out}" -lt "$1" ]; do
    out+=$(head -c 256 /dev/urandom | LC_ALL=C tr -dc 'A-Za-z0-9')
  done
  printf '%s' "${out:0:$1}"
}

# The value in $SECRETS/$1, generated ($2 characters) on the first start only.
secret() {
  local file="$SECRETS/$1"
  if [ ! -s "$file" ]; then
    (umask 077 && random "$2" >"$file.tmp")
    mv "$file.tmp" "$file"
    log "generated $1" >&2
  fi
  cat "$file"
}

# Writes $3 into $1 (a file), owned by uid $2, readable by it only when $4 is 0400.
put() {
  local file=$1 owner=$2 content=$3 mode=${4:-0400}
  (umask 077 && printf '%s' "$content" >"$file.tmp")
  chown "$owner:$owner" "$file.tmp"
  chmod "$mode" "$file.tmp"
  mv "$file.tmp" "$file"
}

# The raw bytes of a hex string.
hex_bytes() { printf "$(sed 's/../\\x&/g' <<<"$1")"; }

# RabbitMQ's rabbit_password_hashing_sha256: base64(salt ++ sha256(salt ++ password)), with a
# random 4-byte salt, so that the definitions file holds no password.
rabbit_hash() {
  local salt digest
  salt=$(head -c 4 /dev/urandom | od -An -tx1 | tr -d ' \n')
  digest=$({ hex_bytes "$salt"; printf '%s' "$1"; } | sha256sum | cut -c1-64)
  { hex_bytes "$salt"; hex_bytes "$digest"; } | base64 -w0
}

# A queue or exchange name as a regular expression matching exactly it.
quote() { sed 's/[][\\.^$*+?(){}|]/\\&/g' <<<"$1"; }

# The amqp:// URL list of a broker user: one URL per host of AMQP_HOSTS.
amqp_urls() {
  local user=$1 password=$2 host urls=""
  IFS=',' read -r -a hosts <<<"$AMQP_HOSTS"
  for host in "${hosts[@]}"; do
    host=$(tr -d ' ' <<<"$host")
    urls+="${urls:+,}amqp://$user:$password@$host/%2f"
  done
  printf '%s' "$urls"
}

for dir in "$SECRETS" "$OUT/auth-service" "$OUT/user-service" "$OUT/notification-service" "$OUT/rabbitmq" "$OUT/postgres"; do
  [ -d "$dir" ] || { log "missing mount $dir"; exit 1; }
done
chmod 0700 "$SECRETS"

jwt_secret=$(secret jwt-secret 64)
amqp_admin=$(secret rabbitmq-admin.password 32)
amqp_auth=$(secret rabbitmq-auth-service.password 32)
amqp_users=$(secret rabbitmq-user-service.password 32)
amqp_notifications=$(secret rabbitmq-notification-service.password 32)
pg_super=$(secret postgres-superuser.password 32)
pg_auth=$(secret postgres-auth.password 32)
pg_users=$(secret postgres-users.password 32)
pg_notifications=$(secret postgres-notifications.password 32)

# ---- the services: what each reads through its *_FILE variables ----------------------------
put "$OUT/auth-service/jwt-secret" "$APP_UID" "$jwt_secret"
put "$OUT/auth-service/amqp-url" "$APP_UID" "$(amqp_urls auth-service "$amqp_auth")"
put "$OUT/auth-service/database-url" "$APP_UID" "postgres://auth_service:$pg_auth@$POSTGRES_HOST/auth"
put "$OUT/user-service/amqp-url" "$APP_UID" "$(amqp_urls user-service "$amqp_users")"
put "$OUT/user-service/database-url" "$APP_UID" "postgres://user_service:$pg_users@$POSTGRES_HOST/users"
put "$OUT/notification-service/amqp-url" "$APP_UID" "$(amqp_urls notification-service "$amqp_notifications")"
put "$OUT/notification-service/database-url" "$APP_UID" \
  "postgres://notification_service:$pg_notifications@$POSTGRES_HOST/notifications"

# ---- Postgres: read by the image (POSTGRES_PASSWORD_FILE) and docker/postgres-init.sh ----------
# 0444: the volume is mounted in the postgres container only, whose server runs as a user
# whose uid differs between images.
put "$OUT/postgres/superuser-password" 0 "$pg_super" 0444
put "$OUT/postgres/auth-password" 0 "$pg_auth" 0444
put "$OUT/postgres/users-password" 0 "$pg_users" 0444
put "$OUT/postgres/notifications-password" 0 "$pg_notifications" 0444

# ---- RabbitMQ: the definitions the broker imports at start -----------------------------------
uq=$(quote "$USER_QUEUE") ueq=$(quote "$USER_EVENTS_QUEUE") nq=$(quote "$NOTIFICATION_QUEUE")
ex=$(quote "$EVENTS_EXCHANGE")
# A consumer's queue with the delay and dead-letter queues the transport declares beside it.
owned='(\.dlq|\.retry\.[0-9]+ms)?'
# Publishing to a queue by name goes through the default exchange (checked as amq.default), and
# so does declaring a delay queue, whose x-dead-letter-exchange is the default exchange.
default_exchange='^amq\.default$'
reply_to='^amq\.rabbitmq\.reply-to$'

# JSON by hand (the image has no jq): every value is a generated token, a hash or a regex.
json() { printf '"%s"' "$(sed 's/\\/\\\\/g; s/"/\\"/g' <<<"$1")"; }
user_json() { # name password tags
  printf '{"name":%s,"password_hash":%s,"hashing_algorithm":"rabbit_password_hashing_sha256","tags":[%s],"limits":{}}' \
    "$(json "$1")" "$(json "$(rabbit_hash "$2")")" "${3:+$(json "$3")}"
}
permission_json() { # user configure write read
  printf '{"user":%s,"vhost":"/","configure":%s,"write":%s,"read":%s}' \
    "$(json "$1")" "$(json "$2")" "$(json "$3")" "$(json "$4")"
}

definitions=$(
  printf '{\n"users":[\n%s,\n%s,\n%s,\n%s\n],\n' \
    "$(user_json admin "$amqp_admin" administrator)" \
    "$(user_json auth-service "$amqp_auth" "")" \
    "$(user_json user-service "$amqp_users" "")" \
    "$(user_json notification-service "$amqp_notifications" "")"
  printf '"vhosts":[{"name":"/","default_queue_type":%s,"metadata":{"description":"the stack","tags":[],"default_queue_type":%s}}],\n' \
    "$(json "$RABBITMQ_DEFAULT_QUEUE_TYPE")" "$(json "$RABBITMQ_DEFAULT_QUEUE_TYPE")"
  printf '"permissions":[\n%s,\n%s,\n%s,\n%s\n]\n}\n' \
    "$(permission_json admin '.*' '.*' '.*')" \
    "$(permission_json auth-service "^($uq|$ex)\$" "$default_exchange|^$ex\$" "$reply_to")" \
    "$(permission_json user-service "^($uq|$ueq)$owned\$|^$ex\$" "$default_exchange|^($uq|$ueq)$owned\$" "^($uq|$ueq)$owned\$|^$ex\$")" \
    "$(permission_json notification-service "^$nq$owned\$|^$ex\$" "$default_exchange|^$nq$owned\$" "^$nq$owned\$|^$ex\$")"
)
put "$OUT/rabbitmq/definitions.json" 0 "$definitions" 0444
put "$OUT/rabbitmq/admin-password" 0 "$amqp_admin" 0444

log "credentials ready (broker hosts $AMQP_HOSTS, vhost default queue type $RABBITMQ_DEFAULT_QUEUE_TYPE)"
