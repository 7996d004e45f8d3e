#!/usr/bin/env python3
"""The six RabbitMQ tutorials, written with pika, as self-checking interop tests.

Each test follows one tutorial's pattern against the broker at $AMQP_URL and asserts that
every message arrives where the tutorial says it does, and nowhere else. Every wait is
bounded (INTEROP_WAIT_SECONDS, 10 s by default) and every test has a watchdog, so the
suite never hangs: a wait that runs out is a test failure that says what it waited for.

Output: one line per test, `PASS pika <name> (<secs>s)` or `FAIL pika <name>: <reason>`,
then `# pika summary: passed=N failed=M`. Exit status 1 if any test failed. run.sh counts the
PASS/FAIL lines.

Every queue and exchange name carries a random per-run suffix, so reruns and suites
running side by side never collide; each test deletes what it declared.
"""

import collections
import os
import secrets
import signal
import sys
import time
import traceback
import urllib.parse
import uuid

import pika
from pika.exceptions import ChannelClosedByBroker, UnroutableError

SUITE = "pika"
AMQP_URL = os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
WAIT_SECONDS = float(os.environ.get("INTEROP_WAIT_SECONDS", "10"))
TEST_SECONDS = float(os.environ.get("INTEROP_TEST_SECONDS", "15"))
# TCP connect plus AMQP handshake; a local broker needs milliseconds.
CONNECT_SECONDS = float(os.environ.get("INTEROP_CONNECT_SECONDS", "5"))
# After the expected messages have arrived, keep listening this long for unexpected extras.
SETTLE_SECONDS = float(os.environ.get("INTEROP_SETTLE_SECONDS", "0.25"))
RUN_ID = secrets.token_hex(4)
SENTINEL = b"--interop-sentinel--"

Delivery = collections.namedtuple("Delivery", "method props body")


class WaitTimeout(AssertionError):
    pass


class Watchdog(BaseException):
    """Raised by SIGALRM when a test overruns TEST_SECONDS (BaseException: not swallowed)."""


def vhost_of(url):
    path = urllib.parse.urlparse(url).path
    return urllib.parse.unquote(path[1:]) if len(path) > 1 else "/"


def redact(url):
    u = urllib.parse.urlparse(url)
    if u.password:
        u = u._replace(netloc=u.netloc.replace(f":{u.password}@", ":***@"))
    return urllib.parse.urlunparse(u)


class Ctx:
    """One test's connections and declared names, and bounded ways of waiting on them."""

    def __init__(self, slug):
        self.slug = slug
        self.conns = []
        self.queues = []
        self.exchanges = []
        self.ever_connected = False

    def name(self, what):
        return f"warren-interop.{SUITE}.{self.slug}.{what}.{RUN_ID}"

    def queue(self, what):
        """A unique queue name, deleted when the test ends."""
        name = self.name(what)
        self.queues.append(name)
        return name

    def exchange(self, what):
        """A unique exchange name, deleted when the test ends."""
        name = self.name(what)
        self.exchanges.append(name)
        return name

    def connect(self):
        params = pika.URLParameters(AMQP_URL)
        params.connection_attempts = 1
        params.socket_timeout = CONNECT_SECONDS
        params.stack_timeout = CONNECT_SECONDS
        params.blocked_connection_timeout = WAIT_SECONDS
        params.client_properties = {"connection_name": f"warren-interop {SUITE} {self.slug}"}
        try:
            conn = pika.BlockingConnection(params)
        except Exception as e:  # pika's connect errors are not all AMQPConnectionError
            raise ConnectionError(f"cannot connect to {redact(AMQP_URL)}: {e!r}") from None
        self.conns.append(conn)
        self.ever_connected = True
        return conn

    def _poll(self, budget):
        live = [c for c in self.conns if c.is_open]
        if not live:
            time.sleep(budget)
            return
        # process_data_events returns early as soon as something is ready to dispatch.
        per_conn = budget if len(live) == 1 else min(budget, 0.01)
        for conn in live:
            conn.process_data_events(time_limit=per_conn)

    def wait_until(self, done, what, timeout=None):
        """Dispatch events on every open connection until done() or the timeout (a failure)."""
        timeout = WAIT_SECONDS if timeout is None else timeout
        deadline = time.monotonic() + timeout
        while not done():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise WaitTimeout(f"timed out after {timeout:g}s waiting for {what}")
            self._poll(min(0.05, remaining))

    def settle(self, seconds=SETTLE_SECONDS):
        """Keep dispatching for a while, so that unexpected extra deliveries show up."""
        deadline = time.monotonic() + seconds
        while (remaining := deadline - time.monotonic()) > 0:
            self._poll(min(0.05, remaining))

    def cleanup(self):
        for conn in self.conns:
            if conn.is_open:
                conn.close()
        self.conns = []
        if not (self.ever_connected and (self.queues or self.exchanges)):
            return  # nothing can have been declared
        conn = self.connect()
        ch = None
        for kind, name in [("queue", q) for q in self.queues] + [
            ("exchange", e) for e in self.exchanges
        ]:
            if ch is None or ch.is_closed:
                ch = conn.channel()
            try:
                if kind == "queue":
                    ch.queue_delete(name)
                else:
                    ch.exchange_delete(name)
            except ChannelClosedByBroker as e:
                if e.reply_code != 404:
                    raise
        conn.close()
        self.conns = []


