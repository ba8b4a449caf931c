# The cluster variant of scripts/compose-proof.sh (`scripts/compose-proof.sh --cluster`): sourced
# by it after phases 1-4 (Docker, base image, stand-ins, service images), with its helpers,
# settings and teardown trap; `compose` already runs docker-compose.yml +
# docker-compose.cluster.yml + docker/compose.local.yml + docker/compose.cluster.local.yml.
#
#   C1. compose up -d: three RabbitMQ nodes that must cluster from their config file (peer
#       discovery, one cookie, definitions), every container healthy (the nodes only once each
#       sees three running nodes, the services only after the three nodes).
#   C2. the cluster seen from each node; the services' environment (three URLs, quorum).
#   C3. the smoke flow (signup, login, GET /users/{id}, one welcome mail, ops ports).
#   C4. `rabbitmqctl list_queues name type`: every queue a quorum queue.
#   C5. signups at PROOF_CLUSTER_RATE per second; after 10 s the node most service links use is
#       stopped (`docker compose stop`) for PROOF_CLUSTER_OUTAGE seconds, then started; the load
#       goes on until the node is healthy again (+10 s). Every signup must be accepted (201) and
#       mailed exactly once; the signups of the outage must be mailed during the outage.
#   C6. after the return: three nodes running, the restarted node sees every queue, all quorum.

# The token key is the generated one (docker/secrets-init.sh), as in the base stack;
# PROOF_JWT_SECRET=<32 bytes or more> hands auth-service an explicit one instead.
export PROOF_JWT_SECRET=${PROOF_JWT_SECRET-}
HEALTH_DEADLINE=${PROOF_HEALTH_DEADLINE:-480}
FLOW_DEADLINE=${PROOF_FLOW_DEADLINE:-120}
CLUSTER_RATE=${PROOF_CLUSTER_RATE:-5}
CLUSTER_OUTAGE=${PROOF_CLUSTER_OUTAGE:-30}
CLUSTER_STOP_NODE=${PROOF_CLUSTER_STOP_NODE:-}
NODES=(rabbitmq rabbitmq-2 rabbitmq-3)
ALL_HEALTHY=(rabbitmq=1 rabbitmq-2=1 rabbitmq-3=1 postgres=1 mailpit=1 auth-service=1 user-service=1 notification-service=1)

# rabbitmqctl inside node $1, authenticated with the cluster's cookie.
rmqctl() {
  local node=$1
  shift
  compose exec -T "$node" sh -c 'exec rabbitmqctl -q --erlang-cookie "$RABBITMQ_CLUSTER_COOKIE" "$@"' rabbitmqctl "$@"
}

# The nodes the services' links use, from their /readyz (`brokers`): `connection host:port` lines.
links_in_use() {
  local address
  curl -sS --max-time 5 "$AUTH_OPS_URL/readyz" | jq -r '.brokers[]? | "auth-service/\(.connection) \(.node)"' || true
  for service in user-service notification-service; do
    address=$(compose port --index 1 "$service" 9090 2>/dev/null | tail -n 1) || continue
    curl -sS --max-time 5 "http://$address/readyz" | jq -r --arg s "$service" '.brokers[]? | "\($s)/\(.connection) \(.node)"' || true
  done
}

# Every queue of `list_queues name type` (asked of node $1) is a quorum queue, and the shared
# queues exist.
check_quorum() {
  local node=$1 listing
  listing=$(rmqctl "$node" list_queues name type) || die "rabbitmqctl list_queues on $node failed"
  listing=$(grep -v -E '^(name[[:space:]]+type|Timeout:|Listing queues)' <<<"$listing" | sort) || true
  printf '%s\n' "$listing" | sed "s/^/    [$node] /"
  for queue in user_queue user_events_queue notification_queue; do
    awk -v q="$queue" '$1 == q' <<<"$listing" | grep -q . || die "queue $queue missing on $node"
  done
  local others
  others=$(awk '$2 != "quorum"' <<<"$listing")
  [ -z "$others" ] || die "not quorum queues (on $node): $others"
  note "$node: all $(wc -l <<<"$listing") queues are quorum queues"
}

