#!/usr/bin/env python3
"""Capture RabbitMQ 3.10 management API responses for docs/dev/samples/rabbitmq-3.10/.

Research aid (not part of the build or tests). Needs Debian's rabbitmq-server (3.10.8),
python3 with `requests` and `pika`, and a private node started like this:

    mkdir -p /tmp/rmq-mgmt && chmod 777 /tmp/rmq-mgmt && cd /tmp/rmq-mgmt
    echo '[rabbitmq_management,rabbitmq_prometheus].' > enabled_plugins
    printf 'management.tcp.port = 15699\nprometheus.tcp.port = 15799\n' > rabbitmq.conf
    printf 'management.rates_mode = basic\ncollect_statistics_interval = 5000\n' >> rabbitmq.conf
    export RABBITMQ_NODENAME=mgmt@localhost RABBITMQ_NODE_PORT=5699 RABBITMQ_DIST_PORT=25699 \
      RABBITMQ_MNESIA_BASE=/tmp/rmq-mgmt/mnesia RABBITMQ_LOG_BASE=/tmp/rmq-mgmt/log \
      RABBITMQ_ENABLED_PLUGINS_FILE=/tmp/rmq-mgmt/enabled_plugins \
      RABBITMQ_CONFIG_FILE=/tmp/rmq-mgmt/rabbitmq RABBITMQ_PID_FILE=/tmp/rmq-mgmt/pid
    setsid rabbitmq-server &           # wait until :15699 answers
    python3 capture.py OUTDIR          # ~1 minute; writes *.json, responses.json, status-codes.txt
    rabbitmqctl -n mgmt@localhost stop && rm -rf /tmp/rmq-mgmt

Run it against a fresh node: it creates users/vhosts/queues and expects them absent.
health-alarms-failed.json, connections-username-tracked.json, overview-management-user.json and
overview-disable-stats.json were captured by hand afterwards (see management-api.md).
"""
import json, os, sys, time, base64, urllib.parse
import requests, pika

API = "http://localhost:15699/api"
AMQP_PORT = 5699
NODE = "mgmt@localhost"
OUT = sys.argv[1] if len(sys.argv) > 1 else "samples"
os.makedirs(OUT, exist_ok=True)
GUEST = ("guest", "guest")
q = lambda s: urllib.parse.quote(s, safe="")

exchanges_log = []   # list of {request, status, headers, body}
status_log = []      # compact list of (method, path, status)

KEEP_HEADERS = {"content-type", "location", "www-authenticate", "cache-control", "vary",
                "content-length", "allow", "server", "content-security-policy"}


def call(method, path, body=None, auth=GUEST, raw_body=None, headers=None, record=True, note=None):
    url = API + path
    h = dict(headers or {})
    data = None
    if raw_body is not None:
        data = raw_body
    elif body is not None:
        data = json.dumps(body)
        h.setdefault("content-type", "application/json")
    r = requests.request(method, url, data=data, auth=auth, headers=h, allow_redirects=False)
    try:
        parsed = r.json() if r.content else None
    except ValueError:
        parsed = r.text
    entry = {
        "request": {"method": method, "path": "/api" + path,
                    "auth": (auth[0] if auth else None),
                    **({"headers": headers} if headers else {}),
                    **({"body": body} if body is not None else {}),
                    **({"raw_body": raw_body} if raw_body is not None else {})},
        "status": r.status_code,
        "headers": {k.lower(): v for k, v in r.headers.items() if k.lower() in KEEP_HEADERS},
        "body": parsed,
    }
    if note:
        entry["note"] = note
    if record:
        exchanges_log.append(entry)
    status_log.append(f"{r.status_code} {method} /api{path}" + (f"  ({auth[0] if auth else 'no auth'})" if auth != GUEST else "") + (f"  # {note}" if note else ""))
    return r, parsed


def save(name, path, **kw):
    r, parsed = call("GET", path, record=False, **kw)
    with open(os.path.join(OUT, name), "w") as f:
        json.dump(parsed, f, indent=2, sort_keys=False)
        f.write("\n")
    print(f"saved {name} ({r.status_code}) {path}", flush=True)
    if r.status_code != 200:
        print("  !! non-200", r.status_code, r.text[:300], flush=True)
    return parsed


# ---------------------------------------------------------------------------
# 1. Set-up through the HTTP API, recording create (201) vs update (204)
# ---------------------------------------------------------------------------
call("PUT", "/vhosts/warren-vh", {"description": "Warren sample vhost", "tags": "qa,sample", "tracing": False}, note="create vhost")
call("PUT", "/vhosts/warren-vh", {"description": "Warren sample vhost (updated)", "tags": "qa,sample"}, note="update vhost")
call("PUT", "/vhosts/warren-vh2", {"description": "dqt", "tags": "", "default_queue_type": "quorum"}, note="create vhost with default_queue_type key (ignored by 3.10)")
call("PUT", "/vhosts/warren-vh3", {"description": "dqt", "defaultqueuetype": "quorum"}, note="create vhost with defaultqueuetype key (3.10 spelling)")