def inbox(ch, queue, auto_ack=True):
    """Consume `queue` on `ch`; returns the list that deliveries are appended to."""
    got = []
    ch.basic_consume(queue, lambda _ch, m, p, b: got.append(Delivery(m, p, b)), auto_ack=auto_ack)
    return got


def bodies(deliveries):
    return [d.body.decode() for d in deliveries if d.body != SENTINEL]


def expect_routing(ctx, publisher, expected):
    """Wait until each queue holds exactly its expected bodies.

    `expected` maps a label to (queue name, inbox list, expected bodies). After the test's
    messages, a sentinel goes to each queue through the default exchange on the same
    channel; once every sentinel and every expected message has arrived (or a second after
    the last sentinel, if some never do), we listen a little longer for extras, then compare.
    """
    for queue, _, _ in expected.values():
        publisher.basic_publish("", queue, SENTINEL)
    sentinels_seen = [None]

    def done():
        all_sentinels = all(
            any(d.body == SENTINEL for d in got) for _, got, _ in expected.values()
        )
        if not all_sentinels:
            return False
        if sentinels_seen[0] is None:
            sentinels_seen[0] = time.monotonic()
        enough = all(len(bodies(got)) >= len(want) for _, got, want in expected.values())
        return enough or time.monotonic() - sentinels_seen[0] > 1.0

    ctx.wait_until(done, "every queue's sentinel and expected messages: " + ", ".join(
        f"{label} has {bodies(got)}" for label, (_, got, _) in expected.items()))
    ctx.settle()
    problems = []
    for label, (_, got, want) in expected.items():
        if sorted(bodies(got)) != sorted(want):
            problems.append(f"{label}: expected {sorted(want)}, got {sorted(bodies(got))}")
    assert not problems, "; ".join(problems)


# ---------------------------------------------------------------------------------------
# Tutorial 1: "Hello World!"


def t1_hello_world_default_exchange_delivers_to_named_queue(ctx):
    queue = ctx.queue("hello")
    conn = ctx.connect()
    ch = conn.channel()
    ok = ch.queue_declare(queue)
    assert ok.method.queue == queue, f"declare-ok named {ok.method.queue!r}, not {queue!r}"
    assert ok.method.message_count == 0, ok.method
    ch.basic_publish("", queue, b"Hello World!")

    receiver = ctx.connect().channel()
    receiver.queue_declare(queue)  # the tutorial's receiver declares it too (idempotent)
    got = inbox(receiver, queue)
    ctx.wait_until(lambda: got, "'Hello World!' on the hello queue")
    ctx.settle()
    assert [d.body for d in got] == [b"Hello World!"], f"got {[d.body for d in got]}"
    m = got[0].method
    assert (m.exchange, m.routing_key, m.redelivered) == ("", queue, False), m


# ---------------------------------------------------------------------------------------
# Tutorial 2: Work queues