# One signup; appends `n start end http-code email` to $TMP/load.txt.
one_signup() {
  local n=$1 email start end code
  email="cluster-$n-$RUN_ID@example.com"
  start=$(now)
  code=$(curl -sS -o /dev/null -w '%{http_code}' --max-time 30 -X POST "$AUTH_URL/auth/signup" \
    -H 'content-type: application/json' \
    -d "{\"email\":\"$email\",\"password\":\"correct horse battery $n\",\"name\":\"Cluster $n\"}" 2>/dev/null) || code=000
  end=$(now)
  printf '%s %s %s %s %s\n' "$n" "$start" "$end" "$code" "$email" >>"$TMP/load.txt"
}

# Signups at CLUSTER_RATE per second (each in its own process, so a slow one does not slow the
# rate) until $TMP/load.stop exists, or the proof ended, or after 15 minutes.
signup_load() {
  local n=0 interval until=$(( $(date +%s) + 900 ))
  interval=$(awk -v r="$CLUSTER_RATE" 'BEGIN { printf "%.3f", 1 / r }')
  while [ ! -e "$TMP/load.stop" ] && [ -d "$TMP" ] && kill -0 $$ 2>/dev/null && [ "$(date +%s)" -lt "$until" ]; do
    n=$((n + 1))
    one_signup "$n" &
    sleep "$interval"
  done
  wait
}

mark() { printf '%s %s\n' "$1" "$(now)" >>"$TMP/marks.txt"; }

# The mail catcher's messages as `recipient created` lines.
mail_list() {
  curl -sS --max-time 20 "$MAILPIT_URL/api/v1/messages?limit=100000" |
    jq -r '.messages[] | .To[] as $to | "\($to.Address | ascii_downcase) \(.Created)"'
}

# ==== C1 ==============================================================================================
phase_begin "C1. compose up -d (docker-compose.yml + docker-compose.cluster.yml + stand-ins), every container healthy"
STACK_UP=1
begin=$(now)
compose config --format json >"$TMP/config.json"
for node in "${NODES[@]}"; do
  note "$node: image $(jq -r --arg s "$node" '.services[$s].image' "$TMP/config.json"), hostname $(jq -r --arg s "$node" '.services[$s].hostname' "$TMP/config.json")"
done
compose up -d >"$TMP/up.log" 2>&1 || { cat "$TMP/up.log" >&2; die "compose up failed"; }
note "compose up -d returned after $(seconds "$begin" "$(now)") s (it waits for the three nodes to be healthy)"
wait_healthy "${ALL_HEALTHY[@]}"
note "all healthy $(seconds "$begin" "$(now)") s after compose up"
phase_end

# ==== C2 ==============================================================================================
phase_begin "C2. one cluster of three nodes; the services' broker settings"
for node in "${NODES[@]}"; do
  running=$(rmqctl "$node" eval 'rabbit_nodes:all_running().' | tr -d '\n ')
  note "$node: running nodes $running"
  [ "$(tr ',' '\n' <<<"$running" | grep -c rabbit@)" = 3 ] || die "$node does not see three running nodes: $running"
done
note "RabbitMQ $(rmqctl rabbitmq eval 'rabbit_misc:version().' | tr -d '"'), cookie from RABBITMQ_CLUSTER_COOKIE (-setcookie), nodes found by classic_config peer discovery (nothing joined by hand)"
for service in "${SERVICES[@]}"; do
  env_of=$(jq -r --arg s "$service" '.services[$s].environment | "AMQP_QUEUE_TYPE=\(.AMQP_QUEUE_TYPE)"' "$TMP/config.json")
  grep -q 'AMQP_QUEUE_TYPE=quorum' <<<"$env_of" || die "$service: $env_of"
  # The generated URL file (AMQP_URL_FILE): the service's own user on each of the three nodes.
  urls=$(compose exec -T "$service" cat /run/secrets/amqp-url | sed -E 's#amqp://([^:]*):[^@]*@#amqp://\1:***@#g')
  [ "$(grep -o 'amqp://' <<<"$urls" | wc -l)" = 3 ] || die "$service: not three URLs: $urls"
  grep -q "amqp://$service:" <<<"$urls" || die "$service: not its own broker user: $urls"
  note "$service: $env_of AMQP_URL_FILE=$urls"
done
links_in_use | sed 's/^/    link /'
phase_end

# ==== C3 ==============================================================================================
phase_begin "C3. smoke flow on the cluster: signup 201, login, GET /users/{id} 200, one welcome mail"
: >"$TMP/users.txt"
smoke_user cluster
check_mails
check_ops user-service=1 notification-service=1
phase_end

