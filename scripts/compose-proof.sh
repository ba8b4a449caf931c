#!/usr/bin/env bash
# Proves docker-compose.yml on a machine that can pull no image (see docker/README.md):
#
#   1. Docker from Debian's packages (docker.io) and Compose v2 (Debian trixie's docker-compose
#      package, which installs on bookworm); starts dockerd if nothing answers.
#   2. A base image without a registry: debootstrap --variant=minbase bookworm, docker import
#      -> local/debian:bookworm (skipped when the image exists).
#   3. Local stand-ins of the official infrastructure images, FROM local/debian:bookworm:
#      local/rabbitmq:3.13-management, local/postgres:16, local/mailpit:latest (docker/standins).
#   4. The three services: cargo build --release on the host, images built by compose with the
#      Dockerfile's `prebuilt` target (docker/compose.local.yml). The Jaeger stand-in
#      local/jaeger:otlp-sink (docker/standins/jaeger): the test kit's OTLP receiver as a binary
#      (cargo build -p tests --bin otlp-sink) with a subset of Jaeger's query API.
#   5. The REAL docker-compose.yml plus docker/compose.local.yml (which only swaps images), with
#      the observability profile (Jaeger) and OTEL_EXPORTER_OTLP_ENDPOINT=http://jaeger:4318:
#      with no .env (and .env.example proven equal to the defaults), up, every container
#      healthy, smoke flow over the published ports (signup, login, GET /users/{id}, the welcome
#      mail in the mail catcher, the ops ports), the secure defaults (the token is signed with
#      the generated key, not the source's development key; no guest user, one limited broker
#      user per service; one Postgres role per service owning its database, no superuser; the
#      broker's message size limit), one signup's trace read back from Jaeger's query API (one
#      trace id, spans of the three services linked request -> relay publish -> both consumers),
#      the e2e suite if
#      tests/tests/e2e exists, then --scale user-service=3 --scale notification-service=2 and
#      several signups with one mail each, then down (volumes kept) and up: data kept.
#   6. The test kit's testcontainers path (cargo test -p tests --test kit_infra with the
#      stand-in images and no TEST_AMQP_URL / TEST_DATABASE_URL).
#   7. (--source-build) the Dockerfile's default target, from source: a stand-in of the Rust
#      image made from this machine's own toolchain (docker/standins/rust), then
#      `docker compose build` of the three services with docker-compose.yml alone.
#   Always: docker compose down -v (trap), dockerd stopped if this script started it, and a
#   summary with the time of every phase.
#
# --cluster runs phases 1-4 and then, instead of 5-7, the CLUSTER variant: docker-compose.yml +
# docker-compose.cluster.yml (+ the image overrides docker/compose.local.yml and
# docker/compose.cluster.local.yml): three RabbitMQ nodes that must form one cluster from their
# config, every container healthy, the smoke flow, every queue a quorum queue, then signups at
# a steady rate while ONE node (the one most service links use) is stopped and started again:
# every signup accepted, and mailed exactly once, also those made during the outage.
#
# Usage: scripts/compose-proof.sh [--infra-only] [--cluster] [--keep] [--skip-e2e] [--skip-kit] [--skip-traces] [--source-build]
#   --infra-only    phases 1-3, then only rabbitmq, postgres and mailpit: up, healthy, checked, down
#   --cluster       the cluster variant (above); PROOF_CLUSTER_RATE (signups/s, 5),
#                   PROOF_CLUSTER_OUTAGE (seconds the node stays down, 30),
#                   PROOF_CLUSTER_STOP_NODE (rabbitmq, rabbitmq-2 or rabbitmq-3: which node to stop)
#   --keep          leave the stack (and dockerd) running at the end
#   --skip-e2e      do not run the e2e suite against the stack
#   --skip-kit      do not run the test kit's testcontainers path
#   --skip-traces   no Jaeger: neither its stand-in nor the observability profile nor the trace check
#   --source-build  also phase 7 (compiles the services once more, inside Docker: minutes)
#
# Needs root (apt-get, dockerd). The host's own RabbitMQ and Postgres are never touched: every
# port the stack publishes is moved to the PROOF_*_PORT values below (all on 127.0.0.1).
set -Eeuo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD

INFRA_ONLY=0 CLUSTER=0 KEEP=0 SKIP_E2E=0 SKIP_KIT=0 SKIP_TRACES=0 SOURCE_BUILD=0
for arg in "$@"; do
  case "$arg" in
    --infra-only) INFRA_ONLY=1 ;;
    --cluster) CLUSTER=1 ;;
    --keep) KEEP=1 ;;
    --skip-e2e) SKIP_E2E=1 ;;
    --skip-kit) SKIP_KIT=1 ;;
    --skip-traces) SKIP_TRACES=1 ;;
    --source-build) SOURCE_BUILD=1 ;;
    -h | --help) sed -n '2,/^set -E/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument: $arg (see --help)" >&2; exit 2 ;;
  esac
done

# ---- settings ---------------------------------------------------------------------------------
if [ "$CLUSTER" = 1 ]; then PROJECT=${PROOF_PROJECT:-compose-proof-cluster}; else PROJECT=${PROOF_PROJECT:-compose-proof}; fi
CACHE_DIR=${PROOF_CACHE_DIR:-/var/tmp/compose-proof}
HEALTH_DEADLINE=${PROOF_HEALTH_DEADLINE:-240}   # seconds for every container to turn healthy
FLOW_DEADLINE=${PROOF_FLOW_DEADLINE:-60}        # seconds for a user / a mail to show up
BASE_IMAGE=${LOCAL_BASE_IMAGE:-local/debian:bookworm}
export LOCAL_BASE_IMAGE=$BASE_IMAGE
export LOCAL_RABBITMQ_IMAGE=${LOCAL_RABBITMQ_IMAGE:-local/rabbitmq:3.13-management}
export LOCAL_POSTGRES_IMAGE=${LOCAL_POSTGRES_IMAGE:-local/postgres:16}
export LOCAL_MAILPIT_IMAGE=${LOCAL_MAILPIT_IMAGE:-local/mailpit:latest}
export PREBUILT_CONTEXT=${PREBUILT_CONTEXT:-target/docker-context}
LOCAL_RUST_IMAGE=${LOCAL_RUST_IMAGE:-local/rust:1.95-bookworm}
export LOCAL_JAEGER_IMAGE=${LOCAL_JAEGER_IMAGE:-local/jaeger:otlp-sink}
# Traces: the base stack runs with the observability profile (the jaeger service, on its
# stand-in) and the services exporting to it; not the infrastructure-only or cluster runs.
OBSERVABILITY=1
if [ "$INFRA_ONLY" = 1 ] || [ "$CLUSTER" = 1 ] || [ "$SKIP_TRACES" = 1 ]; then OBSERVABILITY=0; fi
OTLP_ENDPOINT=http://jaeger:4318

