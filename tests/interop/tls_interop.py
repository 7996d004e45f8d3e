#!/usr/bin/env python3
"""TLS interop: pika, amqplib and rabbitmqadmin (classic and v2) against a Warren with TLS.

Starts its own `warren` ($INTEROP_WARREN_BIN, default target/debug/warren) with a config
file that has an AMQPS listener (verify_peer, client certificates optional) and HTTPS for the
management API and the metrics, with certificates this script makes with the `openssl`
command: a CA, a server certificate for localhost and 127.0.0.1, client certificates from
that CA (CN=tls-user, for EXTERNAL) and from a CA Warren does not trust. Then:

- pika and amqplib publish and consume over TLS without and with a client certificate,
  log in with EXTERNAL as the certificate's user, and are refused with an untrusted
  certificate, with EXTERNAL for a user that does not exist, and with EXTERNAL without a
  certificate (not offered);
- rabbitmqadmin classic (`--ssl`) and v2 (`--use-tls`, when $RABBITMQADMIN_V2 names it)
  reach the management API over HTTPS; the metrics are read over HTTPS.

Output: `PASS tls <name> (<secs>s)` / `FAIL tls <name>: <reason>` lines (amqplib's come from
amqplib_tls.js), then a summary; exit 1 if anything failed.
"""

import json
import os
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.error
import urllib.request

import pika

SUITE = "tls"
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
WARREN = os.environ.get("INTEROP_WARREN_BIN", os.path.join(ROOT, "target", "debug", "warren"))
V2 = os.environ.get("RABBITMQADMIN_V2", "")
CERT_USER = "tls-user"

results = {"passed": 0, "failed": 0}


def test(fn):
    t0 = time.time()
    try:
        fn()
    except Exception as e:  # noqa: BLE001 - report every failure as a FAIL line
        results["failed"] += 1
        detail = "".join(traceback.format_exception_only(type(e), e)).strip().replace("\n", " | ")
        print(f"FAIL {SUITE} {fn.__name__}: {detail[:1500]}", flush=True)
        return fn
    results["passed"] += 1
    print(f"PASS {SUITE} {fn.__name__} ({time.time() - t0:.1f}s)", flush=True)
    return fn


def run(cmd, timeout=60, ok=True, env=None):
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    if ok and p.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} -> {p.returncode}: {p.stdout[-500:]} {p.stderr[-800:]}")
    return p


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------------------
# Certificates (openssl), Warren with TLS

def make_certs(d):
    """CA, server (localhost, 127.0.0.1), client CN=tls-user, and an untrusted client."""
    def key_and_csr(name, cn):
        run(["openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-nodes", "-keyout", f"{d}/{name}.key", "-out", f"{d}/{name}.csr", "-subj", f"/CN={cn}"])

    def ca(name, cn):
        run(["openssl", "req", "-x509", "-new", "-newkey", "ec", "-pkeyopt",
             "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2", "-subj", f"/CN={cn}",
             "-keyout", f"{d}/{name}.key", "-out", f"{d}/{name}.pem",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign"])

    def sign(name, issuer, ext):
        with open(f"{d}/{name}.ext", "w") as f:
            f.write("basicConstraints=CA:FALSE\n" + ext)
        run(["openssl", "x509", "-req", "-in", f"{d}/{name}.csr", "-CA", f"{d}/{issuer}.pem",
             "-CAkey", f"{d}/{issuer}.key", "-CAcreateserial", "-days", "2",
             "-out", f"{d}/{name}.pem", "-extfile", f"{d}/{name}.ext"])

    ca("ca", "Warren interop CA")
    ca("other-ca", "Untrusted CA")
    key_and_csr("server", "localhost")
    sign("server", "ca", "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
    key_and_csr("client", CERT_USER)
    sign("client", "ca", "extendedKeyUsage=clientAuth\n")
    key_and_csr("nobody", "no-such-user")
    sign("nobody", "ca", "extendedKeyUsage=clientAuth\n")
    key_and_csr("stranger", CERT_USER)
    sign("stranger", "other-ca", "extendedKeyUsage=clientAuth\n")


class Warren:
    def __init__(self, d):
        self.dir = d
        self.amqps, self.https, self.metrics = free_port(), free_port(), free_port()
        conf = f"""
listeners.tcp = none
listeners.ssl.default = 127.0.0.1:{self.amqps}
ssl_options.cacertfile = {d}/ca.pem
ssl_options.certfile = {d}/server.pem
ssl_options.keyfile = {d}/server.key
ssl_options.verify = verify_peer
ssl_options.fail_if_no_peer_cert = false
management.ssl.port = {self.https}
management.ssl.ip = 127.0.0.1
management.ssl.certfile = {d}/server.pem
management.ssl.keyfile = {d}/server.key
prometheus.ssl.port = {self.metrics}
prometheus.ssl.ip = 127.0.0.1
prometheus.ssl.certfile = {d}/server.pem
prometheus.ssl.keyfile = {d}/server.key
"""
        with open(f"{d}/warren.conf", "w") as f:
            f.write(conf)
        self.log = open(f"{d}/warren.log", "w")
        # WARREN_* variables are settings to warren: only the config file speaks here.
        env = {k: v for k, v in os.environ.items() if not k.startswith("WARREN_")}
        self.proc = subprocess.Popen(
            [WARREN, "--config", f"{d}/warren.conf", "--data-dir", f"{d}/data"],
            stdout=subprocess.DEVNULL, stderr=self.log, env=env)
        deadline = time.time() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.https), timeout=1).close()
                break
            except OSError:
                if self.proc.poll() is not None or time.time() > deadline:
                    raise RuntimeError(f"warren did not start: {open(f'{d}/warren.log').read()[-2000:]}")
                time.sleep(0.05)

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


def ssl_context(d, client=None):
    ctx = ssl.create_default_context(cafile=f"{d}/ca.pem")
    if client:
        ctx.load_cert_chain(f"{d}/{client}.pem", f"{d}/{client}.key")
    return ctx


def api(w, method, path, body=None):
    req = urllib.request.Request(
        f"https://localhost:{w.https}{path}", method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"content-type": "application/json",
                 "authorization": "Basic Z3Vlc3Q6Z3Vlc3Q="})  # guest:guest
    try:
        with urllib.request.urlopen(req, timeout=10, context=ssl_context(w.dir)) as r:
            data = r.read()
            return r.status, json.loads(data) if data else None
    except urllib.error.HTTPError as e:
        data = e.read()
        return e.code, json.loads(data) if data else None