# ==== C4 ==============================================================================================
phase_begin "C4. rabbitmqctl list_queues name type: every queue a quorum queue"
check_quorum rabbitmq
rmqctl rabbitmq list_queues name leader members 2>/dev/null | grep -v -E '^(name|Timeout:|Listing)' | sed 's/^/    leader, members: /' || true
phase_end

# ==== C5 ==============================================================================================
STOP_REASON="PROOF_CLUSTER_STOP_NODE"
if [ -z "$CLUSTER_STOP_NODE" ]; then
  STOP_REASON="the node most links use"
  # The node most of the services' links (clients and servers) are connected to.
  CLUSTER_STOP_NODE=$(links_in_use | awk '{ split($2, a, ":"); print a[1] }' | sort | uniq -c | sort -k1,1nr -k2 | awk 'NR == 1 { print $2 }')
  [ -n "$CLUSTER_STOP_NODE" ] || CLUSTER_STOP_NODE=rabbitmq-2
fi
for node in "${NODES[@]}"; do [ "$node" = "$CLUSTER_STOP_NODE" ] || { OTHER_NODE=$node; break; }; done
phase_begin "C5. signups at ${CLUSTER_RATE}/s; stop $CLUSTER_STOP_NODE ($STOP_REASON) for ${CLUSTER_OUTAGE} s, start it again"
RUN_ID=$(date +%s)
: >"$TMP/load.txt" ; : >"$TMP/marks.txt"; rm -f "$TMP/load.stop"
mark load_start
signup_load &
LOAD_PID=$!
sleep 10
mark stop_begin
compose stop --timeout 30 "$CLUSTER_STOP_NODE" >"$TMP/stop.log" 2>&1 || { cat "$TMP/stop.log" >&2; die "compose stop $CLUSTER_STOP_NODE failed"; }
mark stopped
note "$CLUSTER_STOP_NODE stopped ($(seconds "$(awk '$1 == "stop_begin" { print $2 }' "$TMP/marks.txt")" "$(now)") s for a clean shutdown)"
sleep 5
note "5 s into the outage, the links:"
links_in_use | sed 's/^/      /'
rmqctl "$OTHER_NODE" list_queues name leader 2>/dev/null | grep -v -E '^(name|Timeout:|Listing)' | sed 's/^/      leader now: /' || true
stopped_at=$(awk '$1 == "stopped" { print $2 }' "$TMP/marks.txt")
while [ "$(seconds "$stopped_at" "$(now)" | cut -d. -f1)" -lt "$CLUSTER_OUTAGE" ]; do sleep 1; done
mail_list >"$TMP/mails-at-return.txt"
mark start_begin
compose start "$CLUSTER_STOP_NODE" >"$TMP/start.log" 2>&1 || { cat "$TMP/start.log" >&2; die "compose start $CLUSTER_STOP_NODE failed"; }
wait_healthy "${ALL_HEALTHY[@]}"
mark healthy_again
note "$CLUSTER_STOP_NODE healthy again (three running nodes) $(seconds "$(awk '$1 == "start_begin" { print $2 }' "$TMP/marks.txt")" "$(now)") s after compose start"
sleep 10
touch "$TMP/load.stop"
wait "$LOAD_PID"
mark load_end
note "$(wc -l <"$TMP/load.txt") signups offered; waiting for their mails"
deadline=$(( $(date +%s) + FLOW_DEADLINE ))
while :; do
  mail_list >"$TMP/mails.txt"
  missing=$(awk '$4 == 201 { print tolower($5) }' "$TMP/load.txt" | sort -u | comm -23 - <(awk '{ print $1 }' "$TMP/mails.txt" | sort -u) | wc -l)
  [ "$missing" = 0 ] && break
  [ "$(date +%s)" -lt "$deadline" ] || { note "$missing accepted signups without a mail after ${FLOW_DEADLINE}s"; break; }
  sleep 2
done
sleep 5 # a duplicate would arrive right after the first
mail_list >"$TMP/mails.txt"
python3 - "$TMP/load.txt" "$TMP/mails.txt" "$TMP/marks.txt" "$TMP/mails-at-return.txt" "$CLUSTER_STOP_NODE" <<'PY' || die "the outage run failed (see above)"
import collections, datetime as dt, statistics, sys

load_file, mails_file, marks_file, at_return_file, node = sys.argv[1:6]
marks = {k: float(v) for k, v in (line.split() for line in open(marks_file))}
signups = []
for line in open(load_file):
    n, start, end, code, email = line.split()
    signups.append((int(n), float(start), float(end), code, email.lower()))
