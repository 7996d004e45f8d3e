#!/usr/bin/env node
// The six RabbitMQ tutorials, written with amqplib, as self-checking interop tests.
//
// Each test follows one tutorial's pattern against the broker at $AMQP_URL and asserts that
// every message arrives where the tutorial says it does, and nowhere else. Every wait is
// bounded (INTEROP_WAIT_SECONDS, 10 s by default) and every test has a watchdog, so the suite
// never hangs: a wait that runs out is a test failure that says what it waited for.
//
// Output: one line per test, `PASS amqplib <name> (<secs>s)` or `FAIL amqplib <name>: <reason>`,
// then `# amqplib summary: passed=N failed=M`. Exit status 1 if any test failed. run.sh counts
// the PASS/FAIL lines.
//
// Every queue and exchange name carries a random per-run suffix, so reruns and suites running
// side by side never collide; each test deletes what it declared.
'use strict';

const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const path = require('node:path');

// setup.sh installs amqplib under node/, next to this file.
const amqp = require(require.resolve('amqplib', { paths: [path.join(__dirname, 'node')] }));

const SUITE = 'amqplib';
const AMQP_URL = process.env.AMQP_URL || 'amqp://guest:guest@127.0.0.1:5672/%2F';
const WAIT_MS = Number(process.env.INTEROP_WAIT_SECONDS || 10) * 1000;
const TEST_MS = Number(process.env.INTEROP_TEST_SECONDS || 15) * 1000;
// TCP connect plus AMQP handshake; a local broker needs milliseconds.
const CONNECT_MS = Number(process.env.INTEROP_CONNECT_SECONDS || 5) * 1000;
// After the expected messages have arrived, keep listening this long for unexpected extras.
const SETTLE_MS = Number(process.env.INTEROP_SETTLE_SECONDS || 0.25) * 1000;
const RUN_ID = crypto.randomBytes(4).toString('hex');
const SENTINEL = '--interop-sentinel--';
const VERBOSE = Boolean(process.env.INTEROP_VERBOSE);

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function vhostOf(url) {
  const p = new URL(url).pathname;
  return p.length > 1 ? decodeURIComponent(p.slice(1)) : '/';
}

function redact(url) {
  const u = new URL(url);
  if (u.password) u.password = '***';
  return u.toString();
}

/** Resolves or rejects like `promise`, or rejects after `ms` saying what it waited for. */
function withTimeout(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms / 1000}s waiting for ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** The reply text of an amqplib channel-close error ("... with message "TEXT""). */
function replyText(err) {
  const m = /with message "(.*)"$/s.exec(err.message);
  return m ? m[1] : err.message;
}

const BOUNDED_METHODS = ['assertQueue', 'checkQueue', 'deleteQueue', 'purgeQueue', 'bindQueue',
  'unbindQueue', 'assertExchange', 'checkExchange', 'deleteExchange', 'bindExchange',
  'unbindExchange', 'prefetch', 'qos', 'consume', 'cancel', 'get', 'recover', 'close',
  'waitForConfirms'];

/** One test's connections and declared names, and bounded ways of waiting on them. */
class Ctx {
  constructor(slug) {
    this.slug = slug;
    this.conns = [];
    this.queues = [];
    this.exchanges = [];
    this.everConnected = false;
  }

  name(what) {
    return `warren-interop.${SUITE}.${this.slug}.${what}.${RUN_ID}`;
  }

  /** A unique queue name, deleted when the test ends. */
  queue(what) {
    const name = this.name(what);
    this.queues.push(name);
    return name;
  }

  /** A unique exchange name, deleted when the test ends. */
  exchange(what) {
    const name = this.name(what);
    this.exchanges.push(name);
    return name;
  }

