#!/usr/bin/env python3
"""Operators' tools against Warren's management API and metrics, as self-checking tests.

- the classic Python `rabbitmqadmin` (Debian's rabbitmq-server package ships it);
- `rabbitmqadmin` v2 (Rust, `cargo install rabbitmqadmin`), when $RABBITMQADMIN_V2 names it;
- `promtool check metrics` on every metrics endpoint;
- a real Prometheus scraping Warren under load, and every PromQL expression of the
  RabbitMQ-Overview Grafana dashboard (both the 3.10 and the latest revision) returning data.

Environment: MGMT_URL (http://127.0.0.1:15672), METRICS_URL (http://127.0.0.1:15692),
AMQP_URL. Output: `PASS http <name> (<secs>s)` / `FAIL http <name>: <reason>` lines, then a
summary; exit 1 if anything failed. run.sh counts the PASS/FAIL lines.
"""

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.parse
import urllib.request

import pika

SUITE = "http"
MGMT = urllib.parse.urlparse(os.environ.get("MGMT_URL", "http://127.0.0.1:15672"))
METRICS_URL = os.environ.get("METRICS_URL", "http://127.0.0.1:15692")
AMQP_URL = os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
V2 = os.environ.get("RABBITMQADMIN_V2", "")
RUN = secrets.token_hex(3)
HERE = os.path.dirname(os.path.abspath(__file__))
DASHBOARDS = os.path.join(HERE, "..", "..", "docs", "dev", "samples", "rabbitmq-3.10", "prometheus")

results = {"passed": 0, "failed": 0}


ONLY = os.environ.get("HTTP_TOOLS_ONLY", "")


def test(fn):
    name = fn.__name__
    if ONLY and ONLY not in name:
        return
    t0 = time.time()
    try:
        fn()
    except Exception as e:  # noqa: BLE001 - report every failure as a FAIL line
        results["failed"] += 1
        detail = "".join(traceback.format_exception_only(type(e), e)).strip().replace("\n", " | ")
        print(f"FAIL {SUITE} {name}: {detail[:1500]}", flush=True)
        return
    results["passed"] += 1
    print(f"PASS {SUITE} {name} ({time.time() - t0:.1f}s)", flush=True)


def run(cmd, timeout=60, ok=True):
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if ok and p.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} -> {p.returncode}: {p.stdout[-500:]} {p.stderr[-800:]}")
    return p


def api(method, path, body=None):
    req = urllib.request.Request(
        f"{MGMT.scheme}://{MGMT.netloc}{path}", method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"content-type": "application/json"})
    token = "Z3Vlc3Q6Z3Vlc3Q="  # guest:guest
    req.add_header("authorization", "Basic " + token)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            data = r.read()
            return r.status, json.loads(data) if data else None
    except urllib.error.HTTPError as e:
        data = e.read()
        return e.code, json.loads(data) if data else None


# --------------------------------------------------------------------------------------
# Classic rabbitmqadmin

def admin(*args, vhost="/", fmt=None):
    cmd = ["rabbitmqadmin", "-H", MGMT.hostname, "-P", str(MGMT.port), "-u", "guest", "-p", "guest"]
    if vhost is not None:
        cmd += ["-V", vhost]
    if fmt:
        cmd += ["-f", fmt]
    return run(cmd + list(args)).stdout


def admin_json(*args, vhost="/"):
    return json.loads(admin(*args, vhost=vhost, fmt="raw_json"))


@test
def classic_rabbitmqadmin_shows_and_lists_everything():
    o = admin_json("show", "overview")
    assert o[0]["rabbitmq_version"], o
    for kind in ["connections", "channels", "consumers", "exchanges", "queues", "bindings",
                 "users", "vhosts", "permissions", "nodes"]:
        items = admin_json("list", kind)
        assert isinstance(items, list), (kind, items)
    # The default table output works too (it asks for columns and reads them).
    table = admin("list", "exchanges")
    assert "amq.topic" in table, table