# --------------------------------------------------------------------------------------
# pika

def pika_params(w, client=None, external=False):
    creds = (pika.credentials.ExternalCredentials() if external
             else pika.PlainCredentials("guest", "guest"))
    return pika.ConnectionParameters(
        host="localhost", port=w.amqps, credentials=creds, connection_attempts=1,
        ssl_options=pika.SSLOptions(ssl_context(w.dir, client), "localhost"),
        blocked_connection_timeout=10, socket_timeout=10)


def pika_round_trip(params, tag):
    conn = pika.BlockingConnection(params)
    try:
        ch = conn.channel()
        q = ch.queue_declare("", exclusive=True).method.queue
        ch.confirm_delivery()
        ch.basic_publish("", q, f"pika-{tag}".encode())
        for method, _props, body in ch.consume(q, inactivity_timeout=10):
            assert method is not None, "no delivery within 10 s"
            ch.basic_ack(method.delivery_tag)
            assert body == f"pika-{tag}".encode(), body
            break
        ch.cancel()
    finally:
        conn.close()


def pika_refused(params):
    try:
        pika.BlockingConnection(params).close()
    except (pika.exceptions.AMQPConnectionError, ssl.SSLError, OSError) as e:
        return e
    raise AssertionError("the connection was accepted")


def main():
    if not os.path.exists(WARREN):
        print(f"FAIL {SUITE} setup: no warren binary at {WARREN} (cargo build -p warren)")
        return 1
    with tempfile.TemporaryDirectory() as d:
        try:
            make_certs(d)
            w = Warren(d)
        except Exception as e:  # noqa: BLE001
            print(f"FAIL {SUITE} setup: {e}", flush=True)
            return 1
        try:
            run_tests(w, d)
        finally:
            w.stop()
    print(f"# {SUITE} summary: passed={results['passed']} failed={results['failed']}")
    return 1 if results["failed"] else 0