  async connect() {
    let conn;
    try {
      conn = await withTimeout(
        amqp.connect(AMQP_URL, {
          timeout: CONNECT_MS,
          clientProperties: { connection_name: `warren-interop ${SUITE} ${this.slug}` },
        }),
        CONNECT_MS, 'the AMQP handshake');
    } catch (e) {
      throw new Error(`cannot connect to ${redact(AMQP_URL)}: ${e.message}`);
    }
    conn.on('error', (e) => VERBOSE && console.error(`connection error: ${e.message}`));
    this.conns.push(conn);
    this.everConnected = true;
    return conn;
  }

  /** A channel on `conn` (or on a new connection), with its 'error' event handled. */
  async channel({ conn, confirm = false } = {}) {
    conn = conn || (await this.connect());
    const ch = await withTimeout(confirm ? conn.createConfirmChannel() : conn.createChannel(),
      WAIT_MS, 'channel.open-ok');
    // amqplib emits 'error' when the server closes a channel; unhandled, it would crash us.
    ch.on('error', (e) => VERBOSE && console.error(`channel error: ${e.message}`));
    // amqplib waits for a broker's reply forever: bound every synchronous method.
    for (const method of BOUNDED_METHODS) {
      const original = ch[method];
      if (typeof original !== 'function') continue;
      ch[method] = (...args) => withTimeout(original.apply(ch, args), WAIT_MS,
        `the broker's reply to ${method}(${args.length ? JSON.stringify(args[0]) : ''})`);
    }
    return ch;
  }

  /** Poll until done() is true; after the timeout, fail saying what we waited for. */
  async waitUntil(done, what, timeout = WAIT_MS) {
    const deadline = Date.now() + timeout;
    while (!done()) {
      if (Date.now() >= deadline) {
        const text = typeof what === 'function' ? what() : what;
        throw new Error(`timed out after ${timeout / 1000}s waiting for ${text}`);
      }
      await sleep(5);
    }
  }

  /** Keep listening for a while, so that unexpected extra deliveries show up. */
  settle(ms = SETTLE_MS) {
    return sleep(ms);
  }

  async closeAll() {
    const conns = this.conns;
    this.conns = [];
    for (const conn of conns) {
      try {
        await withTimeout(conn.close(), 5000, 'connection.close-ok');
      } catch (e) {
        // Already closed (fine), or the broker is not answering: drop the socket.
        if (conn.connection && conn.connection.stream) conn.connection.stream.destroy();
      }
    }
  }

  async cleanup() {
    await this.closeAll();
    // Nothing can have been declared without a connection.
    if (!this.everConnected || (this.queues.length === 0 && this.exchanges.length === 0)) return;
    try {
      const conn = await this.connect();
      let ch = null;
      const doomed = [...this.queues.map((q) => ['queue', q]), ...this.exchanges.map((e) => ['exchange', e])];
      for (const [kind, name] of doomed) {
        if (ch === null) ch = await this.channel({ conn });
        try {
          await withTimeout(kind === 'queue' ? ch.deleteQueue(name) : ch.deleteExchange(name),
            WAIT_MS, `${kind}.delete-ok for ${name}`);
        } catch (e) {
          if (e.code !== 404) throw e;
          ch = null; // the channel is closed now
        }
      }
    } finally {
      await this.closeAll();
    }
  }
}

/** Consume `queue` on `ch`; returns the array that deliveries are pushed onto. */
async function inbox(ch, queue, { noAck = true } = {}) {
  const got = [];
  await ch.consume(queue, (msg) => { if (msg) got.push(msg); }, { noAck });
  return got;
}

const text = (msg) => msg.content.toString();
const bodies = (got) => got.map(text).filter((b) => b !== SENTINEL);
const sorted = (xs) => [...xs].sort();

/**
 * Wait until each queue holds exactly its expected bodies.
 *
 * `expected` maps a label to [queue name, inbox array, expected bodies]. After the test's
 * messages, a sentinel goes to each queue through the default exchange on the same channel;
 * once every sentinel and every expected message has arrived (or a second after the last
 * sentinel, if some never do), we listen a little longer for extras, then compare.
 */