call("PUT", "/users/mgmt-user", {"password": "pw", "tags": "management"}, note="create user (tags as comma string)")
call("PUT", "/users/mgmt-user", {"password": "pw", "tags": "management,custom-tag"}, note="update user")
call("PUT", "/users/monitor-user", {"password": "pw", "tags": ["monitoring"]}, note="create user with tags as JSON list")
call("PUT", "/users/policy-user", {"password": "pw", "tags": "policymaker"})
call("PUT", "/users/no-tags", {"password": "pw", "tags": ""}, note="user without tags")
# password_hash for password "secret" hashed with SHA-256 (salt 4 bytes + sha256(salt+password)), as rabbitmqadmin does
import hashlib
salt = b"\x90\x8d\xc6\x0a"
ph = base64.b64encode(salt + hashlib.sha256(salt + b"secret").digest()).decode()
call("PUT", "/users/admin2", {"password_hash": ph, "hashing_algorithm": "rabbit_password_hashing_sha256", "tags": "administrator"}, note="create user with password_hash")
call("PUT", "/users/nopass", {"tags": "management"}, note="create user with neither password nor password_hash")
call("PUT", "/users/bulk1", {"password": "x", "tags": ""})
call("PUT", "/users/bulk2", {"password": "x", "tags": ""})

call("PUT", "/permissions/%2F/mgmt-user", {"configure": ".*", "write": ".*", "read": ".*"}, note="create permission")
call("PUT", "/permissions/%2F/mgmt-user", {"configure": "^mgmt-.*", "write": ".*", "read": ".*"}, note="update permission")
call("PUT", "/permissions/warren-vh/monitor-user", {"configure": "", "write": "", "read": ".*"})
call("PUT", "/permissions/%2F/policy-user", {"configure": ".*", "write": ".*", "read": ".*"})
call("PUT", "/permissions/%2F/admin2", {"configure": ".*", "write": ".*", "read": ".*"})
call("PUT", "/permissions/warren-vh/guest", {"configure": ".*", "write": ".*", "read": ".*"})
call("PUT", "/topic-permissions/%2F/mgmt-user", {"exchange": "amq.topic", "write": "^orders\\.", "read": ".*"}, note="create topic permission")
call("PUT", "/topic-permissions/%2F/mgmt-user", {"exchange": "amq.topic", "write": "^orders\\.", "read": ".*"}, note="update topic permission")

call("PUT", "/policies/%2F/cq-ttl", {"pattern": "^cq\\.", "definition": {"message-ttl": 3600000, "max-length": 100000}, "priority": 1, "apply-to": "queues"}, note="create policy")
call("PUT", "/policies/%2F/cq-ttl", {"pattern": "^cq\\.", "definition": {"message-ttl": 3600000, "max-length": 100000, "overflow": "reject-publish"}, "priority": 1, "apply-to": "queues"}, note="update policy")
call("PUT", "/policies/%2F/ex-policy", {"pattern": "^warren\\.", "definition": {"alternate-exchange": "warren.ae"}, "apply-to": "exchanges"}, note="policy without priority")
call("PUT", "/policies/%2F/bad-policy", {"pattern": "^x", "definition": {"no-such-key": 1}, "apply-to": "queues"}, note="invalid policy definition key")
call("PUT", "/policies/%2F/bad-policy2", {"pattern": "^x", "definition": {"message-ttl": "abc"}}, note="invalid policy value")
call("PUT", "/policies/%2F/bad-policy3", {"definition": {"message-ttl": 5}}, note="missing pattern")
call("PUT", "/operator-policies/%2F/op-limits", {"pattern": "^qq\\.", "definition": {"max-length": 500000, "delivery-limit": 50}, "priority": 0, "apply-to": "queues"}, note="create operator policy")
call("PUT", "/operator-policies/%2F/op-limits", {"pattern": "^qq\\.", "definition": {"max-length": 500000}, "priority": 0, "apply-to": "queues"}, note="update operator policy")
call("PUT", "/operator-policies/%2F/op-ct", {"pattern": "^x", "definition": {"max-length": 5}}, headers={"content-type": "text/plain"}, note="operator policy with text/plain content-type")

call("PUT", "/vhost-limits/%2F/max-connections", {"value": 100}, note="set vhost limit (first time)")
call("PUT", "/vhost-limits/%2F/max-connections", {"value": 200}, note="set vhost limit (again)")
call("PUT", "/vhost-limits/%2F/max-queues", {"value": 500})
call("PUT", "/vhost-limits/%2F/max-bogus", {"value": 5}, note="invalid limit name")
call("PUT", "/user-limits/mgmt-user/max-connections", {"value": 10}, note="set user limit (first time)")
call("PUT", "/user-limits/mgmt-user/max-connections", {"value": 10}, note="set user limit (again)")
call("PUT", "/user-limits/mgmt-user/max-channels", {"value": 20})