# Host ports of the stack: away from the host's own services (RabbitMQ 5672 and its
# distribution port 25672, Postgres 5432) and below the usual ephemeral range.
export PUBLISH_ADDR=127.0.0.1
export HTTP_PORT=${PROOF_HTTP_PORT:-23000}
export AMQP_PORT=${PROOF_AMQP_PORT:-25682}
export RABBITMQ_UI_PORT=${PROOF_RABBITMQ_UI_PORT:-25683}
export POSTGRES_PORT=${PROOF_POSTGRES_PORT:-25432}
export MAILPIT_UI_PORT=${PROOF_MAILPIT_UI_PORT:-28025}
export MAILPIT_SMTP_PORT=${PROOF_MAILPIT_SMTP_PORT:-21025}
export AMQP_PORT_2=${PROOF_AMQP_PORT_2:-25684}
export AMQP_PORT_3=${PROOF_AMQP_PORT_3:-25685}
export AUTH_OPS_PORT=${PROOF_AUTH_OPS_PORT:-29090}
export USER_OPS_PORTS=${PROOF_USER_OPS_PORTS:-29091-29095}
export NOTIFICATION_OPS_PORTS=${PROOF_NOTIFICATION_OPS_PORTS:-29096-29099}
export JAEGER_UI_PORT=${PROOF_JAEGER_UI_PORT:-26686}
# auth-service limits /auth/* per client IP, and through a published port every request of
# this machine comes from one address (Docker's proxy): the e2e suite's fifty concurrent
# signups need a budget of more than the default burst of 10.
export RATE_LIMIT_PER_SECOND=${PROOF_RATE_LIMIT_PER_SECOND:-100}
export RATE_LIMIT_BURST=${PROOF_RATE_LIMIT_BURST:-200}
# The e2e suite's fifty concurrent signups must not be shed by the bounded hashing queue.
export HASH_QUEUE_CAPACITY=${PROOF_HASH_QUEUE_CAPACITY:-64}

AUTH_URL="http://127.0.0.1:$HTTP_PORT"
AUTH_OPS_URL="http://127.0.0.1:$AUTH_OPS_PORT"
MAILPIT_URL="http://127.0.0.1:$MAILPIT_UI_PORT"
JAEGER_URL="http://127.0.0.1:$JAEGER_UI_PORT"
# The stack's credentials are generated on its first start (docker/secrets-init.sh): these
# are read from its containers once it is up (stack_credentials).
HOST_AMQP_URL="" HOST_POSTGRES_URL="" RABBITMQ_ADMIN_PASSWORD=""
# The public development key in auth-service's source (auth-service/src/config.rs): a fresh
# stack must never sign with it.
DEV_JWT_SECRET='dev-only-secret-do-not-use-in-production!'
SERVICES=(auth-service user-service notification-service)
# The compose files of the proof: the real file(s), then the overrides that only swap images.
COMPOSE_FILES=(-f "$ROOT/docker-compose.yml")
[ "$CLUSTER" = 1 ] && COMPOSE_FILES+=(-f "$ROOT/docker-compose.cluster.yml")
COMPOSE_FILES+=(-f "$ROOT/docker/compose.local.yml")
[ "$CLUSTER" = 1 ] && COMPOSE_FILES+=(-f "$ROOT/docker/compose.cluster.local.yml")

# ---- output, phases and timings -----------------------------------------------------------------
say() { printf '%s\n' "$*"; }
note() { printf '    %s\n' "$*"; }
die() { printf '\nFAILED: %s\n' "$*" >&2; exit 1; }
now() { date +%s.%N; }
seconds() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }

PHASE_NAMES=() PHASE_TIMES=() PHASE_RESULTS=()
CURRENT_PHASE="" PHASE_START=""
SCRIPT_START=$(now)
phase_begin() {
  CURRENT_PHASE=$1 PHASE_START=$(now)
  printf '\n==> %s\n' "$1"
}
phase_end() {
  local result=${1:-ok} took
  took=$(seconds "$PHASE_START" "$(now)")
  PHASE_NAMES+=("$CURRENT_PHASE") PHASE_TIMES+=("$took") PHASE_RESULTS+=("$result")
  printf '    (%s s)\n' "$took"
  CURRENT_PHASE=""
}

STARTED_DOCKERD_PID=""
STACK_UP=0
cleanup() {
  local status=$?
  trap - EXIT
  if [ -n "$CURRENT_PHASE" ]; then
    phase_end FAILED
  fi
  if [ "$STACK_UP" = 1 ]; then
    if [ "$status" != 0 ]; then
      say ""
      say "==> diagnostics (the run failed)"
      compose ps -a 2>&1 | sed 's/^/    /' || true
      compose logs --no-color --tail 60 2>&1 | sed 's/^/    /' | tail -n 400 || true
    fi
    if [ "$KEEP" = 1 ]; then
      say ""
      say "==> --keep: the stack stays up (project $PROJECT); tear it down with"
      say "    docker compose -p $PROJECT ${COMPOSE_FILES[*]} down -v"
    else
      local begin
      begin=$(now)
      say ""
      say "==> teardown: docker compose down -v --rmi local"
      compose down -v --rmi local --remove-orphans --timeout 20 >/dev/null 2>&1 || true
      PHASE_NAMES+=("teardown (compose down -v --rmi local)") PHASE_TIMES+=("$(seconds "$begin" "$(now)")")
      PHASE_RESULTS+=("ok")
    fi
  fi
  if [ -n "$STARTED_DOCKERD_PID" ] && [ "$KEEP" != 1 ]; then
    # Stop the daemon this script started: while a Docker daemon answers, the test kit starts
    # containers instead of using the machine's own RabbitMQ and Postgres.
    kill "$STARTED_DOCKERD_PID" 2>/dev/null || true
    for _ in $(seq 1 30); do kill -0 "$STARTED_DOCKERD_PID" 2>/dev/null || break; sleep 1; done
    say "    stopped the dockerd this script started (pid $STARTED_DOCKERD_PID)"
  fi
  if [ -n "${TMP:-}" ] && [ -d "$TMP" ]; then
    if [ "$status" = 0 ]; then rm -rf "$TMP"; else say "    logs of this run: $TMP"; fi
  fi
  say ""
  say "==> summary"
  local i
  for i in "${!PHASE_NAMES[@]}"; do
    printf '    %-86s %7s s  %s\n' "${PHASE_NAMES[$i]}" "${PHASE_TIMES[$i]}" "${PHASE_RESULTS[$i]}"
  done
  printf '    %-86s %7s s\n' "total" "$(seconds "$SCRIPT_START" "$(now)")"
  if [ "$status" = 0 ]; then say "    RESULT: PASSED"; else say "    RESULT: FAILED (exit $status)"; fi
  exit "$status"
}
trap cleanup EXIT

# The compose command of the proof: the real docker-compose.yml plus the image override, with
# NO environment file: the stack must work with no set-up at all (phase 5a also proves that
# .env.example changes nothing). Settings the stack reads are removed from this script's
# environment so that a developer's shell cannot leak into the containers; only the PROOF
# ports and rate limit exported above are set.
ENV_FILE=/dev/null
compose() {
  # PROOF_JWT_SECRET, when set, hands auth-service an explicit token key instead of the
  # generated one.
  local vars=() profile=()
  [ -z "${PROOF_JWT_SECRET:-}" ] || vars=("JWT_SECRET=$PROOF_JWT_SECRET")
  # With the observability profile on every command (also `down`, which would otherwise leave
  # the jaeger container), and the services pointed at it.
  [ "$OBSERVABILITY" = 0 ] || { vars+=("OTEL_EXPORTER_OTLP_ENDPOINT=$OTLP_ENDPOINT"); profile=(--profile observability); }
  env -u AMQP_URL -u DATABASE_URL -u HTTP_ADDR -u OPS_ADDR -u JWT_SECRET -u APP_ENV \
    -u AUTH_AMQP_URL -u USERS_AMQP_URL -u NOTIFICATIONS_AMQP_URL -u CLUSTER_AMQP_URL \
    -u AUTH_DATABASE_URL -u USERS_DATABASE_URL -u NOTIFICATIONS_DATABASE_URL -u POSTGRES_PASSWORD \
    -u RPC_TIMEOUT_MS -u USER_QUEUE -u USER_EVENTS_QUEUE -u NOTIFICATION_QUEUE \
    -u EVENTS_EXCHANGE -u SMTP_URL -u MAIL_FROM -u LOG_FORMAT -u RUST_LOG -u OTEL_EXPORTER_OTLP_ENDPOINT \
    -u OTEL_SERVICE_NAME "${vars[@]}" \
    docker compose -p "$PROJECT" --env-file "$ENV_FILE" \
    "${COMPOSE_FILES[@]}" "${profile[@]}" "$@"
}