@test
def classic_rabbitmqadmin_declares_publishes_gets_and_deletes():
    q, x, v, u = f"ra.q.{RUN}", f"ra.x.{RUN}", f"ra.v.{RUN}", f"ra.u.{RUN}"
    admin("declare", "queue", f"name={q}", "durable=true", 'arguments={"x-max-length": 100}')
    admin("declare", "exchange", f"name={x}", "type=topic")
    admin("declare", "binding", f"source={x}", f"destination={q}", "routing_key=ra.#")
    out = admin("publish", f"exchange={x}", "routing_key=ra.one", "payload=hello-admin")
    assert "Message published" in out, out
    got = admin_json("get", f"queue={q}", "ackmode=ack_requeue_false")
    assert got[0]["payload"] == "hello-admin", got
    assert any(b["destination"] == q and b["routing_key"] == "ra.#" for b in admin_json("list", "bindings"))
    admin("declare", "vhost", f"name={v}")
    admin("declare", "user", f"name={u}", "password=pw", "tags=management")
    admin("declare", "permission", f"vhost={v}", f"user={u}", "configure=.*", "write=.*", "read=.*")
    assert any(p["user"] == u and p["vhost"] == v for p in admin_json("list", "permissions"))
    admin("delete", "binding", f"source={x}", f"destination={q}", "destination_type=queue",
          "properties_key=ra.%23")
    assert not any(b["source"] == x for b in admin_json("list", "bindings"))
    admin("delete", "queue", f"name={q}")
    admin("delete", "exchange", f"name={x}")
    admin("delete", "user", f"name={u}")
    admin("delete", "vhost", f"name={v}")
    assert not any(i["name"] == q for i in admin_json("list", "queues"))


@test
def classic_rabbitmqadmin_policies_apply_to_queues():
    q, pol = f"ra.pol.{RUN}", f"ra.pol.{RUN}"
    admin("declare", "queue", f"name={q}")
    for i in range(5):
        admin("publish", "exchange=amq.default", f"routing_key={q}", f"payload=m{i}")
    admin("declare", "policy", f"name={pol}", f"pattern=^{q}$", "apply-to=queues",
          'definition={"max-length": 2}', "priority=3")
    assert any(p["name"] == pol and p["definition"] == {"max-length": 2}
               for p in admin_json("list", "policies"))
    status, queue = api("GET", f"/api/queues/%2F/{q}")
    assert status == 200 and queue["policy"] == pol and queue["messages"] == 2, queue
    admin("delete", "policy", f"name={pol}")
    admin("delete", "queue", f"name={q}")
    assert not any(p["name"] == pol for p in admin_json("list", "policies"))


@test
def classic_rabbitmqadmin_export_imports_back_equal():
    q = f"ra.defs.{RUN}"
    admin("declare", "queue", f"name={q}", "durable=true")
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "defs.json")
        # Without -V: the whole broker's definitions (with -V, one vhost's).
        admin("export", path, vhost=None)
        exported = json.load(open(path))
        assert any(i["name"] == q for i in exported["queues"]), exported["queues"]
        admin("delete", "queue", f"name={q}")
        admin("import", path, vhost=None)
        admin("export", path + ".2", vhost=None)
        again = json.load(open(path + ".2"))
        for key in ["users", "vhosts", "permissions", "queues", "exchanges", "bindings"]:
            assert again[key] == exported[key], key
    admin("delete", "queue", f"name={q}")


@test
def warren_definitions_import_into_rabbitmq_3_10():
    """Warren's export, with users, policies, limits, classic and quorum queues, imports into
    a real RabbitMQ 3.10 (Debian's rabbitmq-server), and RabbitMQ then holds the same things."""
    sys.path.insert(0, os.path.join(HERE, "..", "..", "bench"))
    import mgmt  # noqa: E402 - the benchmark's RabbitMQ node with its management plugin

    v, u, q, qq, x, pol = (f"rx.v.{RUN}", f"rx.u.{RUN}", f"rx.q.{RUN}", f"rx.qq.{RUN}",
                           f"rx.x.{RUN}", f"rx.pol.{RUN}")
    assert api("PUT", f"/api/vhosts/{v}", {})[0] == 201
    assert api("PUT", f"/api/users/{u}", {"password": "pw", "tags": "management"})[0] == 201
    assert api("PUT", f"/api/permissions/{v}/{u}",
               {"configure": ".*", "write": ".*", "read": "^rx"})[0] == 201
    assert api("PUT", f"/api/queues/{v}/{q}", {"durable": True, "arguments": {"x-max-length": 9}})[0] == 201
    assert api("PUT", f"/api/queues/{v}/{qq}",
               {"durable": True, "arguments": {"x-queue-type": "quorum"}})[0] == 201
    assert api("PUT", f"/api/exchanges/{v}/{x}", {"type": "topic", "durable": True})[0] == 201
    assert api("POST", f"/api/bindings/{v}/e/{x}/q/{q}", {"routing_key": "a.#"})[0] == 201
    assert api("PUT", f"/api/policies/{v}/{pol}",
               {"pattern": "^rx", "definition": {"message-ttl": 1000}, "apply-to": "queues"})[0] == 201
    assert api("PUT", f"/api/operator-policies/{v}/{pol}",
               {"pattern": "^rx", "definition": {"max-length": 100}})[0] == 201
    assert api("PUT", f"/api/vhost-limits/{v}/max-queues", {"value": 50})[0] == 204
    assert api("PUT", f"/api/user-limits/{u}/max-channels", {"value": 5})[0] == 204
    status, defs = api("GET", "/api/definitions")
    assert status == 200, status
    node = mgmt.RabbitMQ()
    node.start()
    try:
        base = f"http://127.0.0.1:{node.mgmt_port}"
        req = urllib.request.Request(base + "/api/definitions", method="POST",
                                     data=json.dumps(defs).encode(),
                                     headers={"content-type": "application/json",
                                              "authorization": "Basic Z3Vlc3Q6Z3Vlc3Q="})
        with urllib.request.urlopen(req, timeout=120) as r:
            assert r.status in (200, 201, 204), r.status
        req = urllib.request.Request(base + "/api/definitions",
                                     headers={"authorization": "Basic Z3Vlc3Q6Z3Vlc3Q="})
        theirs = json.loads(urllib.request.urlopen(req, timeout=60).read())
        def has(key, **want):
            return any(all(i.get(k) == w for k, w in want.items()) for i in theirs[key])
        for key, want in [("vhosts", {"name": v}), ("users", {"name": u}),
                          ("permissions", {"user": u, "vhost": v, "read": "^rx"}),
                          ("queues", {"name": q, "vhost": v, "arguments": {"x-max-length": 9}}),
                          ("queues", {"name": qq, "vhost": v, "arguments": {"x-queue-type": "quorum"}}),
                          ("exchanges", {"name": x, "vhost": v, "type": "topic"}),
                          ("bindings", {"source": x, "destination": q, "routing_key": "a.#"}),
                          ("policies", {"name": pol, "vhost": v, "definition": {"message-ttl": 1000}}),
                          ("parameters", {"component": "operator_policy", "name": pol}),
                          ("parameters", {"component": "vhost-limits", "vhost": v}),
                          ("users", {"name": u, "limits": {"max-channels": 5}})]:
            assert has(key, **want), (key, want, [i for i in theirs[key] if RUN in json.dumps(i)])
    finally:
        node.stop()
        for path in [f"/api/vhosts/{v}", f"/api/users/{u}"]:
            api("DELETE", path)