async function expectRouting(ctx, publisher, expected) {
  const entries = Object.entries(expected);
  for (const [, [queue]] of entries) publisher.sendToQueue(queue, Buffer.from(SENTINEL));
  let sentinelsSeen = null;
  await ctx.waitUntil(() => {
    if (!entries.every(([, [, got]]) => got.some((m) => text(m) === SENTINEL))) return false;
    if (sentinelsSeen === null) sentinelsSeen = Date.now();
    const enough = entries.every(([, [, got, want]]) => bodies(got).length >= want.length);
    return enough || Date.now() - sentinelsSeen > 1000;
  }, () => "every queue's sentinel and expected messages: " +
    entries.map(([label, [, got]]) => `${label} has ${JSON.stringify(bodies(got))}`).join(', '));
  await ctx.settle();
  const problems = [];
  for (const [label, [, got, want]] of entries) {
    if (JSON.stringify(sorted(bodies(got))) !== JSON.stringify(sorted(want))) {
      problems.push(`${label}: expected ${JSON.stringify(sorted(want))}, got ${JSON.stringify(sorted(bodies(got)))}`);
    }
  }
  assert.ok(problems.length === 0, problems.join('; '));
}

// -------------------------------------------------------------------------------------------
// Tutorial 1: "Hello World!"

async function t1_hello_world_default_exchange_delivers_to_named_queue(ctx) {
  const queue = ctx.queue('hello');
  const ch = await ctx.channel();
  const ok = await ch.assertQueue(queue, { durable: false });
  assert.equal(ok.queue, queue, 'declare-ok names another queue');
  assert.equal(ok.messageCount, 0);
  ch.sendToQueue(queue, Buffer.from('Hello World!'));

  const receiver = await ctx.channel();
  await receiver.assertQueue(queue, { durable: false }); // the tutorial's receiver declares it too
  const got = await inbox(receiver, queue);
  await ctx.waitUntil(() => got.length > 0, "'Hello World!' on the hello queue");
  await ctx.settle();
  assert.deepEqual(got.map(text), ['Hello World!']);
  const f = got[0].fields;
  assert.deepEqual([f.exchange, f.routingKey, f.redelivered], ['', queue, false]);
}

// -------------------------------------------------------------------------------------------
// Tutorial 2: Work queues

/**
 * A tutorial worker: own connection, durable queue, prefetch 1, manual acks.
 * Pushes [name, msg] onto log; if ack is false, holds on to deliveries unacked.
 */
async function worker(ctx, queue, log, name, { ack = true } = {}) {
  const ch = await ctx.channel();
  await ch.assertQueue(queue, { durable: true });
  await ch.prefetch(1);
  await ch.consume(queue, (msg) => {
    if (!msg) return;
    log.push([name, msg]);
    if (ack) ch.ack(msg);
  }, { noAck: false });
  return ch;
}

async function newTask(ctx, queue, tasks) {
  const ch = await ctx.channel();
  await ch.assertQueue(queue, { durable: true });
  for (const task of tasks) ch.sendToQueue(queue, Buffer.from(task), { persistent: true });
  return ch;
}

async function messageCount(ctx, queue) {
  const ch = await ctx.channel();
  return (await ch.checkQueue(queue)).messageCount;
}

async function t2_work_queue_tasks_processed_exactly_once_by_both_workers(ctx) {
  const queue = ctx.queue('task_queue');
  const log = [];
  await worker(ctx, queue, log, 'w1');
  await worker(ctx, queue, log, 'w2');
  const tasks = Array.from({ length: 20 }, (_, i) => `task ${i}` + '.'.repeat(i % 3));
  await newTask(ctx, queue, tasks);
  await ctx.waitUntil(() => log.length >= tasks.length, `${tasks.length} tasks to be processed`);
  await ctx.settle();
  assert.deepEqual(sorted(log.map(([, m]) => text(m))), sorted(tasks), 'each task exactly once');
  const per = { w1: 0, w2: 0 };
  for (const [w] of log) per[w] += 1;
  assert.ok(per.w1 > 0 && per.w2 > 0, `work not shared: ${JSON.stringify(per)}`);
  for (const [, m] of log) {
    assert.equal(m.properties.deliveryMode, 2, `${text(m)} lost delivery_mode 2`);
    assert.equal(m.fields.redelivered, false, `${text(m)} flagged redelivered on first delivery`);
  }
  assert.equal(await messageCount(ctx, queue), 0, 'queue not empty after every task was acked');
}