call("PUT", "/cluster-name", {"name": "warren-sample-cluster"}, note="set cluster name")
call("PUT", "/global-parameters/cluster_tags", {"name": "cluster_tags", "value": {"region": "eu-west", "env": "qa"}}, note="create global parameter")
call("PUT", "/global-parameters/cluster_tags", {"name": "cluster_tags", "value": {"region": "eu-west", "env": "qa"}}, note="update global parameter")

# exchanges
call("PUT", "/exchanges/%2F/warren.topic", {"type": "topic", "durable": True, "auto_delete": False, "internal": False, "arguments": {}}, note="create exchange")
call("PUT", "/exchanges/%2F/warren.topic", {"type": "topic", "durable": True, "auto_delete": False, "internal": False, "arguments": {}}, note="redeclare exchange (same)")
call("PUT", "/exchanges/%2F/warren.topic", {"type": "direct", "durable": True}, note="redeclare exchange with other type")
call("PUT", "/exchanges/%2F/warren.headers", {"type": "headers", "durable": True, "arguments": {"alternate-exchange": "warren.ae"}})
call("PUT", "/exchanges/%2F/warren.ae", {"type": "fanout"}, note="exchange body with only type")
call("PUT", "/exchanges/%2F/warren.e2e", {"type": "fanout", "durable": False, "auto_delete": True})
call("PUT", "/exchanges/%2F/warren.bad", {"type": "no-such-type"}, note="unknown exchange type")
call("PUT", "/exchanges/%2F/warren.notype", {"durable": True}, note="exchange without type")
call("PUT", "/exchanges/%2F/amq.custom", {"type": "direct"}, note="reserved amq. prefix")

# queues via HTTP
call("PUT", "/queues/%2F/cq.http", {"durable": True, "auto_delete": False, "arguments": {"x-max-priority": 10, "x-queue-mode": "lazy", "x-dead-letter-exchange": "warren.ae"}}, note="create classic queue")
call("PUT", "/queues/%2F/cq.http", {"durable": True, "auto_delete": False, "arguments": {"x-max-priority": 10, "x-queue-mode": "lazy", "x-dead-letter-exchange": "warren.ae"}}, note="redeclare queue (same)")
call("PUT", "/queues/%2F/cq.http", {"durable": False, "auto_delete": False, "arguments": {}}, note="redeclare queue with inequivalent durable")
call("PUT", "/queues/%2F/cq.http", {"durable": True, "arguments": {"x-max-priority": 5, "x-queue-mode": "lazy", "x-dead-letter-exchange": "warren.ae"}}, note="redeclare queue with inequivalent arg")
call("PUT", "/queues/%2F/qq.http", {"durable": True, "arguments": {"x-queue-type": "quorum", "x-delivery-limit": 5}}, note="create quorum queue")
call("PUT", "/queues/%2F/qq.http", {"durable": True, "arguments": {"x-queue-type": "quorum", "x-delivery-limit": 5}}, note="redeclare quorum queue")
call("PUT", "/queues/%2F/qq.bad", {"durable": False, "arguments": {"x-queue-type": "quorum"}}, note="non-durable quorum queue")
call("PUT", "/queues/%2F/cq.empty", {}, note="queue with empty body")
call("PUT", "/queues/%2F/cq.badjson", raw_body="{not json", note="bad JSON body")
call("PUT", "/queues/%2F/cq.badtype", {"durable": "yes"}, note="durable not boolean")
call("PUT", "/queues/%2F/cq.badarg", {"arguments": {"x-max-length": "ten"}}, note="x-max-length wrong type")
call("PUT", "/queues/%2F/cq.nullarg", {"arguments": {"x-max-length": None}}, note="null argument")
call("PUT", "/queues/%2F/amq.reserved", {"durable": True}, note="reserved amq. prefix queue name")
call("PUT", "/queues/no-such-vhost/cq.x", {"durable": True}, note="queue in missing vhost")
call("PUT", "/queues/%2F/" + "L" * 300, {"durable": True}, note="queue name longer than 255")
call("PUT", "/queues/%2F/cq.json-double", raw_body=json.dumps(json.dumps({"durable": True})), note="doubly encoded JSON")