def _worker(ctx, queue, log, name, ack=True):
    """A tutorial worker: own connection, durable queue, prefetch_count=1, manual acks.

    Appends (name, delivery) to log; if ack is False, holds on to deliveries unacked.
    """
    ch = ctx.connect().channel()
    ch.queue_declare(queue, durable=True)
    ch.basic_qos(prefetch_count=1)

    def on_task(ch_, method, props, body):
        log.append((name, Delivery(method, props, body)))
        if ack:
            ch_.basic_ack(method.delivery_tag)

    ch.basic_consume(queue, on_task, auto_ack=False)
    return ch


def _new_task(ctx, queue, tasks):
    ch = ctx.connect().channel()
    ch.queue_declare(queue, durable=True)
    for task in tasks:
        ch.basic_publish(
            "", queue, task.encode(),
            properties=pika.BasicProperties(delivery_mode=pika.DeliveryMode.Persistent),
        )
    return ch


def _message_count(ctx, queue):
    ch = ctx.connect().channel()
    return ch.queue_declare(queue, passive=True).method.message_count


def t2_work_queue_tasks_processed_exactly_once_by_both_workers(ctx):
    queue = ctx.queue("task_queue")
    log = []
    _worker(ctx, queue, log, "w1")
    _worker(ctx, queue, log, "w2")
    tasks = [f"task {i}" + "." * (i % 3) for i in range(20)]
    _new_task(ctx, queue, tasks)
    ctx.wait_until(lambda: len(log) >= len(tasks), f"{len(tasks)} tasks to be processed")
    ctx.settle()
    done = [d.body.decode() for _, d in log]
    assert sorted(done) == sorted(tasks), f"processed {sorted(done)}, expected {sorted(tasks)}"
    per_worker = collections.Counter(w for w, _ in log)
    assert per_worker["w1"] > 0 and per_worker["w2"] > 0, f"work not shared: {dict(per_worker)}"
    for _, d in log:
        assert d.props.delivery_mode == 2, f"{d.body!r} lost delivery_mode 2: {d.props}"
        assert not d.method.redelivered, f"{d.body!r} flagged redelivered on first delivery"
    assert _message_count(ctx, queue) == 0, "queue not empty after every task was acked"


def t2_prefetch_one_holds_back_busy_worker(ctx):
    queue = ctx.queue("task_queue")
    log = []
    busy = _worker(ctx, queue, log, "busy", ack=False)
    _worker(ctx, queue, log, "fast")
    tasks = [f"task {i}" for i in range(10)]
    _new_task(ctx, queue, tasks)
    ctx.wait_until(lambda: len(log) >= len(tasks), f"{len(tasks)} tasks to be dispatched")
    ctx.settle()
    per_worker = collections.Counter(w for w, _ in log)
    assert per_worker == {"busy": 1, "fast": len(tasks) - 1}, (
        f"with prefetch_count=1 the worker that never acks should get exactly 1 task, "
        f"got {dict(per_worker)}"
    )
    held = [d for w, d in log if w == "busy"][0]
    busy.basic_ack(held.method.delivery_tag)
    ctx.settle()
    assert sorted(d.body.decode() for _, d in log) == sorted(tasks), "a task was duplicated"
    assert _message_count(ctx, queue) == 0, "queue not empty after every task was acked"


def t2_unacked_task_redelivered_to_other_worker_when_channel_closes(ctx):
    queue = ctx.queue("task_queue")
    log = []
    doomed = _worker(ctx, queue, log, "doomed", ack=False)
    _worker(ctx, queue, log, "survivor")
    tasks = [f"task {i}" for i in range(6)]
    _new_task(ctx, queue, tasks)
    ctx.wait_until(lambda: len(log) >= len(tasks), f"{len(tasks)} tasks to be dispatched")
    held = [d for w, d in log if w == "doomed"]
    assert len(held) == 1, f"doomed worker holds {len(held)} tasks, expected 1"
    doomed.close()  # the worker dies with its task unacked
    ctx.wait_until(lambda: len(log) >= len(tasks) + 1,
                   f"{held[0].body!r} to be redelivered to the surviving worker")
    ctx.settle()
    again = log[len(tasks):]
    assert len(again) == 1, f"expected one redelivery, got {[(w, d.body) for w, d in again]}"
    who, d = again[0]
    assert who == "survivor", f"redelivered to {who}"
    assert d.body == held[0].body, f"redelivered {d.body!r}, the dead worker held {held[0].body!r}"
    assert d.method.redelivered is True, f"redelivery has redelivered={d.method.redelivered}"
    assert d.props.delivery_mode == 2, d.props
    first_time = [d for w, d in log[: len(tasks)] if w == "survivor"]
    assert all(not x.method.redelivered for x in first_time), "fresh task flagged redelivered"
    finished = sorted(x.body.decode() for w, x in log if w == "survivor")
    assert finished == sorted(tasks), f"survivor finished {finished}, expected {sorted(tasks)}"
    assert _message_count(ctx, queue) == 0, "queue not empty after every task was acked"