async function t2_prefetch_one_holds_back_busy_worker(ctx) {
  const queue = ctx.queue('task_queue');
  const log = [];
  const busy = await worker(ctx, queue, log, 'busy', { ack: false });
  await worker(ctx, queue, log, 'fast');
  const tasks = Array.from({ length: 10 }, (_, i) => `task ${i}`);
  await newTask(ctx, queue, tasks);
  await ctx.waitUntil(() => log.length >= tasks.length, `${tasks.length} tasks to be dispatched`);
  await ctx.settle();
  const per = { busy: 0, fast: 0 };
  for (const [w] of log) per[w] += 1;
  assert.deepEqual(per, { busy: 1, fast: tasks.length - 1 },
    `with prefetch 1 the worker that never acks should get exactly 1 task, got ${JSON.stringify(per)}`);
  busy.ack(log.find(([w]) => w === 'busy')[1]);
  await ctx.settle();
  assert.deepEqual(sorted(log.map(([, m]) => text(m))), sorted(tasks), 'a task was duplicated');
  assert.equal(await messageCount(ctx, queue), 0, 'queue not empty after every task was acked');
}

async function t2_unacked_task_redelivered_to_other_worker_when_channel_closes(ctx) {
  const queue = ctx.queue('task_queue');
  const log = [];
  const doomed = await worker(ctx, queue, log, 'doomed', { ack: false });
  await worker(ctx, queue, log, 'survivor');
  const tasks = Array.from({ length: 6 }, (_, i) => `task ${i}`);
  await newTask(ctx, queue, tasks);
  await ctx.waitUntil(() => log.length >= tasks.length, `${tasks.length} tasks to be dispatched`);
  const held = log.filter(([w]) => w === 'doomed').map(([, m]) => m);
  assert.equal(held.length, 1, `doomed worker holds ${held.length} tasks, expected 1`);
  await doomed.close(); // the worker dies with its task unacked
  await ctx.waitUntil(() => log.length >= tasks.length + 1,
    `${JSON.stringify(text(held[0]))} to be redelivered to the surviving worker`);
  await ctx.settle();
  const again = log.slice(tasks.length);
  assert.equal(again.length, 1, `expected one redelivery, got ${JSON.stringify(again.map(([w, m]) => [w, text(m)]))}`);
  const [who, m] = again[0];
  assert.equal(who, 'survivor', `redelivered to ${who}`);
  assert.equal(text(m), text(held[0]), 'redelivered another task than the dead worker held');
  assert.equal(m.fields.redelivered, true, 'redelivery is not flagged redelivered');
  assert.equal(m.properties.deliveryMode, 2);
  for (const [w, x] of log.slice(0, tasks.length)) {
    if (w === 'survivor') assert.equal(x.fields.redelivered, false, 'fresh task flagged redelivered');
  }
  const finished = log.filter(([w]) => w === 'survivor').map(([, x]) => text(x));
  assert.deepEqual(sorted(finished), sorted(tasks), 'survivor should finish every task once');
  assert.equal(await messageCount(ctx, queue), 0, 'queue not empty after every task was acked');
}

// -------------------------------------------------------------------------------------------
// Tutorial 3: Publish/Subscribe

/** A tutorial receiver: own connection, server-named exclusive queue, bound by keys. */
async function subscriber(ctx, exchange, type, keys) {
  const ch = await ctx.channel();
  await ch.assertExchange(exchange, type, { durable: false });
  const ok = await ch.assertQueue('', { exclusive: true });
  assert.ok(ok.queue.startsWith('amq.gen-'), `server-named queue is ${JSON.stringify(ok.queue)}`);
  for (const key of keys) await ch.bindQueue(ok.queue, exchange, key);
  return [ok.queue, await inbox(ch, ok.queue)];
}