# Reads the generated credentials the proof itself needs from the running stack: the broker
# URL of auth-service (a caller of user_queue, as the e2e suite's NestJS client is) and the
# Postgres superuser's, both via the published ports, and the management UI's admin password.
stack_credentials() {
  local auth_url super
  auth_url=$(compose exec -T auth-service cat /run/secrets/amqp-url) || die "cannot read auth-service's AMQP_URL_FILE"
  HOST_AMQP_URL=$(sed -E "s#@[^/,]+/#@127.0.0.1:$AMQP_PORT/#" <<<"${auth_url%%,*}")
  super=$(compose exec -T postgres cat /run/db-secrets/superuser-password) || die "cannot read the Postgres superuser's password"
  HOST_POSTGRES_URL="postgres://postgres:$super@127.0.0.1:$POSTGRES_PORT"
  RABBITMQ_ADMIN_PASSWORD=$(compose exec -T rabbitmq cat /run/broker-secrets/admin-password) ||
    die "cannot read the RabbitMQ admin password"
}

# Whether the JWT $1 is an HS256 token signed with the key $2.
jwt_signed_with() {
  python3 - "$1" "$2" <<'PY'
import base64, hashlib, hmac, sys
token, key = sys.argv[1], sys.argv[2].encode()
header, payload, signature = token.split(".")
expected = base64.urlsafe_b64encode(hmac.new(key, f"{header}.{payload}".encode(), hashlib.sha256).digest()).rstrip(b"=").decode()
sys.exit(0 if hmac.compare_digest(expected, signature) else 1)
PY
}