# ---------------------------------------------------------------------------------------
# Tutorial 3: Publish/Subscribe


def _subscriber(ctx, exchange, exchange_type, keys):
    """A tutorial receiver: own connection, server-named exclusive queue, bound by keys."""
    ch = ctx.connect().channel()
    ch.exchange_declare(exchange, exchange_type=exchange_type)
    ok = ch.queue_declare("", exclusive=True)
    queue = ok.method.queue
    assert queue.startswith("amq.gen-"), f"server-named queue is {queue!r}"
    for key in keys:
        ch.queue_bind(queue, exchange, routing_key=key)
    return queue, inbox(ch, queue)


def t3_fanout_delivers_every_message_to_every_server_named_queue(ctx):
    exchange = ctx.exchange("logs")
    q1, got1 = _subscriber(ctx, exchange, "fanout", [None])
    q2, got2 = _subscriber(ctx, exchange, "fanout", [None])
    assert q1 != q2, "two server-named queues got the same name"
    pub = ctx.connect().channel()
    pub.exchange_declare(exchange, exchange_type="fanout")
    logs = [f"info: Hello World! #{i}" for i in range(5)]
    for i, line in enumerate(logs):
        # Fanout ignores the routing key: vary it to prove that.
        pub.basic_publish(exchange, f"ignored.{i}", line.encode())
    expect_routing(ctx, pub, {"subscriber 1": (q1, got1, logs), "subscriber 2": (q2, got2, logs)})
    for got in (got1, got2):
        assert bodies(got) == logs, f"out of order: {bodies(got)}"


# ---------------------------------------------------------------------------------------
# Tutorial 4: Routing


def t4_direct_exchange_routes_by_severity(ctx):
    exchange = ctx.exchange("direct_logs")
    qa, got_a = _subscriber(ctx, exchange, "direct", ["error"])
    qb, got_b = _subscriber(ctx, exchange, "direct", ["info", "warning", "error"])
    pub = ctx.connect().channel()
    pub.exchange_declare(exchange, exchange_type="direct")
    sent = [("info", "info: 1"), ("warning", "warning: 2"), ("error", "error: 3"),
            ("debug", "debug: 4 (bound nowhere)"), ("error", "error: 5"), ("info", "info: 6"),
            ("ERROR", "ERROR: 7 (keys are case-sensitive)")]
    for severity, text in sent:
        pub.basic_publish(exchange, severity, text.encode())
    expect_routing(ctx, pub, {
        "queue A (error)": (qa, got_a, ["error: 3", "error: 5"]),
        "queue B (info, warning, error)": (qb, got_b, ["info: 1", "warning: 2", "error: 3",
                                                       "error: 5", "info: 6"]),
    })
    for d in got_a + got_b:
        if d.body != SENTINEL:
            assert d.method.exchange == exchange, d.method
            assert d.method.routing_key == d.body.decode().split(":")[0], d.method


# ---------------------------------------------------------------------------------------
# Tutorial 5: Topics

TOPIC_KEYS = ["quick.orange.rabbit", "lazy.orange.elephant", "quick.orange.fox",
              "lazy.brown.fox", "lazy.pink.rabbit", "quick.brown.fox",
              "quick.orange.male.rabbit", "lazy.orange.male.rabbit"]
TOPIC_Q1 = ["quick.orange.rabbit", "lazy.orange.elephant", "quick.orange.fox"]
# lazy.pink.rabbit matches both of Q2's bindings but is delivered to Q2 once.
TOPIC_Q2 = ["quick.orange.rabbit", "lazy.orange.elephant", "lazy.brown.fox",
            "lazy.pink.rabbit", "lazy.orange.male.rabbit"]