# bindings via HTTP
call("POST", "/bindings/%2F/e/warren.topic/q/cq.http", {"routing_key": "orders.#", "arguments": {}}, note="create binding e->q")
call("POST", "/bindings/%2F/e/warren.topic/q/cq.http", {"routing_key": "orders.#", "arguments": {}}, note="create same binding again")
call("POST", "/bindings/%2F/e/warren.headers/q/cq.http", {"routing_key": "", "arguments": {"x-match": "all", "type": "report"}}, note="binding with arguments")
call("POST", "/bindings/%2F/e/warren.topic/e/warren.e2e", {"routing_key": "audit.*"}, note="create binding e->e")
call("POST", "/bindings/%2F/e/warren.topic/q/cq.http", {"routing_key": "a~b c/d", "arguments": {}}, note="routing key with ~, space, slash")
call("POST", "/bindings/%2F/e/warren.topic/q/cq.http", {}, note="binding with empty body")
call("POST", "/bindings/%2F/e/no-such-exchange/q/cq.http", {"routing_key": "x"}, note="binding from missing exchange")
call("POST", "/bindings/%2F/e/warren.topic/q/no-such-queue", {"routing_key": "x"}, note="binding to missing queue")
call("POST", "/bindings/%2F/e/amq.default/q/cq.http", {"routing_key": "x"}, note="binding on default exchange")

# publish via HTTP
call("POST", "/exchanges/%2F/warren.topic/publish", {"properties": {"delivery_mode": 2, "headers": {"h1": "v1"}, "content_type": "text/plain"}, "routing_key": "orders.created", "payload": "hello from HTTP", "payload_encoding": "string"}, note="publish routed")
call("POST", "/exchanges/%2F/warren.topic/publish", {"properties": {}, "routing_key": "nomatch", "payload": "unroutable", "payload_encoding": "string"}, note="publish unroutable")
call("POST", "/exchanges/%2F/amq.default/publish", {"properties": {"priority": 5, "message_id": "m-1", "correlation_id": "c-1", "timestamp": 1700000000, "type": "t", "user_id": "guest", "app_id": "app", "expiration": "600000", "reply_to": "r", "content_encoding": "identity"}, "routing_key": "cq.http", "payload": base64.b64encode(b"\x00\x01\x02binary\xff").decode(), "payload_encoding": "base64"}, note="publish base64 via default exchange (amq.default alias)")
call("POST", "/exchanges/%2F/amq.default/publish", {"properties": {}, "routing_key": "cq.http", "payload": "x" * 100, "payload_encoding": "string"})
call("POST", "/exchanges/%2F/no-such-exchange/publish", {"properties": {}, "routing_key": "x", "payload": "x", "payload_encoding": "string"}, note="publish to missing exchange")
call("POST", "/exchanges/%2F/warren.topic/publish", {"routing_key": "x", "payload": "x", "payload_encoding": "string"}, note="publish without properties")
call("POST", "/exchanges/%2F/warren.topic/publish", {"properties": {}, "routing_key": "x", "payload": "x", "payload_encoding": "utf16"}, note="publish with bad payload_encoding")
call("POST", "/exchanges/%2F/warren.topic/publish", {"properties": {"delivery_mode": "2"}, "routing_key": "x", "payload": "x", "payload_encoding": "string"}, note="publish with delivery_mode as string")
call("POST", "/exchanges/%2F/amq.default/publish", {"properties": {"user_id": "someone-else"}, "routing_key": "cq.http", "payload": "x", "payload_encoding": "string"}, note="publish with foreign user_id")

# ---------------------------------------------------------------------------
# 2. AMQP workload through pika
# ---------------------------------------------------------------------------
params = pika.ConnectionParameters(host="localhost", port=AMQP_PORT, heartbeat=0,
                                   credentials=pika.PlainCredentials("guest", "guest"),
                                   client_properties={"connection_name": "warren-sample-conn", "product": "capture.py"})
conn = pika.BlockingConnection(params)
ch1 = conn.channel()
ch2 = conn.channel()
ch1.exchange_declare("warren.direct", "direct", durable=True)
ch1.queue_declare("cq.amqp", durable=True, arguments={"x-message-ttl": 600000, "x-max-length": 10000, "x-dead-letter-exchange": "warren.ae", "x-dead-letter-routing-key": "dead"})
ch1.queue_declare("qq.amqp", durable=True, arguments={"x-queue-type": "quorum", "x-max-length": 10000})
ch1.queue_declare("cq.idle", durable=False, auto_delete=False)
ch1.queue_declare("", exclusive=True)  # server-named exclusive queue
ch1.queue_bind("cq.amqp", "warren.topic", "orders.#")
ch1.queue_bind("cq.amqp", "warren.direct", "k1", arguments={"x-binding-arg": 42})
ch1.queue_bind("qq.amqp", "warren.direct", "k2")
ch1.confirm_delivery()

unacked_kept = []
acked = [0]


def on_cq(ch, method, props, body):
    if len(unacked_kept) < 3:
        unacked_kept.append(method.delivery_tag)  # never acked
    else:
        ch.basic_ack(method.delivery_tag)
        acked[0] += 1