async function t3_fanout_delivers_every_message_to_every_server_named_queue(ctx) {
  const exchange = ctx.exchange('logs');
  const [q1, got1] = await subscriber(ctx, exchange, 'fanout', ['']);
  const [q2, got2] = await subscriber(ctx, exchange, 'fanout', ['']);
  assert.notEqual(q1, q2, 'two server-named queues got the same name');
  const pub = await ctx.channel();
  await pub.assertExchange(exchange, 'fanout', { durable: false });
  const logs = Array.from({ length: 5 }, (_, i) => `info: Hello World! #${i}`);
  // Fanout ignores the routing key: vary it to prove that.
  logs.forEach((line, i) => pub.publish(exchange, `ignored.${i}`, Buffer.from(line)));
  await expectRouting(ctx, pub, { 'subscriber 1': [q1, got1, logs], 'subscriber 2': [q2, got2, logs] });
  for (const got of [got1, got2]) assert.deepEqual(bodies(got), logs, 'out of order');
}

// -------------------------------------------------------------------------------------------
// Tutorial 4: Routing

async function t4_direct_exchange_routes_by_severity(ctx) {
  const exchange = ctx.exchange('direct_logs');
  const [qa, gotA] = await subscriber(ctx, exchange, 'direct', ['error']);
  const [qb, gotB] = await subscriber(ctx, exchange, 'direct', ['info', 'warning', 'error']);
  const pub = await ctx.channel();
  await pub.assertExchange(exchange, 'direct', { durable: false });
  const sent = [['info', 'info: 1'], ['warning', 'warning: 2'], ['error', 'error: 3'],
    ['debug', 'debug: 4 (bound nowhere)'], ['error', 'error: 5'], ['info', 'info: 6'],
    ['ERROR', 'ERROR: 7 (keys are case-sensitive)']];
  for (const [severity, line] of sent) pub.publish(exchange, severity, Buffer.from(line));
  await expectRouting(ctx, pub, {
    'queue A (error)': [qa, gotA, ['error: 3', 'error: 5']],
    'queue B (info, warning, error)': [qb, gotB, ['info: 1', 'warning: 2', 'error: 3', 'error: 5', 'info: 6']],
  });
  for (const m of [...gotA, ...gotB]) {
    if (text(m) === SENTINEL) continue;
    assert.equal(m.fields.exchange, exchange);
    assert.equal(m.fields.routingKey, text(m).split(':')[0]);
  }
}

// -------------------------------------------------------------------------------------------
// Tutorial 5: Topics

const TOPIC_KEYS = ['quick.orange.rabbit', 'lazy.orange.elephant', 'quick.orange.fox',
  'lazy.brown.fox', 'lazy.pink.rabbit', 'quick.brown.fox',
  'quick.orange.male.rabbit', 'lazy.orange.male.rabbit'];
const TOPIC_Q1 = ['quick.orange.rabbit', 'lazy.orange.elephant', 'quick.orange.fox'];
// lazy.pink.rabbit matches both of Q2's bindings but is delivered to Q2 once.
const TOPIC_Q2 = ['quick.orange.rabbit', 'lazy.orange.elephant', 'lazy.brown.fox',
  'lazy.pink.rabbit', 'lazy.orange.male.rabbit'];

async function t5_topic_exchange_matches_star_and_hash(ctx) {
  const exchange = ctx.exchange('topic_logs');
  const [q1, got1] = await subscriber(ctx, exchange, 'topic', ['*.orange.*']);
  const [q2, got2] = await subscriber(ctx, exchange, 'topic', ['*.*.rabbit', 'lazy.#']);
  const pub = await ctx.channel();
  await pub.assertExchange(exchange, 'topic', { durable: false });
  for (const key of TOPIC_KEYS) pub.publish(exchange, key, Buffer.from(key));
  await expectRouting(ctx, pub, {
    'Q1 (*.orange.*)': [q1, got1, TOPIC_Q1],
    'Q2 (*.*.rabbit, lazy.#)': [q2, got2, TOPIC_Q2],
  });
  for (const m of [...got1, ...got2]) {
    if (text(m) !== SENTINEL) assert.equal(m.fields.routingKey, text(m));
  }
}