def t5_topic_exchange_matches_star_and_hash(ctx):
    exchange = ctx.exchange("topic_logs")
    q1, got1 = _subscriber(ctx, exchange, "topic", ["*.orange.*"])
    q2, got2 = _subscriber(ctx, exchange, "topic", ["*.*.rabbit", "lazy.#"])
    pub = ctx.connect().channel()
    pub.exchange_declare(exchange, exchange_type="topic")
    for key in TOPIC_KEYS:
        pub.basic_publish(exchange, key, key.encode())
    expect_routing(ctx, pub, {
        "Q1 (*.orange.*)": (q1, got1, TOPIC_Q1),
        "Q2 (*.*.rabbit, lazy.#)": (q2, got2, TOPIC_Q2),
    })
    for d in got1 + got2:
        if d.body != SENTINEL:
            assert d.method.routing_key == d.body.decode(), d.method


# ---------------------------------------------------------------------------------------
# Tutorial 6: RPC


def fib(n):
    a, b = 0, 1
    for _ in range(n):
        a, b = b, a + b
    return a


RPC_INPUTS = [0, 1, 2, 3, 10, 20, 30, 7]


def _rpc_server(ctx, queue):
    """The tutorial's rpc_server: prefetch 1, reply to reply_to with the same correlation_id."""
    ch = ctx.connect().channel()
    ch.queue_declare(queue)
    ch.basic_qos(prefetch_count=1)
    seen_reply_to = []

    def on_request(ch_, method, props, body):
        seen_reply_to.append(props.reply_to)
        ch_.basic_publish(
            "", props.reply_to, str(fib(int(body))).encode(),
            properties=pika.BasicProperties(correlation_id=props.correlation_id),
        )
        ch_.basic_ack(method.delivery_tag)

    ch.basic_consume(queue, on_request)
    return seen_reply_to


def _rpc_calls(ctx, ch, rpc_queue, reply_to, responses):
    """Send every request at once; returns {correlation_id: n}; checks the responses."""
    pending = {}
    for n in RPC_INPUTS:
        corr = str(uuid.uuid4())
        pending[corr] = n
        ch.basic_publish("", rpc_queue, str(n).encode(),
                         properties=pika.BasicProperties(reply_to=reply_to, correlation_id=corr))
    ctx.wait_until(lambda: len(responses) >= len(pending),
                   f"{len(pending)} RPC responses (have {len(responses)})")
    ctx.settle()
    assert len(responses) == len(pending), f"{len(responses)} responses to {len(pending)} calls"
    answered = {}
    for d in responses:
        corr = d.props.correlation_id
        assert corr in pending, f"response with unknown correlation_id {corr!r}: {d.body!r}"
        assert corr not in answered, f"two responses for correlation_id {corr}"
        answered[corr] = int(d.body)
    for corr, n in pending.items():
        assert answered[corr] == fib(n), f"fib({n}) answered {answered[corr]}, not {fib(n)}"


def t6_rpc_with_exclusive_callback_queue(ctx):
    rpc_queue = ctx.queue("rpc_queue")
    seen_reply_to = _rpc_server(ctx, rpc_queue)
    ch = ctx.connect().channel()
    callback_queue = ch.queue_declare("", exclusive=True).method.queue
    assert callback_queue.startswith("amq.gen-"), callback_queue
    responses = inbox(ch, callback_queue)
    _rpc_calls(ctx, ch, rpc_queue, callback_queue, responses)
    assert set(seen_reply_to) == {callback_queue}, seen_reply_to


def t6_rpc_with_direct_reply_to(ctx):
    rpc_queue = ctx.queue("rpc_queue")
    seen_reply_to = _rpc_server(ctx, rpc_queue)
    ch = ctx.connect().channel()
    # Spec of the extension: consume the pseudo-queue with no-ack first, then publish on
    # the same channel with reply_to set to it.
    responses = inbox(ch, "amq.rabbitmq.reply-to", auto_ack=True)
    _rpc_calls(ctx, ch, rpc_queue, "amq.rabbitmq.reply-to", responses)
    assert len(seen_reply_to) == len(RPC_INPUTS), seen_reply_to
    for r in seen_reply_to:
        assert r.startswith("amq.rabbitmq.reply-to."), (
            f"the server should see a rewritten reply_to, saw {r!r}")
    for d in responses:
        assert d.method.exchange == "", d.method
        assert d.method.routing_key.startswith("amq.rabbitmq.reply-to."), d.method