def run_tests(w, d):
    @test
    def https_management_api_creates_the_certificate_user():
        status, _ = api(w, "PUT", f"/api/users/{CERT_USER}", {"password_hash": "", "tags": ""})
        assert status in (201, 204), status
        status, _ = api(w, "PUT", f"/api/permissions/%2F/{CERT_USER}",
                        {"configure": ".*", "write": ".*", "read": ".*"})
        assert status in (201, 204), status
        status, overview = api(w, "GET", "/api/overview")
        assert status == 200, status
        protocols = {(l["protocol"], l["port"]) for l in overview["listeners"]}
        assert ("amqp/ssl", w.amqps) in protocols, protocols
        assert ("https", w.https) in protocols, protocols

    @test
    def pika_publishes_and_consumes_over_tls_without_a_client_certificate():
        pika_round_trip(pika_params(w), "plain")

    @test
    def pika_publishes_and_consumes_over_tls_with_a_client_certificate():
        pika_round_trip(pika_params(w, client="client"), "cert")

    @test
    def pika_external_logs_in_as_the_certificates_user():
        conn = pika.BlockingConnection(pika_params(w, client="client", external=True))
        try:
            ch = conn.channel()
            q = ch.queue_declare("", exclusive=True).method.queue
            ch.basic_publish("", q, b"external")
            method, _p, body = ch.basic_get(q, auto_ack=True)
            assert body == b"external", (method, body)
            _, conns = api(w, "GET", "/api/connections")
            mine = [c for c in conns if c["auth_mechanism"] == "EXTERNAL"]
            assert mine and all(c["user"] == CERT_USER and c["ssl"] for c in mine), conns
            assert mine[0]["peer_cert_subject"] == f"CN={CERT_USER}", mine[0]
        finally:
            conn.close()

    @test
    def pika_external_for_a_user_that_does_not_exist_is_refused():
        e = pika_refused(pika_params(w, client="nobody", external=True))
        assert "403" in repr(e) and "EXTERNAL" in repr(e), repr(e)

    @test
    def pika_external_is_not_offered_without_a_client_certificate():
        e = pika_refused(pika_params(w, external=True))
        assert isinstance(e, pika.exceptions.AuthenticationError), repr(e)

    @test
    def pika_with_a_certificate_from_an_untrusted_ca_is_refused():
        e = pika_refused(pika_params(w, client="stranger"))
        assert "UNKNOWN_CA" in repr(e).upper(), repr(e)

    # amqplib: its own PASS/FAIL lines, counted here too.
    env = dict(os.environ, AMQPS_PORT=str(w.amqps), TLS_DIR=d, CERT_USER=CERT_USER)
    p = subprocess.run(["node", os.path.join(HERE, "amqplib_tls.js")], capture_output=True,
                       text=True, timeout=60, env=env)
    for line in p.stdout.splitlines():
        print(line, flush=True)
        if line.startswith("PASS "):
            results["passed"] += 1
        elif line.startswith("FAIL "):
            results["failed"] += 1
    if p.returncode != 0 and "FAIL " not in p.stdout:
        results["failed"] += 1
        print(f"FAIL {SUITE} amqplib_tls.js: exit {p.returncode}: {p.stderr[-800:]}", flush=True)

    def classic(*args):
        return run(["rabbitmqadmin", "--ssl", "--ssl-ca-cert-file", f"{d}/ca.pem", "-H", "localhost",
                    "-P", str(w.https), "-u", "guest", "-p", "guest", *args]).stdout

    @test
    def classic_rabbitmqadmin_over_https():
        classic("declare", "queue", "name=tls.admin", "durable=false")
        classic("publish", "routing_key=tls.admin", "payload=over-https")
        out = classic("-f", "raw_json", "get", "queue=tls.admin", "ackmode=ack_requeue_false")
        assert json.loads(out)[0]["payload"] == "over-https", out
        out = classic("-f", "raw_json", "list", "connections")
        assert isinstance(json.loads(out), list), out
        classic("delete", "queue", "name=tls.admin")

    if V2:
        def v2(*args):
            return run([V2, "--use-tls", "--tls-ca-cert-file", f"{d}/ca.pem", "--host", "localhost",
                        "--port", str(w.https), "--username", "guest", "--password", "guest",
                        *args]).stdout

        @test
        def rabbitmqadmin_v2_over_https():
            out = v2("show", "overview")
            assert "warren" in out.lower() or "rabbitmq" in out.lower(), out
            v2("declare", "queue", "--name", "tls.v2", "--type", "classic")
            v2("publish", "message", "--routing-key", "tls.v2", "--payload", "v2-over-https")
            out = v2("get", "messages", "--queue", "tls.v2", "--count", "1",
                     "--ack-mode", "ack_requeue_false")
            assert "v2-over-https" in out, out
            v2("delete", "queue", "--name", "tls.v2")

    @test
    def prometheus_metrics_over_https():
        with urllib.request.urlopen(f"https://localhost:{w.metrics}/metrics", timeout=10,
                                    context=ssl_context(d)) as r:
            body = r.read().decode()
        assert "rabbitmq_connections" in body, body[:500]


if __name__ == "__main__":
    sys.exit(main())