# --------------------------------------------------------------------------------------
# rabbitmqadmin v2

def v2(*args):
    cmd = [V2, "--host", MGMT.hostname, "--port", str(MGMT.port), "--username", "guest",
           "--password", "guest"]
    return run(cmd + list(args)).stdout


if V2:
    @test
    def rabbitmqadmin_v2_shows_and_lists_everything():
        out = v2("show", "overview")
        assert "warren" in out.lower() or "rabbitmq" in out.lower(), out
        for kind in ["connections", "channels", "consumers", "exchanges", "queues", "bindings",
                     "users", "vhosts", "permissions", "nodes"]:
            v2("list", kind)

    @test
    def rabbitmqadmin_v2_declares_publishes_gets_and_deletes():
        q, x = f"r2.q.{RUN}", f"r2.x.{RUN}"
        v2("declare", "queue", "--name", q, "--type", "classic", "--durable", "true")
        v2("declare", "exchange", "--name", x, "--type", "fanout")
        v2("declare", "binding", "--source", x, "--destination-type", "queue",
           "--destination", q, "--routing-key", "k")
        v2("publish", "message", "--exchange", x, "--routing-key", "k", "--payload", "from-v2")
        out = v2("get", "messages", "--queue", q, "--count", "1", "--ack-mode", "ack_requeue_false")
        assert "from-v2" in out, out
        v2("delete", "queue", "--name", q)
        v2("delete", "exchange", "--name", x)
        status, _ = api("GET", f"/api/queues/%2F/{q}")
        assert status == 404, status

    @test
    def rabbitmqadmin_v2_policies():
        q, pol = f"r2.pol.{RUN}", f"r2.pol.{RUN}"
        v2("declare", "queue", "--name", q, "--type", "classic", "--durable", "true")
        v2("declare", "policy", "--name", pol, "--pattern", f"^{q}$", "--apply-to", "queues",
           "--definition", '{"max-length": 3}')
        out = v2("list", "policies")
        assert pol in out, out
        status, queue = api("GET", f"/api/queues/%2F/{q}")
        assert status == 200 and queue["policy"] == pol, queue
        v2("delete", "policy", "--name", pol)
        v2("delete", "queue", "--name", q)

    @test
    def rabbitmqadmin_v2_users_vhosts_permissions_and_definitions():
        v, u = f"r2.v.{RUN}", f"r2.u.{RUN}"
        v2("declare", "vhost", "--name", v)
        v2("declare", "user", "--name", u, "--password", "pw", "--tags", "management")
        v2("declare", "permissions", "--vhost", v, "--user", u, "--configure", ".*",
           "--read", ".*", "--write", ".*")
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "v2.json")
            v2("definitions", "export", "--file", path)
            exported = json.load(open(path))
            assert any(x["name"] == u for x in exported["users"]), exported["users"]
        v2("delete", "user", "--name", u)
        v2("delete", "vhost", "--name", v)