signups.sort()

def parse(created):
    return dt.datetime.fromisoformat(created.replace("Z", "+00:00")).timestamp()

mails = collections.defaultdict(list)
for line in open(mails_file):
    to, created = line.split()
    mails[to].append(parse(created))
at_return = {line.split()[0] for line in open(at_return_file) if line.strip()}

stop, stopped, start, healthy = marks["stop_begin"], marks["stopped"], marks["start_begin"], marks["healthy_again"]
windows = [
    ("before the stop", marks["load_start"], stop),
    (f"{node} down (stop .. start)", stop, start),
    ("rejoining (start .. healthy)", start, healthy),
    ("after", healthy, marks["load_end"]),
]
ours = [s for s in signups if s[4].startswith("cluster-")]
failures = []
def pct(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p * (len(values) - 1))))] if values else float("nan")

print(f"    {'window':34} {'s':>5} {'offered':>8} {'201':>5} {'mailed':>7} {'twice':>6} "
      f"{'signup p50/max ms':>18} {'mail after signup p50/max s':>28}")
for name, lo, hi in windows:
    part = [s for s in ours if lo <= s[1] < hi]
    ok = [s for s in part if s[3] == "201"]
    mailed = [s for s in ok if mails.get(s[4])]
    twice = [s for s in ok if len(mails.get(s[4], [])) > 1]
    lat = [1000 * (s[2] - s[1]) for s in part]
    mail_lat = [min(mails[s[4]]) - s[2] for s in mailed]
    print(f"    {name:34} {hi - lo:5.1f} {len(part):8} {len(ok):5} {len(mailed):7} {len(twice):6} "
          f"{pct(lat, .5):8.0f} /{max(lat, default=0):7.0f}  {pct(mail_lat, .5):12.2f} /{max(mail_lat, default=0):7.2f}")

bad_codes = collections.Counter(s[3] for s in ours if s[3] != "201")
if bad_codes:
    failures.append(f"signups not accepted: {dict(bad_codes)}")
not_once = {s[4]: len(mails.get(s[4], [])) for s in ours if s[3] == "201" and len(mails.get(s[4], [])) != 1}
if not_once:
    failures.append(f"{len(not_once)} accepted signups not mailed exactly once: {dict(list(not_once.items())[:10])}")

during = [s for s in ours if stopped <= s[2] and s[1] < start and s[3] == "201"]
mailed_during = [s for s in during if s[4] in at_return]
print(f"    outage: {len(during)} signups accepted while {node} was down, {len(mailed_during)} of them "
      f"mailed before it was started again")
if during and not mailed_during:
    failures.append("no signup of the outage was mailed during the outage")
all_mails = sorted(t for s in ours for t in mails.get(s[4], []))
after_stop = [t for t in all_mails if t >= stop - 1]
gaps = [b - a for a, b in zip(after_stop, after_stop[1:])]
print(f"    longest pause between two mails from the stop on: {max(gaps, default=0):.2f} s "
      f"(a signup every {1 / (len(ours) / (marks['load_end'] - marks['load_start'])):.2f} s on average)")
print(f"    in all: {len(ours)} signups offered, {sum(s[3] == '201' for s in ours)} accepted, "
      f"{sum(1 for s in ours if len(mails.get(s[4], [])) == 1)} mailed exactly once, "
      f"{sum(1 for s in ours if len(mails.get(s[4], [])) > 1)} mailed more than once")
for failure in failures:
    print(f"    FAILED: {failure}")
sys.exit(1 if failures else 0)
PY
phase_end

# ==== C6 ==============================================================================================
phase_begin "C6. after the return: three running nodes, $CLUSTER_STOP_NODE sees every queue, all quorum"
running=$(rmqctl "$CLUSTER_STOP_NODE" eval 'rabbit_nodes:all_running().' | tr -d '\n ')
note "$CLUSTER_STOP_NODE: running nodes $running"
[ "$(tr ',' '\n' <<<"$running" | grep -c rabbit@)" = 3 ] || die "$CLUSTER_STOP_NODE does not see three running nodes: $running"
check_quorum "$CLUSTER_STOP_NODE"
rmqctl "$CLUSTER_STOP_NODE" list_queues name messages leader online 2>/dev/null | grep -v -E '^(name|Timeout:|Listing)' |
  sed 's/^/    messages, leader, online members: /' || true
links_in_use | sed 's/^/    link /'
phase_end