# The secure defaults of a running stack (docker/README.md, "Credentials"); $1 is a token the
# stack issued.
check_security() {
  local token=$1 key users perms roles activity code denied
  # -- the token key
  key=$(compose exec -T auth-service cat /run/secrets/jwt-secret)
  [ "${#key}" -ge 32 ] || die "the generated token key has ${#key} characters"
  ! jwt_signed_with "$token" "$DEV_JWT_SECRET" || die "the token is signed with the development key of the source"
  jwt_signed_with "$token" "$key" || die "the token is not signed with the generated key"
  ! compose logs --no-color auth-service 2>&1 | grep -q 'development key' ||
    die "auth-service logged that it signs with the development key"
  note "token: signed with the generated ${#key}-character key (JWT_SECRET_FILE), not with the source's development key; no dev-key warning logged"
  # -- the broker: no guest, one user per service with its limited permissions
  users=$(compose exec -T rabbitmq rabbitmqctl -q --no-table-headers list_users | sort)
  note "rabbitmq users: $(tr '\t\n' ' ;' <<<"$users")"
  ! grep -qw guest <<<"$users" || die "the broker has a guest user"
  for service in "${SERVICES[@]}"; do
    grep -qE "^$service[[:space:]]+\[\]$" <<<"$users" || die "no tag-less broker user $service: $users"
  done
  perms=$(compose exec -T rabbitmq rabbitmqctl -q --no-table-headers list_permissions -p /)
  while IFS=$'\t' read -r user configure write read; do
    note "  $user: configure $configure | write $write | read $read"
  done <<<"$perms"
  ! grep -qE '^(auth|user|notification)-service[[:space:]].*\.\*' <<<"$perms" || die "a service user has a catch-all permission"
  code=$(curl -sS -o /dev/null -w '%{http_code}' --max-time 10 -u guest:guest "http://127.0.0.1:$RABBITMQ_UI_PORT/api/whoami") || code=000
  [ "$code" = 401 ] || die "guest/guest on the management API: HTTP $code, expected 401"
  code=$(curl -sS -o /dev/null -w '%{http_code}' --max-time 10 -u "admin:$RABBITMQ_ADMIN_PASSWORD" "http://127.0.0.1:$RABBITMQ_UI_PORT/api/whoami") || code=000
  [ "$code" = 200 ] || die "admin on the management API: HTTP $code"
  note "management API: guest/guest 401, admin with the generated password 200"
  connections=$(compose exec -T rabbitmq rabbitmqctl -q --no-table-headers list_connections user | sort | uniq -c | sed 's/^ *//' | tr '\n' ';')
  note "broker connections by user: $connections"
  ! grep -qE ' (guest|admin)(;|$)' <<<"$connections" || die "a service connects as guest or admin: $connections"
  grep -q ' user-service' <<<"$connections" && grep -q ' notification-service' <<<"$connections" &&
    grep -q ' auth-service' <<<"$connections" || die "not every service connects with its own user: $connections"
  max=$(compose exec -T rabbitmq rabbitmqctl -q eval 'application:get_env(rabbit, max_message_size).' | tr -d '\n ')
  [ "$max" = '{ok,262144}' ] || die "broker max_message_size: $max"
  note "broker max_message_size: $max"
  # -- Postgres: one role per service, owning its database, no superuser
  roles=$(compose exec -T postgres psql -U postgres -d postgres -Atc \
    "SELECT d.datname || ' owner ' || r.rolname || ' super=' || r.rolsuper || ' createdb=' || r.rolcreatedb || ' createrole=' || r.rolcreaterole
       FROM pg_database d JOIN pg_roles r ON r.oid = d.datdba
      WHERE d.datname IN ('auth', 'users', 'notifications') ORDER BY 1")
  note "postgres: $(tr '\n' ';' <<<"$roles")"
  for expected in "auth owner auth_service" "notifications owner notification_service" "users owner user_service"; do
    grep -q "^$expected super=false createdb=false createrole=false\$" <<<"$roles" || die "postgres: no '$expected' without privileges: $roles"
  done
  activity=$(compose exec -T postgres psql -U postgres -d postgres -Atc \
    "SELECT DISTINCT datname || ':' || usename FROM pg_stat_activity WHERE datname IN ('auth', 'users', 'notifications') ORDER BY 1")
  note "postgres sessions (database:role): $(tr '\n' ' ' <<<"$activity")"
  [ "$activity" = $'auth:auth_service\nnotifications:notification_service\nusers:user_service' ] ||
    die "the services do not each use their own role: $activity"
  denied=$(compose exec -T postgres sh -c \
    'PGPASSWORD=$(cat /run/db-secrets/users-password) psql -h 127.0.0.1 -U user_service -d auth -Atc "SELECT 1"' 2>&1) &&
    die "user_service could connect to the auth database"
  grep -q 'CONNECT privilege' <<<"$denied" || die "user_service on the auth database: $denied"
  note "user_service cannot connect to the auth database: $(grep -o 'User does not have CONNECT privilege' <<<"$denied")"
}

# ---- helpers ------------------------------------------------------------------------------------
# The Debian mirror this machine's apt is configured with (deb822 or one-line sources).
debian_mirror() {
  local uri=""
  if compgen -G '/etc/apt/sources.list.d/*.sources' >/dev/null; then
    uri=$(awk '/^URIs:/ && $2 !~ /security/ { print $2; exit }' /etc/apt/sources.list.d/*.sources)
  fi
  if [ -z "$uri" ] && [ -f /etc/apt/sources.list ]; then
    uri=$(awk '$1 == "deb" && $0 !~ /security/ { for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) { print $i; exit } }' \
      /etc/apt/sources.list)
  fi
  [ -n "$uri" ] || die "cannot find the Debian mirror in /etc/apt/sources.list(.d)"
  printf '%s\n' "${uri%/}"
}

APT_UPDATED=0
apt_install() {
  if [ "$APT_UPDATED" = 0 ]; then
    apt-get update -qq
    APT_UPDATED=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >"$CACHE_DIR/apt.log" 2>&1 ||
    { tail -n 30 "$CACHE_DIR/apt.log" >&2; die "apt-get install $* failed"; }
}

port_free() {
  ! ss -Htln "sport = :$1" 2>/dev/null | grep -q .
}

# Container states of the project as `service state health` lines (compose v2 prints one JSON
# object per line; older v2 releases printed one array).
container_states() {
  compose ps -a --format json 2>/dev/null |
    jq -r -s 'if length > 0 and (.[0] | type) == "array" then .[0] else . end
              | .[] | "\(.Service) \(.State) \(.Health // "")"'
}

# Waits until every service of "$@" (name=count) has that many running, healthy containers.
wait_healthy() {
  local deadline=$(( $(date +%s) + HEALTH_DEADLINE )) last="" states line service count
  while :; do
    states=$(container_states || true)
    local ok=1 summary=""
    for line in "$@"; do
      service=${line%=*} count=${line#*=}
      local healthy total
      healthy=$(awk -v s="$service" '$1 == s && $2 == "running" && $3 == "healthy"' <<<"$states" | wc -l)
      total=$(awk -v s="$service" '$1 == s' <<<"$states" | wc -l)
      summary+="$service $healthy/$count  "
      if [ "$healthy" -ne "$count" ] || [ "$total" -ne "$count" ]; then ok=0; fi
    done
    if [ "$summary" != "$last" ]; then
      note "$(( HEALTH_DEADLINE - (deadline - $(date +%s)) ))s: healthy $summary"
      last=$summary
    fi
    [ "$ok" = 1 ] && return 0
    if [ "$(date +%s)" -ge "$deadline" ]; then
      note "states: $(tr '\n' ';' <<<"$states")"
      die "not every container was healthy within ${HEALTH_DEADLINE}s"
    fi
    sleep 2
  done
}

# HTTP with curl: prints the body to the file $1 and the status code on stdout. Retries a 429
# (the auth endpoints are rate limited per client; every request here comes from one address).
http() {
  local out=$1 code
  shift
  for _ in 1 2 3 4 5 6 7 8 9 10; do
    code=$(curl -sS -o "$out" -w '%{http_code}' --max-time 15 "$@") || code=000
    [ "$code" = 429 ] || break
    sleep 1
  done
  printf '%s' "$code"
}

# The ops port (/healthz) of every replica of "$@" (name=count), found with `compose port`:
# Docker picks a free host port of the service's range for each replica.
check_ops() {
  local spec service count index address code
  for spec in "$@"; do
    service=${spec%=*} count=${spec#*=}
    for index in $(seq 1 "$count"); do
      address=$(compose port --index "$index" "$service" 9090 2>/dev/null | tail -n 1)
      [ -n "$address" ] || die "$service #$index publishes no ops port"
      code=$(http "$TMP/ops" "http://$address/healthz")
      [ "$code" = 200 ] || die "$service #$index: GET http://$address/healthz: HTTP $code"
      note "$service #$index: ops port on $address, /healthz 200"
    done
  done
}

TMP=$(mktemp -d)
mkdir -p "$CACHE_DIR"

# One signup end to end; prints nothing on success, dies with the reason otherwise.
smoke_user() {
  local tag=$1 email name password code id token
  email="proof-$tag-$(date +%s%N)@example.com"
  name="Proof $tag"
  password="correct horse battery $tag"
  code=$(http "$TMP/signup.json" -X POST "$AUTH_URL/auth/signup" -H 'content-type: application/json' \
    -d "$(jq -nc --arg e "$email" --arg p "$password" --arg n "$name" '{email:$e,password:$p,name:$n}')")
  [ "$code" = 201 ] || die "signup of $email: HTTP $code $(head -c 400 "$TMP/signup.json")"
  id=$(jq -r '.id // empty' "$TMP/signup.json")
  [ -n "$id" ] || die "signup of $email: no id in $(head -c 400 "$TMP/signup.json")"

  code=$(http "$TMP/login.json" -X POST "$AUTH_URL/auth/login" -H 'content-type: application/json' \
    -d "$(jq -nc --arg e "$email" --arg p "$password" '{email:$e,password:$p}')")
  [ "$code" = 200 ] || die "login of $email: HTTP $code $(head -c 400 "$TMP/login.json")"
  token=$(jq -r '.accessToken // .access_token // .token // empty' "$TMP/login.json")
  [ -n "$token" ] || die "login of $email: no token in $(head -c 400 "$TMP/login.json")"

  local deadline=$(( $(date +%s) + FLOW_DEADLINE ))
  while :; do
    code=$(http "$TMP/user.json" "$AUTH_URL/users/$id" -H "authorization: Bearer $token")
    [ "$code" = 200 ] && break
    [ "$(date +%s)" -lt "$deadline" ] || die "GET /users/$id: still HTTP $code after ${FLOW_DEADLINE}s: $(head -c 400 "$TMP/user.json")"
    sleep 0.5
  done
  [ "$(jq -r '.email' "$TMP/user.json")" = "$email" ] || die "GET /users/$id: wrong user: $(cat "$TMP/user.json")"
  [ "$(jq -r '.name' "$TMP/user.json")" = "$name" ] || die "GET /users/$id: wrong name: $(cat "$TMP/user.json")"
  printf '%s %s\n' "$id" "$email" >>"$TMP/users.txt"
  printf '%s %s %s\n' "$id" "$email" "$password" >>"$TMP/all-users.txt"
  note "$email: signup 201, login 200, GET /users/$id 200"
}

# The mail catcher's messages to $1 (Mailpit API: works with the official image too).
mails_to() {
  curl -sS --max-time 10 "$MAILPIT_URL/api/v1/messages?limit=1000" |
    jq -c --arg to "$1" '[.messages[] | select(any(.To[]; (.Address | ascii_downcase) == ($to | ascii_downcase)))]'
}

# Every user in users.txt has exactly one welcome mail (waits for it, then checks that no
# second one arrives).
check_mails() {
  local deadline=$(( $(date +%s) + FLOW_DEADLINE )) id email mails count
  while read -r id email; do
    while :; do
      mails=$(mails_to "$email")
      count=$(jq length <<<"$mails")
      [ "$count" -ge 1 ] && break
      [ "$(date +%s)" -lt "$deadline" ] || die "no mail to $email within ${FLOW_DEADLINE}s"
      sleep 0.5
    done
  done <"$TMP/users.txt"
  sleep 3 # a duplicate would arrive right after the first
  while read -r id email; do
    mails=$(mails_to "$email")
    count=$(jq length <<<"$mails")
    [ "$count" = 1 ] || die "$count mails to $email, expected exactly one: $mails"
    local mail_id subject body
    mail_id=$(jq -r '.[0].ID' <<<"$mails")
    curl -sS --max-time 10 "$MAILPIT_URL/api/v1/message/$mail_id" >"$TMP/mail.json"
    subject=$(jq -r '.Subject' "$TMP/mail.json")
    body=$(jq -r '(.Text // "") + (.HTML // "")' "$TMP/mail.json")
    if [ -z "$subject" ] || [ -z "$body" ]; then
      die "the mail to $email has no subject or body: $(head -c 400 "$TMP/mail.json")"
    fi
    note "mail to $email: \"$subject\" (Message-ID $(jq -r '.MessageID' "$TMP/mail.json"))"
  done <"$TMP/users.txt"
  : >"$TMP/users.txt"
}

# Waits until Jaeger's query API answers on the published port (the official image has no
# health check, nor has its stand-in).
wait_jaeger() {
  local deadline=$(( $(date +%s) + HEALTH_DEADLINE )) code
  while :; do
    code=$(http "$TMP/services.json" "$JAEGER_URL/api/services")
    [ "$code" = 200 ] && break
    [ "$(date +%s)" -lt "$deadline" ] || die "Jaeger's query API on $JAEGER_URL: HTTP $code after ${HEALTH_DEADLINE}s"
    sleep 1
  done
  note "jaeger ($LOCAL_JAEGER_IMAGE): GET /api/services 200 on $JAEGER_URL"
}

# The trace of one signup, read back from Jaeger's query API (`GET /api/traces/{id}`, the shape
# the real Jaeger answers too). The signup carries a traceparent of the proof's own, so its
# trace id is known; the check mirrors tests/tests/traces.rs: one span each of auth-service's
# request (server, the caller's span its parent), its relay's publish to the events exchange
# (producer, child of the request through the outbox row), user-service's and
# notification-service's processing (consumers, children of the publish through the message's
# traceparent, same message id) and below them the INSERT and the SMTP send.
TRACE_SPANS='.data[0] as $t | [$t.spans[] | {
  service: $t.processes[.processID].serviceName, name: .operationName, id: .spanID,
  parent: ([.references[]? | select(.refType == "CHILD_OF") | .spanID][0] // ""),
  kind: ([.tags[]? | select(.key == "span.kind") | .value][0] // ""),
  tags: (reduce (.tags[]?) as $tag ({}; .[$tag.key] = ($tag.value | tostring)))
}]'
TRACE_CHECK='
def one($s; $n): [.[] | select(.service == $s and .name == $n)];
def need($l; $what): if ($l | length) == 1 then empty else "\($l | length) spans \($what), expected one" end;
def kind($l; $k; $what): if ($l | length) == 1 and $l[0].kind != $k then "\($what) has kind \($l[0].kind | @json), expected \($k)" else empty end;
def child($c; $p; $what): if ($c | length) == 1 and ($p | length) == 1 and $c[0].parent != $p[0].id
  then "\($what): parent span \($c[0].parent | @json), expected \($p[0].id)" else empty end;
def tag($l; $key; $value; $what): if ($l | length) == 1 and $l[0].tags[$key] != $value
  then "\($what): \($key) = \($l[0].tags[$key] | @json), expected \($value | @json)" else empty end;
one("auth-service"; "POST /auth/signup") as $req
| one("auth-service"; "send \($exchange)") as $pub
| one("user-service"; "process \($events)") as $users
| one("notification-service"; "process \($mails)") as $mail
| one("user-service"; "INSERT users") as $insert
| one("notification-service"; "smtp send") as $smtp
| need($req; "auth-service \"POST /auth/signup\""), need($pub; "auth-service \"send \($exchange)\""),
  need($users; "user-service \"process \($events)\""), need($mail; "notification-service \"process \($mails)\""),
  need($insert; "user-service \"INSERT users\""), need($smtp; "notification-service \"smtp send\""),
  kind($req; "server"; "the request"), kind($pub; "producer"; "the publish"),
  kind($users; "consumer"; "user-service processing"), kind($mail; "consumer"; "notification-service processing"),
  (if ($req | length) == 1 and $req[0].parent != $caller
    then "the request span has parent \($req[0].parent | @json), not the caller traceparent span \($caller)" else empty end),
  child($pub; $req; "the relay publish is not the child of the request (outbox row)"),
  child($users; $pub; "user-service processing is not the child of the publish (traceparent)"),
  child($mail; $pub; "notification-service processing is not the child of the publish (traceparent)"),
  child($insert; $users; "the INSERT is not the child of user-service processing"),
  child($smtp; $mail; "the SMTP send is not the child of notification-service processing"),
  tag($pub; "messaging.system"; "rabbitmq"; "the publish"), tag($pub; "messaging.destination.name"; $exchange; "the publish"),
  tag($pub; "messaging.rabbitmq.destination.routing_key"; "user.created"; "the publish"),
  tag($users; "messaging.destination.name"; $events; "user-service processing"),
  tag($mail; "messaging.destination.name"; $mails; "notification-service processing"),
  (if ($pub | length) == 1 then
     tag($users; "messaging.message.id"; $pub[0].tags["messaging.message.id"]; "user-service processing"),
     tag($mail; "messaging.message.id"; $pub[0].tags["messaging.message.id"]; "notification-service processing")
   else empty end)'
check_trace() {
  local ids trace_id caller email code deadline count problems
  ids=$(python3 -c 'import secrets; print("%032x %016x" % (secrets.randbits(128) | 1 << 127, secrets.randbits(64) | 1 << 63))')
  read -r trace_id caller <<<"$ids"
  email="proof-trace-$(date +%s%N)@example.com"
  code=$(http "$TMP/signup.json" -X POST "$AUTH_URL/auth/signup" -H 'content-type: application/json' \
    -H "traceparent: 00-$trace_id-$caller-01" \
    -d "$(jq -nc --arg e "$email" '{email:$e,password:"correct horse battery traced",name:"Proof traced"}')")
  [ "$code" = 201 ] || die "signup of $email: HTTP $code $(head -c 400 "$TMP/signup.json")"
  note "$email: signup 201 with traceparent 00-$trace_id-$caller-01"
  local trace_args=(--arg caller "$caller" --arg exchange events --arg events user_events_queue --arg mails notification_queue)
  deadline=$(( $(date +%s) + FLOW_DEADLINE ))
  while :; do
    code=$(http "$TMP/trace.json" "$JAEGER_URL/api/traces/$trace_id")
    if [ "$code" = 200 ] && jq "$TRACE_SPANS" "$TMP/trace.json" >"$TMP/spans.json" 2>/dev/null; then
      # Complete once each of the six spans is there (the exporters send in batches).
      count=$(jq -r "${trace_args[@]}" '[
        (.[] | select(.service == "auth-service" and (.name == "POST /auth/signup" or .name == "send \($exchange)"))),
        (.[] | select(.service == "user-service" and (.name == "process \($events)" or .name == "INSERT users"))),
        (.[] | select(.service == "notification-service" and (.name == "process \($mails)" or .name == "smtp send")))
      ] | map(.service + .name) | unique | length' "$TMP/spans.json")
      [ "$count" = 6 ] && break
    fi
    if [ "$(date +%s)" -ge "$deadline" ]; then
      note "spans of the trace so far: $(jq -c '[.[] | [.service, .name, .kind, .id, .parent]]' "$TMP/spans.json" 2>/dev/null || head -c 400 "$TMP/trace.json")"
      note "services Jaeger knows: $(curl -sS --max-time 10 "$JAEGER_URL/api/services" | jq -c '.data' 2>/dev/null || echo '?')"
      die "the trace $trace_id of the signup is not complete in Jaeger after ${FLOW_DEADLINE}s (GET /api/traces/$trace_id: HTTP $code)"
    fi
    sleep 1
  done
  problems=$(jq -r "${trace_args[@]}" "$TRACE_CHECK" "$TMP/spans.json") || die "the trace check (jq) failed on $TMP/spans.json"
  if [ -n "$problems" ]; then
    note "spans: $(jq -c '[.[] | [.service, .name, .kind, .id, .parent]]' "$TMP/spans.json")"
    die "the signup's trace $trace_id: $(tr '\n' ';' <<<"$problems")"
  fi
  note "trace $trace_id: $(jq length "$TMP/spans.json") spans from $(jq -r '[.[].service] | unique | join(", ")' "$TMP/spans.json")"
  jq -r '(map({key: .id, value: .}) | from_entries) as $by
    | .[] | .parent as $parent
    | "\(.service) \(.name | @json) (\(.kind)) span \(.id) <- \($by[$parent] | if . then "\(.service) \(.name | @json)" else "\($parent), outside the trace" end)"' \
    "$TMP/spans.json" | sed 's/^/      /'
  note "parent links: request <- caller traceparent; publish <- request; both consumers <- publish; INSERT, smtp send <- their consumer"
}

# ==== 1. Docker and Compose v2 =======================================================================
phase_begin "1. Docker (Debian's docker.io) and Compose v2 (Debian trixie's docker-compose)"
[ "$(id -u)" = 0 ] || die "run as root (apt-get, dockerd)"
for tool in curl jq ss; do
  command -v "$tool" >/dev/null || apt_install curl jq iproute2
done
if ! command -v dockerd >/dev/null; then
  note "installing docker.io"
  apt_install docker.io
fi
if ! docker info >/dev/null 2>&1; then
  if [ -d /run/systemd/system ] && systemctl start docker 2>/dev/null; then
    note "started docker.service"
  else
    mkdir -p "$CACHE_DIR"
    nohup dockerd >"$CACHE_DIR/dockerd.log" 2>&1 &
    STARTED_DOCKERD_PID=$!
    note "started dockerd (pid $STARTED_DOCKERD_PID, log $CACHE_DIR/dockerd.log)"
  fi
  for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
  docker info >/dev/null 2>&1 || die "dockerd does not answer; see $CACHE_DIR/dockerd.log"
fi
note "docker: client $(docker version --format '{{.Client.Version}}'), engine $(docker version --format '{{.Server.Version}}')"

compose_is_v2() {
  local version
  version=$(docker compose version --short 2>/dev/null | sed 's/^v//')
  [ -n "$version" ] && [ "${version%%.*}" -ge 2 ] 2>/dev/null
}
if ! compose_is_v2; then
  # Bookworm's own docker-compose package is Compose v1; trixie's is v2 and needs only libc6.
  # A trixie source is used for this one download only, with apt state kept in a temp dir.
  note "installing Compose v2 from Debian trixie's docker-compose package"
  mirror=$(debian_mirror)
  apt_tmp=$(mktemp -d)
  mkdir -p "$apt_tmp/lists/partial" "$apt_tmp/cache/archives/partial"
  printf 'deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] %s trixie main\n' "$mirror" \
    >"$apt_tmp/trixie.list"
  apt_opts=(-o "Dir::Etc::SourceList=$apt_tmp/trixie.list" -o Dir::Etc::SourceParts=/dev/null
    -o "Dir::State::Lists=$apt_tmp/lists" -o "Dir::Cache=$apt_tmp/cache" -o APT::Sandbox::User=root)
  apt-get "${apt_opts[@]}" update -qq
  (cd "$apt_tmp" && apt-get "${apt_opts[@]}" download docker-compose >/dev/null)
  dpkg -i "$apt_tmp"/docker-compose_*.deb >/dev/null
  rm -rf "$apt_tmp"
fi
compose_is_v2 || die "docker compose is not v2: $(docker compose version 2>&1)"
note "$(docker compose version)"
ports=("$HTTP_PORT" "$AUTH_OPS_PORT" "$AMQP_PORT" "$RABBITMQ_UI_PORT" "$POSTGRES_PORT" "$MAILPIT_UI_PORT" "$MAILPIT_SMTP_PORT")
[ "$CLUSTER" = 1 ] && ports+=("$AMQP_PORT_2" "$AMQP_PORT_3")
[ "$OBSERVABILITY" = 1 ] && ports+=("$JAEGER_UI_PORT")
for port in "${ports[@]}"; do
  port_free "$port" || die "host port $port is in use; set the PROOF_*_PORT variables (see the script)"
done
phase_end

# ==== 2. Base image ==================================================================================
phase_begin "2. base image $BASE_IMAGE (debootstrap --variant=minbase bookworm + docker import)"
if docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
  note "exists: skipped"
else
  command -v debootstrap >/dev/null || apt_install debootstrap
  mirror=$(debian_mirror)
  rootfs="$CACHE_DIR/rootfs-bookworm"
  rm -rf "$rootfs"
  mkdir -p "$CACHE_DIR"
  note "debootstrap from $mirror"
  debootstrap --variant=minbase bookworm "$rootfs" "$mirror" >"$CACHE_DIR/debootstrap.log" 2>&1 ||
    die "debootstrap failed; see $CACHE_DIR/debootstrap.log"
  # The image's apt uses the same Debian sources as this machine (updates and security too).
  if [ -f /etc/apt/sources.list.d/debian.sources ]; then
    cp /etc/apt/sources.list.d/debian.sources "$rootfs/etc/apt/sources.list.d/debian.sources"
    : >"$rootfs/etc/apt/sources.list"
  fi
  # As in Debian's official images: no service starts while a package installs.
  printf '#!/bin/sh\nexit 101\n' >"$rootfs/usr/sbin/policy-rc.d"
  chmod 0755 "$rootfs/usr/sbin/policy-rc.d"
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/log/*.log
  tar -C "$rootfs" -c . | docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' --change 'CMD ["/bin/bash"]' - "$BASE_IMAGE" >/dev/null
  rm -rf "$rootfs"
fi
note "$(docker image inspect "$BASE_IMAGE" --format '{{.Id}} {{.Size}} bytes')"
phase_end

# ==== 3. Stand-ins of the official infrastructure images ==============================================
phase_begin "3. stand-in images (rabbitmq, postgres, mailpit) FROM $BASE_IMAGE"
# The classic builder when the CLI has no buildx plugin (Debian's docker.io has none).
if docker buildx version >/dev/null 2>&1; then build_env=(); else build_env=(DOCKER_BUILDKIT=0); fi
for spec in "rabbitmq=$LOCAL_RABBITMQ_IMAGE" "postgres=$LOCAL_POSTGRES_IMAGE" "mailpit=$LOCAL_MAILPIT_IMAGE"; do
  dir=${spec%%=*} image=${spec#*=}
  begin=$(now)
  env "${build_env[@]}" docker build -q --build-arg "BASE_IMAGE=$BASE_IMAGE" -t "$image" \
    "docker/standins/$dir" >"$CACHE_DIR/build-$dir.log" 2>&1 ||
    { tail -n 30 "$CACHE_DIR/build-$dir.log" >&2; die "building $image failed"; }
  note "$image ($(seconds "$begin" "$(now)") s)"
done
phase_end

# ==== infra only: rabbitmq, postgres, mailpit ==========================================================
if [ "$INFRA_ONLY" = 1 ]; then
  phase_begin "4. infrastructure alone: compose up -d rabbitmq postgres mailpit, all healthy"
  STACK_UP=1
  compose up -d rabbitmq postgres mailpit >"$TMP/up.log" 2>&1 || { cat "$TMP/up.log" >&2; die "compose up failed"; }
  wait_healthy rabbitmq=1 postgres=1 mailpit=1
  phase_end

  phase_begin "5. infrastructure checks over the published ports"
  dbs=$(compose exec -T postgres psql -U postgres -Atc "SELECT string_agg(datname, ' ' ORDER BY datname) FROM pg_database WHERE datname IN ('auth','users','notifications')")
  [ "$dbs" = "auth notifications users" ] || die "databases from docker/postgres-init.sql: got '$dbs'"
  note "postgres: databases $dbs"
  admin=$(compose exec -T rabbitmq cat /run/broker-secrets/admin-password)
  overview=$(curl -sS --max-time 10 -u "admin:$admin" "http://127.0.0.1:$RABBITMQ_UI_PORT/api/overview") ||
    die "RabbitMQ management API on $RABBITMQ_UI_PORT"
  note "rabbitmq: $(jq -r '"RabbitMQ \(.rabbitmq_version), listeners: \([.listeners[] | "\(.protocol):\(.port)"] | join(" "))"' <<<"$overview"), admin with the generated password accepted from a non-loopback peer (the published port)"
  code=$(http "$TMP/mp.json" "$MAILPIT_URL/api/v1/messages")
  if [ "$code" != 200 ] || ! jq -e 'has("total") and has("messages")' "$TMP/mp.json" >/dev/null; then
    die "mail catcher API: HTTP $code"
  fi
  note "mailpit: GET /api/v1/messages 200, total $(jq .total "$TMP/mp.json")"
  phase_end
  exit 0
fi

# ==== 4. Service images ===============================================================================
phase_begin "4a. cargo build --release -p auth-service -p user-service -p notification-service"
cargo build --release -p auth-service -p user-service -p notification-service 2>"$TMP/cargo.log" ||
  { tail -n 40 "$TMP/cargo.log" >&2; die "cargo build failed"; }
mkdir -p "$PREBUILT_CONTEXT"
for service in "${SERVICES[@]}"; do
  install -m 0755 "target/release/$service" "$PREBUILT_CONTEXT/$service"
done
note "binaries copied to $PREBUILT_CONTEXT ($(du -sh "$PREBUILT_CONTEXT" | cut -f1))"
phase_end

phase_begin "4b. service images: compose build (Dockerfile target prebuilt, RUNTIME_IMAGE=$BASE_IMAGE)"
compose build "${SERVICES[@]}" >"$TMP/build.log" 2>&1 || { tail -n 40 "$TMP/build.log" >&2; die "compose build failed"; }
for service in "${SERVICES[@]}"; do
  image=$(compose config --format json | jq -r --arg s "$service" '.services[$s].image // empty')
  [ -n "$image" ] || image="$PROJECT-$service"
  note "$image: user $(docker image inspect "$image" --format '{{.Config.User}}'), healthcheck $(docker image inspect "$image" --format '{{json .Config.Healthcheck.Test}}'), $(docker image inspect "$image" --format '{{.Size}}') bytes"
done
phase_end

if [ "$OBSERVABILITY" = 1 ]; then
  phase_begin "4c. Jaeger stand-in $LOCAL_JAEGER_IMAGE: otlp-sink (cargo build -p tests --bin otlp-sink)"
  # The debug profile: the test kit's dependencies are usually built for it already.
  cargo build -p tests --bin otlp-sink 2>"$TMP/cargo-sink.log" ||
    { tail -n 40 "$TMP/cargo-sink.log" >&2; die "cargo build of otlp-sink failed"; }
  sink_context="$CACHE_DIR/jaeger-context"
  rm -rf "$sink_context"
  mkdir -p "$sink_context"
  objcopy --strip-debug target/debug/otlp-sink "$sink_context/otlp-sink"
  env "${build_env[@]}" docker build -q -f docker/standins/jaeger/Dockerfile \
    --build-arg "BASE_IMAGE=$BASE_IMAGE" -t "$LOCAL_JAEGER_IMAGE" "$sink_context" >"$CACHE_DIR/build-jaeger.log" 2>&1 ||
    { tail -n 30 "$CACHE_DIR/build-jaeger.log" >&2; die "building $LOCAL_JAEGER_IMAGE failed"; }
  note "$LOCAL_JAEGER_IMAGE: otlp-sink $(du -h "$sink_context/otlp-sink" | cut -f1), $(docker image inspect "$LOCAL_JAEGER_IMAGE" --format '{{.Size}}') bytes"
  rm -rf "$sink_context"
  phase_end
fi

# ==== cluster: the cluster variant instead of 5-7 =======================================================
if [ "$CLUSTER" = 1 ]; then
  # shellcheck source=scripts/compose-proof-cluster.sh
  . "$ROOT/scripts/compose-proof-cluster.sh"
  exit 0
fi

# ==== 5. The stack ====================================================================================
phase_begin "5a. compose up -d (docker-compose.yml + docker/compose.local.yml, no .env), every container healthy"
# .env.example only spells out the defaults: the stack it configures is the one without it.
compose config >"$TMP/config-none.yml" 2>&1 || { cat "$TMP/config-none.yml" >&2; die "compose config failed"; }
ENV_FILE="$ROOT/.env.example" compose config >"$TMP/config-example.yml" 2>&1
diff -u "$TMP/config-none.yml" "$TMP/config-example.yml" >"$TMP/config.diff" ||
  { cat "$TMP/config.diff" >&2; die ".env.example configures another stack than no .env at all"; }
note "compose config with .env.example = without any .env"
[ ! -e "$ROOT/.env" ] || note "(a .env exists in the project directory; the proof does not read it)"
STACK_UP=1
# `up -d` itself returns once the infrastructure is healthy (depends_on) and the services started.
begin=$(now)
compose up -d >"$TMP/up.log" 2>&1 || { cat "$TMP/up.log" >&2; die "compose up failed"; }
note "compose up -d returned after $(seconds "$begin" "$(now)") s"
wait_healthy rabbitmq=1 postgres=1 mailpit=1 auth-service=1 user-service=1 notification-service=1
[ "$OBSERVABILITY" = 0 ] || wait_jaeger
init_state=$(container_states | awk '$1 == "secrets-init" { print $2 }')
note "secrets-init: $init_state; $(compose logs --no-color secrets-init 2>&1 | grep -c 'generated') credentials generated"
stack_credentials
phase_end

phase_begin "5b. smoke flow on 127.0.0.1: signup 201, login, GET /users/{id} 200, one welcome mail"
: >"$TMP/users.txt"
code=$(http "$TMP/readyz" "$AUTH_OPS_URL/readyz")
note "auth-service /readyz: HTTP $code"
smoke_user single
check_mails
check_ops user-service=1 notification-service=1
phase_end

phase_begin "5b2. secure defaults: token key, broker users, database roles, message size limit"
check_security "$(jq -r '.accessToken // .access_token // .token' "$TMP/login.json")"
phase_end

if [ "$OBSERVABILITY" = 1 ]; then
  phase_begin "5b3. one signup is one trace across the three services (Jaeger's query API, OTLP from the services)"
  check_trace
  phase_end
else
  PHASE_NAMES+=("5b3. traces") PHASE_TIMES+=("-") PHASE_RESULTS+=("skipped (--skip-traces)")
fi

if [ "$SKIP_E2E" = 0 ] && { [ -e tests/tests/e2e.rs ] || [ -d tests/tests/e2e ]; }; then
  phase_begin "5c. end-to-end suite against the stack (cargo test -p tests --test e2e)"
  E2E_STACK=1 E2E_AUTH_URL="$AUTH_URL" E2E_MAILPIT_URL="$MAILPIT_URL" \
    E2E_AMQP_URL="$HOST_AMQP_URL" E2E_USER_QUEUE=user_queue AMQP_URL="$HOST_AMQP_URL" \
    TEST_AMQP_URL="$HOST_AMQP_URL" TEST_DATABASE_URL="$HOST_POSTGRES_URL" \
    cargo test -p tests --test e2e 2>&1 | tee "$TMP/e2e.log" | grep -E '^(test |test result|running|error)' | sed 's/^/    /'
  [ "${PIPESTATUS[0]}" = 0 ] || { tail -n 60 "$TMP/e2e.log" >&2; die "the e2e suite failed"; }
  phase_end
else
  PHASE_NAMES+=("5c. end-to-end suite") PHASE_TIMES+=("-") PHASE_RESULTS+=("skipped (no tests/tests/e2e or --skip-e2e)")
fi

phase_begin "5d. compose up -d --scale user-service=3 --scale notification-service=2, all healthy"
compose up -d --scale user-service=3 --scale notification-service=2 >"$TMP/scale.log" 2>&1 ||
  { cat "$TMP/scale.log" >&2; die "compose up --scale failed"; }
wait_healthy rabbitmq=1 postgres=1 mailpit=1 auth-service=1 user-service=3 notification-service=2
check_ops user-service=3 notification-service=2
phase_end

phase_begin "5e. smoke flow on the scaled stack: 6 signups, exactly one mail each"
for n in 1 2 3 4 5 6; do
  smoke_user "scaled$n"
done
check_mails
phase_end

phase_begin "5f. compose down (volumes kept) and up again: healthy, data kept, no mail sent again"
key_before=$(compose exec -T auth-service cat /run/secrets/jwt-secret | sha256sum)
compose down --timeout 30 >"$TMP/down.log" 2>&1 || { cat "$TMP/down.log" >&2; die "compose down failed"; }
note "down: $(grep -c 'Removed' "$TMP/down.log") containers and networks removed, volumes kept"
compose up -d >"$TMP/up2.log" 2>&1 || { cat "$TMP/up2.log" >&2; die "compose up failed"; }
wait_healthy rabbitmq=1 postgres=1 mailpit=1 auth-service=1 user-service=1 notification-service=1
read -r first_id first_email first_password <"$TMP/all-users.txt"
code=$(http "$TMP/login.json" -X POST "$AUTH_URL/auth/login" -H 'content-type: application/json' \
  -d "$(jq -nc --arg e "$first_email" --arg p "$first_password" '{email:$e,password:$p}')")
[ "$code" = 200 ] || die "login of $first_email after the restart: HTTP $code $(head -c 400 "$TMP/login.json")"
token=$(jq -r '.accessToken // .access_token // .token // empty' "$TMP/login.json")
code=$(http "$TMP/user.json" "$AUTH_URL/users/$first_id" -H "authorization: Bearer $token")
[ "$code" = 200 ] || die "GET /users/$first_id after the restart: HTTP $code $(head -c 400 "$TMP/user.json")"
note "$first_email: login 200 and GET /users/$first_id 200 after the restart (Postgres volume kept)"
[ "$(compose exec -T auth-service cat /run/secrets/jwt-secret | sha256sum)" = "$key_before" ] ||
  die "the token key changed across the restart"
! compose logs --no-color secrets-init 2>&1 | grep -q generated || die "secrets-init generated credentials again"
note "secrets-init ran again and generated nothing: the token key and passwords are the first start's"
sleep 3
# The mail catcher keeps mails in memory only, so it starts empty: any mail now is a resend.
resent=$(curl -sS --max-time 10 "$MAILPIT_URL/api/v1/messages" | jq '.total')
[ "$resent" = 0 ] || die "$resent mails were sent again after the restart"
note "no welcome mail sent again after the restart"
phase_end

# ==== 6. The test kit's testcontainers path ===========================================================
if [ "$SKIP_KIT" = 0 ]; then
  phase_begin "6. test kit via testcontainers: cargo test -p tests --test kit_infra (stand-in images)"
  kit_since=$(date +%s)
  env -u TEST_AMQP_URL -u TEST_DATABASE_URL \
    TEST_RABBITMQ_IMAGE="$LOCAL_RABBITMQ_IMAGE" TEST_POSTGRES_IMAGE="$LOCAL_POSTGRES_IMAGE" \
    cargo test -p tests --test kit_infra 2>&1 | tee "$TMP/kit.log" | grep -E '^(test |test result|running|error)' | sed 's/^/    /'
  [ "${PIPESTATUS[0]}" = 0 ] || { tail -n 60 "$TMP/kit.log" >&2; die "kit_infra failed"; }
  # The containers testcontainers started (its label), from the daemon's event log: proves the
  # kit used Docker rather than falling back to the machine's own servers.
  started=$(docker events --since "$kit_since" --until "$(date +%s)" \
    --filter label=org.testcontainers.managed-by=testcontainers --filter event=start \
    --format '{{.From}}' | sort | uniq -c | sed 's/^ *//')
  note "containers the kit started: $(tr '\n' ';' <<<"$started")"
  if ! grep -q " $LOCAL_RABBITMQ_IMAGE\$" <<<"$started" || ! grep -q " $LOCAL_POSTGRES_IMAGE\$" <<<"$started"; then
    die "the kit did not start both stand-in containers (did it fall back to the local servers?)"
  fi
  for _ in $(seq 1 20); do
    left=$(docker ps -aq --filter label=org.testcontainers.managed-by=testcontainers)
    [ -z "$left" ] && break
    sleep 1
  done
  [ -z "$left" ] || die "the kit left containers behind: $left"
  note "the kit's reaper removed its containers"
  phase_end
else
  PHASE_NAMES+=("6. test kit via testcontainers") PHASE_TIMES+=("-") PHASE_RESULTS+=("skipped (--skip-kit)")
fi

# ==== 7. The default target, from source ==============================================================
if [ "$SOURCE_BUILD" = 1 ]; then
  phase_begin "7a. stand-in Rust image $LOCAL_RUST_IMAGE from this machine's toolchain"
  sysroot=$(rustc --print sysroot)
  note "toolchain: $(rustc --version) at $sysroot"
  rust_context="$CACHE_DIR/rust-context"
  rm -rf "$rust_context"
  mkdir -p "$rust_context/toolchain"
  for part in bin lib libexec; do
    if [ -d "$sysroot/$part" ]; then cp -a "$sysroot/$part" "$rust_context/toolchain/"; fi
  done
  # cargo in the image reaches the crates registry as this machine does: with this machine's CA bundle.
  cp "${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}" "$rust_context/ca-certificates.crt"
  env "${build_env[@]}" docker build -q -f docker/standins/rust/Dockerfile \
    --build-arg "BASE_IMAGE=$BASE_IMAGE" -t "$LOCAL_RUST_IMAGE" "$rust_context" >"$CACHE_DIR/build-rust.log" 2>&1 ||
    { tail -n 30 "$CACHE_DIR/build-rust.log" >&2; die "building $LOCAL_RUST_IMAGE failed"; }
  rm -rf "$rust_context"
  phase_end

  phase_begin "7b. docker compose build (docker-compose.yml alone, default target, BUILDER_IMAGE=$LOCAL_RUST_IMAGE)"
  compose_source() {
    docker compose -p "$PROJECT-source" --env-file "$ROOT/.env.example" -f "$ROOT/docker-compose.yml" "$@"
  }
  compose_source build --build-arg "BUILDER_IMAGE=$LOCAL_RUST_IMAGE" --build-arg "RUNTIME_IMAGE=$BASE_IMAGE" \
    "${SERVICES[@]}" >"$TMP/source-build.log" 2>&1 || { tail -n 60 "$TMP/source-build.log" >&2; die "the source build failed"; }
  shape() { docker image inspect "$1" --format '{{.Config.User}} {{json .Config.Entrypoint}} {{json .Config.Healthcheck}}'; }
  for service in "${SERVICES[@]}"; do
    source_image="$PROJECT-source-$service" prebuilt_image="$PROJECT-$service"
    [ "$(shape "$source_image")" = "$(shape "$prebuilt_image")" ] ||
      die "$source_image differs from $prebuilt_image: $(shape "$source_image") vs $(shape "$prebuilt_image")"
    # The binary runs in the runtime image: its health check, with nothing listening, exits 1
    # (a binary that cannot start would exit otherwise, e.g. 127).
    status=0
    docker run --rm "$source_image" healthcheck >/dev/null 2>&1 || status=$?
    [ "$status" = 1 ] || die "$source_image: healthcheck exited $status, expected 1"
    note "$source_image: $(docker image inspect "$source_image" --format '{{.Size}}') bytes, same user/entrypoint/healthcheck as the prebuilt image, binary runs"
  done
  docker image rm "${SERVICES[@]/#/$PROJECT-source-}" >/dev/null
  phase_end
fi