def on_qq(ch, method, props, body):
    ch.basic_ack(method.delivery_tag)


ch2.basic_qos(prefetch_count=10)
ch2.basic_consume("cq.amqp", on_cq, auto_ack=False, consumer_tag="warren-cq-consumer")
ch2.basic_consume("qq.amqp", on_qq, auto_ack=False, consumer_tag="warren-qq-consumer", arguments={"x-priority": 5})
ch1.basic_consume("cq.idle", lambda *a: None, auto_ack=True, consumer_tag="warren-autoack", exclusive=True)

n = [0]


def tick(t=0.05):
    n[0] += 1
    ch1.basic_publish("warren.topic", "orders.created", b"order %d" % n[0],
                      pika.BasicProperties(delivery_mode=2, content_type="text/plain", headers={"seq": n[0]}))
    ch1.basic_publish("warren.direct", "k2", b"qq %d" % n[0])
    if n[0] % 5 == 0:
        try:
            ch1.basic_publish("warren.topic", "nomatch", b"x", mandatory=True)
        except pika.exceptions.UnroutableError:
            pass
    conn.process_data_events(time_limit=t)


print("warming up stats...", flush=True)
t0 = time.time()
while time.time() - t0 < 16:
    tick(0.2)
print("published", n[0], "acked", acked[0], "unacked kept", len(unacked_kept), flush=True)


def S(name, path, **kw):
    tick()
    return save(name, path, **kw)


# ---------------------------------------------------------------------------
# 3. Captures
# ---------------------------------------------------------------------------
S("overview.json", "/overview")
S("cluster-name.json", "/cluster-name")
S("nodes.json", "/nodes")
S("node.json", f"/nodes/{NODE}")
S("node-memory.json", f"/nodes/{NODE}/memory")
S("node-with-memory-and-binary.json", f"/nodes/{NODE}?memory=true&binary=true")
S("whoami.json", "/whoami")
S("whoami-mgmt-user.json", "/whoami", auth=("mgmt-user", "pw"))
S("extensions.json", "/extensions")
S("feature-flags.json", "/feature-flags")
S("auth.json", "/auth")
S("auth-attempts.json", f"/auth/attempts/{NODE}")
conns = S("connections.json", "/connections")
amqp_conn = [c for c in conns if c.get("client_properties", {}).get("connection_name") == "warren-sample-conn"][0]
cname = amqp_conn["name"]
S("connection.json", "/connections/" + q(cname))
S("connection-channels.json", "/connections/" + q(cname) + "/channels")
S("connections-vhost.json", "/vhosts/%2F/connections")
S("connections-username.json", "/connections/username/guest")
S("connections-paged.json", "/connections?page=1&page_size=10")
chans = S("channels.json", "/channels")
S("channel.json", "/channels/" + q(chans[-1]["name"]))
S("channels-vhost.json", "/vhosts/%2F/channels")
S("consumers.json", "/consumers")
S("consumers-vhost.json", "/consumers/%2F")
S("exchanges.json", "/exchanges")
S("exchanges-vhost.json", "/exchanges/%2F")
S("exchanges-paged.json", "/exchanges?page=1&page_size=3")
S("exchange.json", "/exchanges/%2F/warren.topic")
S("exchange-default.json", "/exchanges/%2F/amq.default")
S("exchange-bindings-source.json", "/exchanges/%2F/warren.topic/bindings/source")
S("exchange-bindings-destination.json", "/exchanges/%2F/warren.e2e/bindings/destination")
S("queues.json", "/queues")
S("queues-vhost.json", "/queues/%2F")
S("queue-classic.json", "/queues/%2F/cq.amqp")
S("queue-classic-http.json", "/queues/%2F/cq.http")
S("queue-quorum.json", "/queues/%2F/qq.amqp")
S("queue-classic-with-ranges.json", "/queues/%2F/cq.amqp?lengths_age=60&lengths_incr=5&msg_rates_age=60&msg_rates_incr=5&data_rates_age=60&data_rates_incr=5")
S("queue-disable-stats.json", "/queues/%2F/cq.amqp?disable_stats=true")
S("queues-paged.json", "/queues?page=1&page_size=2")
S("queues-paged-page2.json", "/queues?page=2&page_size=2")
S("queues-paged-name-filter.json", "/queues?page=1&page_size=100&name=cq&use_regex=false")
S("queues-paged-regex-filter.json", "/queues?page=1&page_size=100&name=%5Eqq%5C.&use_regex=true")
S("queues-paged-sorted.json", "/queues?page=1&page_size=100&sort=messages&sort_reverse=true&columns=name,messages,type")
S("queues-columns.json", "/queues?columns=name,vhost,messages,message_stats.publish_details.rate")
S("queues-sort-reverse.json", "/queues?sort=name&sort_reverse=true&columns=name")
S("queues-disable-stats.json", "/queues?disable_stats=true")
S("queues-disable-stats-totals.json", "/queues?disable_stats=true&enable_queue_totals=true")
S("queues-name-filter-without-page.json", "/queues?name=qq&columns=name")
S("queues-detailed.json", "/queues/detailed")
S("queue-bindings.json", "/queues/%2F/cq.http/bindings")
S("bindings.json", "/bindings")
S("bindings-vhost.json", "/bindings/%2F")
blist = S("bindings-e-q.json", "/bindings/%2F/e/warren.topic/q/cq.http")
S("bindings-e-e.json", "/bindings/%2F/e/warren.topic/e/warren.e2e")
for b in blist:
    tag = {"orders.#": "rk", "a~b c/d": "special-rk"}.get(b["routing_key"], "other")
    S(f"binding-{tag}.json", "/bindings/%2F/e/warren.topic/q/cq.http/" + q(b["properties_key"]))