// -------------------------------------------------------------------------------------------
// Tutorial 6: RPC

function fib(n) {
  let [a, b] = [0, 1];
  for (let i = 0; i < n; i++) [a, b] = [b, a + b];
  return a;
}

const RPC_INPUTS = [0, 1, 2, 3, 10, 20, 30, 7];

/** The tutorial's rpc_server: prefetch 1, reply to replyTo with the same correlationId. */
async function rpcServer(ctx, queue) {
  const ch = await ctx.channel();
  await ch.assertQueue(queue, { durable: false });
  await ch.prefetch(1);
  const seenReplyTo = [];
  await ch.consume(queue, (msg) => {
    if (!msg) return;
    seenReplyTo.push(msg.properties.replyTo);
    ch.sendToQueue(msg.properties.replyTo, Buffer.from(String(fib(Number(text(msg))))),
      { correlationId: msg.properties.correlationId });
    ch.ack(msg);
  }, { noAck: false });
  return seenReplyTo;
}

/** Send every request at once, then check each response against its correlationId. */
async function rpcCalls(ctx, ch, rpcQueue, replyTo, responses) {
  const pending = new Map();
  for (const n of RPC_INPUTS) {
    const corr = crypto.randomUUID();
    pending.set(corr, n);
    ch.sendToQueue(rpcQueue, Buffer.from(String(n)), { replyTo, correlationId: corr });
  }
  await ctx.waitUntil(() => responses.length >= pending.size,
    () => `${pending.size} RPC responses (have ${responses.length})`);
  await ctx.settle();
  assert.equal(responses.length, pending.size, `${responses.length} responses to ${pending.size} calls`);
  const answered = new Map();
  for (const m of responses) {
    const corr = m.properties.correlationId;
    assert.ok(pending.has(corr), `response with unknown correlationId ${corr}: ${text(m)}`);
    assert.ok(!answered.has(corr), `two responses for correlationId ${corr}`);
    answered.set(corr, Number(text(m)));
  }
  for (const [corr, n] of pending) assert.equal(answered.get(corr), fib(n), `fib(${n})`);
}

async function t6_rpc_with_exclusive_callback_queue(ctx) {
  const rpcQueue = ctx.queue('rpc_queue');
  const seenReplyTo = await rpcServer(ctx, rpcQueue);
  const ch = await ctx.channel();
  const { queue: callbackQueue } = await ch.assertQueue('', { exclusive: true });
  assert.ok(callbackQueue.startsWith('amq.gen-'), callbackQueue);
  const responses = await inbox(ch, callbackQueue);
  await rpcCalls(ctx, ch, rpcQueue, callbackQueue, responses);
  assert.deepEqual([...new Set(seenReplyTo)], [callbackQueue]);
}

async function t6_rpc_with_direct_reply_to(ctx) {
  const rpcQueue = ctx.queue('rpc_queue');
  const seenReplyTo = await rpcServer(ctx, rpcQueue);
  const ch = await ctx.channel();
  // Consume the pseudo-queue with no-ack first, then publish on the same channel.
  const responses = await inbox(ch, 'amq.rabbitmq.reply-to', { noAck: true });
  await rpcCalls(ctx, ch, rpcQueue, 'amq.rabbitmq.reply-to', responses);
  assert.equal(seenReplyTo.length, RPC_INPUTS.length);
  for (const r of seenReplyTo) {
    assert.ok(r.startsWith('amq.rabbitmq.reply-to.'), `the server should see a rewritten replyTo, saw ${r}`);
  }
  for (const m of responses) {
    assert.equal(m.fields.exchange, '');
    assert.ok(m.fields.routingKey.startsWith('amq.rabbitmq.reply-to.'), m.fields.routingKey);
  }
}