# --------------------------------------------------------------------------------------
# Metrics

def fetch(url):
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.read().decode()


@test
def promtool_accepts_every_metrics_endpoint():
    for path in ["/metrics", "/metrics/per-object",
                 "/metrics/detailed?family=queue_coarse_metrics&family=queue_metrics"]:
        page = fetch(METRICS_URL + path)
        p = subprocess.run(["promtool", "check", "metrics"], input=page, capture_output=True,
                           text=True, timeout=30)
        # Exit 3 is "lint warnings only" (e.g. a counter without _total); 1 is an error.
        assert p.returncode in (0,) , f"{path}: {p.returncode} {p.stdout} {p.stderr}"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def load(stop):
    """Publishes with confirms and consumes with acks, plus an unroutable and a get."""
    params = pika.URLParameters(AMQP_URL)
    conn = pika.BlockingConnection(params)
    ch = conn.channel()
    q = f"prom.{RUN}"
    ch.queue_declare(q, auto_delete=True)
    ch.confirm_delivery()
    cons = conn.channel()
    cons.basic_qos(prefetch_count=50)
    cons.basic_consume(q, lambda c, m, p, b: c.basic_ack(m.delivery_tag))
    while not stop.is_set():
        for _ in range(20):
            ch.basic_publish("", q, b"x" * 200)
        try:
            ch.basic_publish("amq.direct", "nowhere", b"y", mandatory=True)
        except pika.exceptions.UnroutableError:
            pass
        ch.basic_get(q, auto_ack=True)
        conn.process_data_events(time_limit=0.05)
    conn.close()


def dashboard_exprs(path):
    d = json.load(open(path))

    def panels(ps):
        for p in ps:
            yield p
            yield from panels(p.get("panels", []))

    for p in panels(d.get("panels", [])):
        for t in p.get("targets", []):
            if t.get("expr"):
                yield p.get("title") or "(untitled)", t["expr"]


@test
def prometheus_scrapes_warren_and_every_dashboard_expression_has_data():
    prom = shutil.which("prometheus")
    assert prom, "prometheus is not installed"
    target = urllib.parse.urlparse(METRICS_URL).netloc
    port = free_port()
    with tempfile.TemporaryDirectory() as d:
        cfg = os.path.join(d, "prometheus.yml")
        with open(cfg, "w") as f:
            f.write(f"""global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: warren
    static_configs:
      - targets: ['{target}']
""")
        proc = subprocess.Popen(
            [prom, f"--config.file={cfg}", f"--storage.tsdb.path={d}/data",
             f"--web.listen-address=127.0.0.1:{port}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        stop = threading.Event()
        worker = threading.Thread(target=load, args=(stop,), daemon=True)
        worker.start()
        try:
            base = f"http://127.0.0.1:{port}"

            def query(expr):
                url = base + "/api/v1/query?" + urllib.parse.urlencode({"query": expr})
                return json.loads(fetch(url))

            deadline = time.time() + 60
            while time.time() < deadline:
                try:
                    r = query("up")
                    if r["data"]["result"] and r["data"]["result"][0]["value"][1] == "1":
                        break
                except Exception:  # noqa: BLE001 - Prometheus still starting
                    pass
                time.sleep(0.5)
            else:
                raise AssertionError("Prometheus never scraped Warren")
            time.sleep(70)  # rate()s over 1m windows need a minute of samples
            # The dashboard's template variables, as Grafana fills them from
            # label_values(rabbitmq_identity_info, ...).
            identity = query("rabbitmq_identity_info")["data"]["result"][0]["metric"]
            cluster, endpoint = identity["rabbitmq_cluster"], identity.get("rabbitmq_endpoint", "")
            subs = {"$rabbitmq_cluster": cluster, "$namespace": "", "$endpoint": endpoint,
                    "$__rate_interval": "1m", "$__range": "2m", "$__interval": "1s"}
            empty = []
            count = 0
            for name in ["RabbitMQ-Overview.json", "RabbitMQ-Overview.v3.10.8.json"]:
                for title, expr in dashboard_exprs(os.path.join(DASHBOARDS, name)):
                    for k in sorted(subs, key=len, reverse=True):
                        expr = expr.replace(k, subs[k])
                    r = query(expr)
                    count += 1
                    if r.get("status") != "success" or not r["data"]["result"]:
                        empty.append(f"{name}: {title}: {expr}")
            assert count > 40, count
            assert not empty, f"{len(empty)} of {count} expressions returned nothing: " + " || ".join(empty)
        finally:
            stop.set()
            worker.join(timeout=10)
            proc.terminate()
            proc.wait(timeout=10)


print(f"# {SUITE} summary: passed={results['passed']} failed={results['failed']}", flush=True)
sys.exit(1 if results["failed"] else 0)