hb = S("bindings-e-q-with-args.json", "/bindings/%2F/e/warren.headers/q/cq.http")
S("binding-with-args.json", "/bindings/%2F/e/warren.headers/q/cq.http/" + q(hb[0]["properties_key"]))
S("vhosts.json", "/vhosts")
S("vhost.json", "/vhosts/%2F")
S("vhost-warren-vh.json", "/vhosts/warren-vh")
S("vhosts-mgmt-user.json", "/vhosts", auth=("mgmt-user", "pw"))
S("users.json", "/users")
S("user.json", "/users/guest")
S("user-admin2.json", "/users/admin2")
S("users-without-permissions.json", "/users/without-permissions")
S("user-permissions.json", "/users/guest/permissions")
S("user-topic-permissions.json", "/users/mgmt-user/topic-permissions")
S("permissions.json", "/permissions")
S("permission.json", "/permissions/%2F/guest")
S("vhost-permissions.json", "/vhosts/%2F/permissions")
S("topic-permissions.json", "/topic-permissions")
S("topic-permission.json", "/topic-permissions/%2F/mgmt-user")
S("vhost-topic-permissions.json", "/vhosts/%2F/topic-permissions")
S("policies.json", "/policies")
S("policies-vhost.json", "/policies/%2F")
S("policy.json", "/policies/%2F/cq-ttl")
S("operator-policies.json", "/operator-policies")
S("operator-policy.json", "/operator-policies/%2F/op-limits")
S("vhost-limits.json", "/vhost-limits")
S("vhost-limits-vhost.json", "/vhost-limits/%2F")
S("vhost-limits-vhost-empty.json", "/vhost-limits/warren-vh")
S("user-limits.json", "/user-limits")
S("user-limits-user.json", "/user-limits/mgmt-user")
S("user-limits-user-empty.json", "/user-limits/guest")
S("parameters.json", "/parameters")
S("global-parameters.json", "/global-parameters")
S("global-parameter.json", "/global-parameters/cluster_tags")
S("definitions.json", "/definitions")
S("definitions-vhost.json", "/definitions/%2F")
S("aliveness-test.json", "/aliveness-test/%2F")
S("health-alarms.json", "/health/checks/alarms")
S("health-local-alarms.json", "/health/checks/local-alarms")
S("health-certificate-expiration.json", "/health/checks/certificate-expiration/1/months")
S("health-port-listener.json", f"/health/checks/port-listener/{AMQP_PORT}")
S("health-protocol-listener.json", "/health/checks/protocol-listener/amqp")
S("health-virtual-hosts.json", "/health/checks/virtual-hosts")
S("health-node-is-quorum-critical.json", "/health/checks/node-is-quorum-critical")
S("health-node-is-mirror-sync-critical.json", "/health/checks/node-is-mirror-sync-critical")
S("healthchecks-node.json", "/healthchecks/node")