// -------------------------------------------------------------------------------------------
// Beyond the tutorials: confirms, mandatory returns, channel errors.

async function publisher_confirms_ack_every_message(ctx) {
  const queue = ctx.queue('confirmed');
  const ch = await ctx.channel({ confirm: true });
  await ch.assertQueue(queue, { durable: false });
  const sent = Array.from({ length: 10 }, (_, i) => `confirmed ${i}`);
  const acks = sent.map((body) => new Promise((resolve, reject) => {
    ch.sendToQueue(queue, Buffer.from(body), { persistent: true },
      (err) => (err ? reject(new Error(`nack for ${body}`)) : resolve()));
  }));
  await withTimeout(Promise.all(acks), WAIT_MS, `${sent.length} publisher confirms`);
  await withTimeout(ch.waitForConfirms(), WAIT_MS, 'waitForConfirms');
  const { messageCount: count } = await ch.checkQueue(queue);
  assert.equal(count, sent.length, `${count} messages in the queue after ${sent.length} confirms`);
  const got = await inbox(ch, queue);
  await ctx.waitUntil(() => got.length >= sent.length, `${sent.length} confirmed messages`);
  await ctx.settle();
  assert.deepEqual(got.map(text), sent);
}

async function mandatory_publish_to_unroutable_key_is_returned_with_312(ctx) {
  const exchange = ctx.exchange('mandatory');
  const queue = ctx.queue('bound');
  const ch = await ctx.channel();
  await ch.assertExchange(exchange, 'direct', { durable: false });
  await ch.assertQueue(queue, { durable: false });
  await ch.bindQueue(queue, exchange, 'bound');
  const returned = [];
  ch.on('return', (msg) => returned.push(msg));
  ch.publish(exchange, 'nowhere', Buffer.from('unroutable'), { mandatory: true, messageId: 'm-1' });
  ch.publish(exchange, 'bound', Buffer.from('routable'), { mandatory: true });
  ch.publish(exchange, 'nowhere', Buffer.from('dropped quietly'), { mandatory: false });
  await ctx.waitUntil(() => returned.length > 0, 'basic.return of the mandatory unroutable message');
  const got = await inbox(ch, queue);
  await ctx.waitUntil(() => got.length > 0, 'the routable mandatory message');
  await ctx.settle();
  assert.equal(returned.length, 1, `returned: ${JSON.stringify(returned.map(text))}`);
  const r = returned[0];
  assert.deepEqual([r.fields.replyCode, r.fields.replyText], [312, 'NO_ROUTE']);
  assert.deepEqual([r.fields.exchange, r.fields.routingKey], [exchange, 'nowhere']);
  assert.deepEqual([text(r), r.properties.messageId], ['unroutable', 'm-1']);
  assert.deepEqual(got.map(text), ['routable']);

  // On a confirm channel the return comes before the ack, and the message is still acked.
  const cch = await ctx.channel({ confirm: true });
  const events = [];
  cch.on('return', (msg) => events.push(['return', msg.fields.replyCode, text(msg)]));
  const acked = new Promise((resolve, reject) => {
    cch.publish(exchange, 'nowhere', Buffer.from('unroutable, confirmed'), { mandatory: true },
      (err) => { events.push([err ? 'nack' : 'ack']); return err ? reject(err) : resolve(); });
  });
  await withTimeout(acked, WAIT_MS, 'the confirm of a mandatory unroutable message');
  assert.deepEqual(events, [['return', 312, 'unroutable, confirmed'], ['ack']]);
}