# ---------------------------------------------------------------------------------------
# Beyond the tutorials: confirms, mandatory returns, channel errors.


def publisher_confirms_ack_every_message(ctx):
    queue = ctx.queue("confirmed")
    ch = ctx.connect().channel()
    ch.queue_declare(queue)
    ch.confirm_delivery()
    sent = [f"confirmed {i}" for i in range(10)]
    for body in sent:
        # With confirms on, pika's basic_publish waits for the ack and raises on a nack.
        ch.basic_publish("", queue, body.encode(),
                         properties=pika.BasicProperties(delivery_mode=2))
    count = ch.queue_declare(queue, passive=True).method.message_count
    assert count == len(sent), f"{count} messages in the queue after {len(sent)} confirms"
    got = inbox(ch, queue)
    ctx.wait_until(lambda: len(got) >= len(sent), f"{len(sent)} confirmed messages")
    ctx.settle()
    assert [d.body.decode() for d in got] == sent, [d.body for d in got]


def mandatory_publish_to_unroutable_key_is_returned_with_312(ctx):
    exchange = ctx.exchange("mandatory")
    queue = ctx.queue("bound")
    ch = ctx.connect().channel()
    ch.exchange_declare(exchange, exchange_type="direct")
    ch.queue_declare(queue)
    ch.queue_bind(queue, exchange, routing_key="bound")
    returned = []
    ch.add_on_return_callback(lambda _ch, m, p, b: returned.append(Delivery(m, p, b)))
    ch.basic_publish(exchange, "nowhere", b"unroutable", mandatory=True,
                     properties=pika.BasicProperties(message_id="m-1"))
    ch.basic_publish(exchange, "bound", b"routable", mandatory=True)
    ch.basic_publish(exchange, "nowhere", b"dropped quietly", mandatory=False)
    ctx.wait_until(lambda: returned, "basic.return of the mandatory unroutable message")
    got = inbox(ch, queue)
    ctx.wait_until(lambda: got, "the routable mandatory message")
    ctx.settle()
    assert len(returned) == 1, f"returned: {[d.body for d in returned]}"
    r = returned[0]
    assert (r.method.reply_code, r.method.reply_text) == (312, "NO_ROUTE"), r.method
    assert (r.method.exchange, r.method.routing_key) == (exchange, "nowhere"), r.method
    assert (r.body, r.props.message_id) == (b"unroutable", "m-1"), (r.body, r.props)
    assert [d.body for d in got] == [b"routable"], [d.body for d in got]

    # With confirms on, the return comes before the ack and pika raises UnroutableError.
    cch = ctx.connect().channel()
    cch.confirm_delivery()
    try:
        cch.basic_publish(exchange, "nowhere", b"unroutable, confirmed", mandatory=True)
    except UnroutableError as e:
        [msg] = e.messages
        assert (msg.method.reply_code, msg.method.reply_text) == (312, "NO_ROUTE"), msg.method
        assert msg.body == b"unroutable, confirmed", msg.body
    else:
        raise AssertionError("confirmed mandatory publish to an unroutable key did not raise")
    cch.basic_publish(exchange, "bound", b"routable, confirmed", mandatory=True)


def passive_declare_of_missing_queue_closes_channel_with_404(ctx):
    missing = ctx.name("missing")
    conn = ctx.connect()
    ch = conn.channel()
    try:
        ch.queue_declare(missing, passive=True)
    except ChannelClosedByBroker as e:
        assert e.reply_code == 404, f"reply code {e.reply_code} ({e.reply_text})"
        want = f"NOT_FOUND - no queue '{missing}' in vhost '{vhost_of(AMQP_URL)}'"
        assert e.reply_text == want, f"reply text {e.reply_text!r}, RabbitMQ says {want!r}"
    else:
        raise AssertionError("passive declare of a missing queue succeeded")
    assert ch.is_closed, "channel still open after a channel error"
    assert conn.is_open, "a 404 is a channel error, yet the connection closed"

    ch = conn.channel()
    try:
        ch.exchange_declare(missing, passive=True)
    except ChannelClosedByBroker as e:
        assert e.reply_code == 404, f"reply code {e.reply_code} ({e.reply_text})"
        want = f"NOT_FOUND - no exchange '{missing}' in vhost '{vhost_of(AMQP_URL)}'"
        assert e.reply_text == want, f"reply text {e.reply_text!r}, RabbitMQ says {want!r}"
    else:
        raise AssertionError("passive declare of a missing exchange succeeded")
    # The connection is still usable.
    ch = conn.channel()
    ch.queue_declare("", exclusive=True)