# ---------------------------------------------------------------------------
# 4. Error / status cases (recorded with headers into responses.json)
# ---------------------------------------------------------------------------
tick()
call("GET", "/overview", auth=None, note="no credentials")
call("GET", "/overview", auth=("guest", "wrong"), note="wrong password")
call("GET", "/overview", auth=("nobody", "x"), note="unknown user")
call("GET", "/overview", auth=("no-tags", "pw"), note="user without management tag")
call("GET", "/overview", auth=("nopass", ""), note="password-less user")
call("GET", "/overview", auth=("admin2", "secret"), note="user created from password_hash")
call("GET", "/users", auth=("mgmt-user", "pw"), note="management user on admin endpoint")
call("GET", "/nodes", auth=("mgmt-user", "pw"), note="management user on monitoring endpoint")
call("GET", "/nodes", auth=("monitor-user", "pw"), note="monitoring user on monitoring endpoint", record=False)
call("GET", "/queues/warren-vh", auth=("mgmt-user", "pw"), note="management user on vhost without permissions")
call("GET", "/queues/warren-vh", auth=("monitor-user", "pw"), note="monitoring user on vhost it has permissions for", record=False)
call("PUT", "/policies/%2F/mgmt-pol", {"pattern": "^x", "definition": {"max-length": 1}}, auth=("mgmt-user", "pw"), note="management user creating policy")
call("PUT", "/policies/%2F/pm-pol", {"pattern": "^pm\\.", "definition": {"max-length": 1}}, auth=("policy-user", "pw"), note="policymaker creating policy")
call("DELETE", "/policies/%2F/pm-pol", auth=("policy-user", "pw"), note="policymaker deleting policy")
call("GET", "/connections", auth=("mgmt-user", "pw"), note="management user sees only own connections")
call("GET", "/definitions", auth=("monitor-user", "pw"), note="monitoring user on definitions")
call("GET", "/whoami", auth=("monitor-user", "pw"), note="whoami with list tags")
call("GET", "/queues/%2F/no-such-queue", note="missing queue")
call("GET", "/queues/no-such-vhost", note="missing vhost in list")
call("GET", "/queues/no-such-vhost/x", note="missing vhost on item")
call("GET", "/exchanges/%2F/no-such-exchange", note="missing exchange")
call("GET", "/users/no-such-user", note="missing user")
call("GET", "/vhosts/no-such-vhost", note="missing vhost")
call("GET", "/policies/%2F/no-such-policy", note="missing policy")
call("GET", "/permissions/%2F/no-tags", note="missing permission")
call("GET", "/nodes/rabbit@nowhere", note="missing node")
call("GET", "/connections/no-such-connection", note="missing connection")
call("GET", "/channels/no-such-channel", note="missing channel")
call("GET", "/no-such-endpoint", note="unknown path")
call("GET", "/bindings/%2F/e/warren.topic/q/cq.http/nope", note="missing binding props")
call("POST", "/overview", {}, note="method not allowed")
call("DELETE", "/queues", note="method not allowed on collection")
call("GET", "/queues?page=100&page_size=2", note="page beyond the end")
call("GET", "/queues?page=2&page_size=100", note="page just past the end")
call("GET", "/queues?page=1&page_size=501", note="page_size above 500")
call("GET", "/queues?page=0", note="page 0")
call("GET", "/queues?page=abc", note="non-numeric page")
call("GET", "/queues?page_size=10", note="page_size without page -> no pagination")
call("GET", "/queues/%2F/cq.amqp?lengths_age=6000&lengths_incr=1", note="range too big")
call("GET", "/queues/%2F/cq.amqp?sort=nonexistent", note="unknown sort key", record=False)
call("POST", "/queues/%2F/cq.http/get", {"count": 2, "ackmode": "ack_requeue_true", "encoding": "auto", "truncate": 50000}, note="get ack_requeue_true auto")
call("POST", "/queues/%2F/cq.http/get", {"count": 5, "ackmode": "ack_requeue_true", "encoding": "base64"}, note="get base64 without truncate")
call("POST", "/queues/%2F/cq.http/get", {"count": 1, "ackmode": "reject_requeue_true", "encoding": "auto", "truncate": 5}, note="get with truncate 5")
call("POST", "/queues/%2F/cq.http/get", {"count": 1, "ackmode": "ack_requeue_false", "encoding": "auto"}, note="get ack_requeue_false")
call("POST", "/queues/%2F/cq.http/get", {"count": "2", "ackmode": "reject_requeue_false", "encoding": "auto"}, note="get count as string, reject_requeue_false")
call("POST", "/queues/%2F/cq.idle/get", {"count": 1, "ackmode": "ack_requeue_true", "encoding": "auto"}, note="get from empty queue")
call("POST", "/queues/%2F/cq.http/get", {"count": 1, "ackmode": "ack_requeue_true", "encoding": "hex"}, note="get bad encoding")
call("POST", "/queues/%2F/cq.http/get", {"count": 1, "encoding": "auto"}, note="get missing ackmode")
call("POST", "/queues/%2F/no-such-queue/get", {"count": 1, "ackmode": "ack_requeue_true", "encoding": "auto"}, note="get from missing queue")
call("POST", "/queues/%2F/cq.http/get", {"count": 1, "ackmode": "bogus", "encoding": "auto"}, note="get bad ackmode", record=True)
call("POST", "/queues/%2F/qq.amqp/get", {"count": 1, "ackmode": "ack_requeue_true", "encoding": "auto", "truncate": 50000}, note="get from quorum queue")
call("POST", "/queues/%2F/cq.http/actions", {"action": "sync"}, note="queue action sync")
call("POST", "/queues/%2F/cq.http/actions", {"action": "bogus"}, note="queue action unknown")
call("DELETE", "/queues/%2F/cq.http?if-empty=true", note="delete non-empty queue with if-empty")
call("DELETE", "/queues/%2F/cq.amqp?if-unused=true", note="delete queue with consumers with if-unused")
call("DELETE", "/exchanges/%2F/warren.topic?if-unused=true", note="delete exchange in use with if-unused")
call("DELETE", "/queues/%2F/cq.http/contents", note="purge queue")
call("DELETE", "/queues/%2F/no-such-queue/contents", note="purge missing queue")
call("DELETE", "/queues/%2F/no-such-queue", note="delete missing queue")
call("DELETE", "/exchanges/%2F/no-such-exchange", note="delete missing exchange")
call("DELETE", "/exchanges/%2F/amq.direct", note="delete built-in exchange")
call("DELETE", "/users/no-such-user", note="delete missing user")
call("DELETE", "/vhosts/no-such-vhost", note="delete missing vhost")
call("DELETE", "/policies/%2F/no-such-policy", note="delete missing policy")
call("DELETE", "/permissions/%2F/no-tags", note="delete missing permission")
call("DELETE", "/vhost-limits/%2F/max-queues", note="clear vhost limit")
call("DELETE", "/vhost-limits/%2F/max-queues", note="clear vhost limit again (absent)")
call("DELETE", "/user-limits/mgmt-user/max-channels", note="clear user limit")
# binding deletion
bl = requests.get(API + "/bindings/%2F/e/warren.topic/e/warren.e2e", auth=GUEST).json()
call("DELETE", "/bindings/%2F/e/warren.topic/e/warren.e2e/" + q(bl[0]["properties_key"]), note="delete e->e binding")
call("DELETE", "/bindings/%2F/e/warren.topic/e/warren.e2e/" + q(bl[0]["properties_key"]), note="delete e->e binding again")
call("DELETE", "/bindings/%2F/e/warren.topic/q/cq.http/%7E", note="delete binding with props ~ that does not exist")
call("POST", "/definitions", {"rabbit_version": "3.10.8", "queues": [{"name": "cq.imported", "vhost": "/", "durable": True, "auto_delete": False, "arguments": {}}], "exchanges": [], "bindings": []}, note="import definitions (partial)")
call("POST", "/definitions/%2F", {"queues": [{"name": "cq.imported2", "durable": True, "auto_delete": False, "arguments": {}}]}, note="import vhost definitions")
call("POST", "/definitions", raw_body="{not json", note="import bad JSON")
call("POST", "/definitions", {"queues": [{"name": "x"}]}, note="import definitions with incomplete queue")
call("POST", "/users/bulk-delete", {"users": ["bulk1", "bulk2", "does-not-exist"]}, note="bulk delete users")
call("DELETE", "/users/nopass", note="delete user")
call("DELETE", "/permissions/warren-vh/guest", note="delete permission")
call("DELETE", "/topic-permissions/%2F/mgmt-user", note="delete topic permissions")
call("DELETE", "/operator-policies/%2F/op-ct", note="delete missing operator policy")
call("DELETE", "/global-parameters/no-such", note="delete missing global parameter")
call("GET", "/health/checks/port-listener/1234", note="port listener failure")
call("GET", "/health/checks/port-listener/abc", note="port listener bad port")
call("GET", "/health/checks/protocol-listener/stomp", note="protocol listener failure")
call("GET", "/health/checks/protocol-listener/nonsense", note="protocol listener unknown protocol")
call("GET", "/health/checks/certificate-expiration/1/fortnights", note="certificate expiration bad unit")
call("GET", "/aliveness-test/no-such-vhost", note="aliveness on missing vhost")
call("PUT", "/vhosts/warren-vh-del", {}, note="create vhost with empty body")
call("DELETE", "/vhosts/warren-vh-del", note="delete vhost")
call("DELETE", "/queues/%2F/cq.empty", note="delete queue")
call("DELETE", "/exchanges/%2F/warren.ae", note="delete exchange")
call("HEAD", "/queues/%2F/cq.amqp", note="HEAD on queue")
call("OPTIONS", "/queues/%2F/cq.amqp", auth=None, note="OPTIONS (CORS preflight) without auth")
call("GET", "/overview", auth=GUEST, headers={"accept": "text/html"}, note="Accept: text/html")

with open(os.path.join(OUT, "responses.json"), "w") as f:
    json.dump(exchanges_log, f, indent=2)
    f.write("\n")
with open(os.path.join(OUT, "status-codes.txt"), "w") as f:
    f.write("\n".join(status_log) + "\n")

# final connection close via API with reason
conns = requests.get(API + "/connections", auth=GUEST).json()
print("connections before close:", len(conns))
print("done; keeping AMQP connection open for 1s", flush=True)
conn.process_data_events(time_limit=1)