async function passive_declare_of_missing_queue_closes_channel_with_404(ctx) {
  const missing = ctx.name('missing');
  const conn = await ctx.connect();
  const vhost = vhostOf(AMQP_URL);

  let ch = await ctx.channel({ conn });
  const closed = new Promise((resolve) => ch.once('close', resolve));
  await assert.rejects(withTimeout(ch.checkQueue(missing), WAIT_MS, 'the reply to a passive queue.declare'),
    (err) => {
      assert.equal(err.code, 404, err.message);
      assert.equal(replyText(err), `NOT_FOUND - no queue '${missing}' in vhost '${vhost}'`);
      return true;
    });
  await withTimeout(closed, WAIT_MS, "the channel's close event");

  ch = await ctx.channel({ conn });
  await assert.rejects(withTimeout(ch.checkExchange(missing), WAIT_MS, 'the reply to a passive exchange.declare'),
    (err) => {
      assert.equal(err.code, 404, err.message);
      assert.equal(replyText(err), `NOT_FOUND - no exchange '${missing}' in vhost '${vhost}'`);
      return true;
    });
  // A 404 is a channel error: the connection is still usable.
  ch = await ctx.channel({ conn });
  await ch.assertQueue('', { exclusive: true });
}

async function redeclare_with_other_durability_closes_channel_with_406(ctx) {
  const queue = ctx.queue('durable');
  const conn = await ctx.connect();
  let ch = await ctx.channel({ conn });
  await ch.assertQueue(queue, { durable: true });
  await ch.assertQueue(queue, { durable: true }); // same arguments: fine
  await assert.rejects(withTimeout(ch.assertQueue(queue, { durable: false }), WAIT_MS, 'the reply to queue.declare'),
    (err) => {
      assert.equal(err.code, 406, err.message);
      assert.ok(replyText(err).startsWith("PRECONDITION_FAILED - inequivalent arg 'durable'"), replyText(err));
      return true;
    });
  ch = await ctx.channel({ conn });
  await ch.checkQueue(queue);
}

const TESTS = [
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
];

function describe(err) {
  const msg = (err && err.message) || String(err);
  return msg.replace(/\s+/g, ' ').trim();
}

async function run(test) {
  const ctx = new Ctx(test.name);
  const started = Date.now();
  let error = null;
  try {
    await withTimeout(test(ctx), TEST_MS, `the test to finish (watchdog, ${TEST_MS / 1000}s)`);
  } catch (e) {
    error = e;
    if (VERBOSE) console.error(e);
  }
  try {
    await withTimeout(ctx.cleanup(), WAIT_MS, 'cleanup');
  } catch (e) {
    error = error || new Error(`cleanup failed: ${describe(e)}`);
    await ctx.closeAll();
  }
  const secs = ((Date.now() - started) / 1000).toFixed(2);
  if (error === null) {
    console.log(`PASS ${SUITE} ${test.name} (${secs}s)`);
    return true;
  }
  console.log(`FAIL ${SUITE} ${test.name}: ${describe(error)}`);
  return false;
}

async function main() {
  // A test abandoned by its watchdog may reject later; that is already a reported failure.
  process.on('unhandledRejection', (e) => VERBOSE && console.error('late rejection:', e));
  const only = new Set(process.argv.slice(2));
  const tests = TESTS.filter((t) => only.size === 0 || only.has(t.name));
  const preflight = new Ctx('preflight');
  try {
    await preflight.connect();
  } catch (e) { // no broker: say so once per test, quickly
    for (const t of tests) console.log(`FAIL ${SUITE} ${t.name}: broker unreachable: ${describe(e)}`);
    console.log(`# ${SUITE} summary: passed=0 failed=${tests.length}`);
    return 1;
  } finally {
    await preflight.closeAll();
  }
  const results = [];
  for (const test of tests) results.push(await run(test));
  const passed = results.filter(Boolean).length;
  console.log(`# ${SUITE} summary: passed=${passed} failed=${results.length - passed}`);
  return results.length > 0 && passed === results.length ? 0 : 1;
}

main().then(
  (code) => process.exit(code), // exit even if a stuck socket would keep the loop alive
  (e) => { console.error(e); process.exit(1); },
);