def redeclare_with_other_durability_closes_channel_with_406(ctx):
    queue = ctx.queue("durable")
    conn = ctx.connect()
    ch = conn.channel()
    ch.queue_declare(queue, durable=True)
    ch.queue_declare(queue, durable=True)  # same arguments: fine
    try:
        ch.queue_declare(queue, durable=False)
    except ChannelClosedByBroker as e:
        assert e.reply_code == 406, f"reply code {e.reply_code} ({e.reply_text})"
        assert e.reply_text.startswith("PRECONDITION_FAILED - inequivalent arg 'durable'"), (
            e.reply_text)
    else:
        raise AssertionError("redeclaring a durable queue as non-durable succeeded")
    assert conn.is_open, "a 406 is a channel error, yet the connection closed"


TESTS = [
    t1_hello_world_default_exchange_delivers_to_named_queue,
    t2_work_queue_tasks_processed_exactly_once_by_both_workers,
    t2_prefetch_one_holds_back_busy_worker,
    t2_unacked_task_redelivered_to_other_worker_when_channel_closes,
    t3_fanout_delivers_every_message_to_every_server_named_queue,
    t4_direct_exchange_routes_by_severity,
    t5_topic_exchange_matches_star_and_hash,
    t6_rpc_with_exclusive_callback_queue,
    t6_rpc_with_direct_reply_to,
    publisher_confirms_ack_every_message,
    mandatory_publish_to_unroutable_key_is_returned_with_312,
    passive_declare_of_missing_queue_closes_channel_with_404,
    redeclare_with_other_durability_closes_channel_with_406,
]


def describe(exc):
    text = str(exc) or type(exc).__name__
    if not isinstance(exc, AssertionError):
        text = f"{type(exc).__name__}: {text}"
    return " ".join(text.split())


def on_alarm(_signum, frame):
    # pika's blocking RPCs (queue_declare, ...) have no timeout of their own: say where we hung.
    here = [f for f in traceback.extract_stack(frame) if f.filename == __file__]
    where = f" (stuck at line {here[-1].lineno} in {here[-1].name}: {here[-1].line})" if here else ""
    raise Watchdog(f"test overran its {TEST_SECONDS:g}s watchdog{where}")


def run(test):
    name = test.__name__
    ctx = Ctx(name)
    started = time.monotonic()
    error = None
    signal.setitimer(signal.ITIMER_REAL, TEST_SECONDS)
    try:
        try:
            test(ctx)
        except (Exception, Watchdog) as e:
            error = e
            if os.environ.get("INTEROP_VERBOSE"):
                traceback.print_exc()
        signal.setitimer(signal.ITIMER_REAL, WAIT_SECONDS)
        try:
            ctx.cleanup()
        except (Exception, Watchdog) as e:
            error = error or RuntimeError(f"cleanup failed: {describe(e)}")
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    elapsed = time.monotonic() - started
    if error is None:
        print(f"PASS {SUITE} {name} ({elapsed:.2f}s)", flush=True)
        return True
    print(f"FAIL {SUITE} {name}: {describe(error)}", flush=True)
    return False


def main():
    signal.signal(signal.SIGALRM, on_alarm)
    only = set(sys.argv[1:])
    tests = [t for t in TESTS if not only or t.__name__ in only]
    try:
        Ctx("preflight").connect().close()
    except Exception as e:  # no broker: say so once per test, quickly
        for t in tests:
            print(f"FAIL {SUITE} {t.__name__}: broker unreachable: {e}", flush=True)
        print(f"# {SUITE} summary: passed=0 failed={len(tests)}", flush=True)
        return 1
    results = [run(t) for t in tests]
    passed = sum(results)
    print(f"# {SUITE} summary: passed={passed} failed={len(results) - passed}", flush=True)
    return 0 if results and all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
