#!/usr/bin/env node
// amqplib over TLS against the Warren that tls_interop.py starts: publish and consume without
// and with a client certificate, EXTERNAL as the certificate's user, and the refusals (an
// untrusted certificate, EXTERNAL for a missing user, EXTERNAL without a certificate).
//
// Environment (set by tls_interop.py): AMQPS_PORT, TLS_DIR (ca.pem, client.pem/.key,
// nobody.pem/.key, stranger.pem/.key). tls_interop.py checks who EXTERNAL logged in as.
// Output: `PASS tls <name> (<secs>s)` / `FAIL tls <name>: <reason>` lines; exit 1 on failure.
'use strict';

const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');

const amqp = require(require.resolve('amqplib', { paths: [path.join(__dirname, 'node')] }));

const SUITE = 'tls';
const PORT = process.env.AMQPS_PORT;
const DIR = process.env.TLS_DIR;
const WAIT_MS = 10000;

let failed = 0;

function withTimeout(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms / 1000}s waiting for ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** Socket options: trust the test CA, present `client`'s certificate if given. */
function tlsOptions(client, external) {
  const o = { ca: [fs.readFileSync(path.join(DIR, 'ca.pem'))], servername: 'localhost' };
  if (client) {
    o.cert = fs.readFileSync(path.join(DIR, `${client}.pem`));
    o.key = fs.readFileSync(path.join(DIR, `${client}.key`));
  }
  if (external) o.credentials = amqp.credentials.external();
  return o;
}

function connect(client, external) {
  const userinfo = external ? '' : 'guest:guest@';
  const url = `amqps://${userinfo}localhost:${PORT}/%2F`;
  return withTimeout(amqp.connect(url, tlsOptions(client, external)), WAIT_MS, 'connect');
}

async function roundTrip(conn, tag) {
  const ch = await conn.createChannel();
  const { queue } = await ch.assertQueue('', { exclusive: true });
  const got = new Promise((resolve) => {
    ch.consume(queue, (msg) => {
      ch.ack(msg);
      resolve(msg.content.toString());
    });
  });
  ch.sendToQueue(queue, Buffer.from(`amqplib-${tag}`));
  assert.equal(await withTimeout(got, WAIT_MS, 'the delivery'), `amqplib-${tag}`);
  await ch.close();
}

async function refused(client, external) {
  let conn;
  try {
    conn = await connect(client, external);
  } catch (e) {
    return e;
  }
  await conn.close();
  throw new Error('the connection was accepted');
}

async function test(name, fn) {
  const t0 = Date.now();
  try {
    await fn();
    console.log(`PASS ${SUITE} ${name} (${((Date.now() - t0) / 1000).toFixed(1)}s)`);
  } catch (e) {
    failed += 1;
    console.log(`FAIL ${SUITE} ${name}: ${String(e && e.stack ? e.message : e).replace(/\n/g, ' | ')}`);
  }
}

async function main() {
  await test('amqplib_publishes_and_consumes_over_tls_without_a_client_certificate', async () => {
    const conn = await connect(null, false);
    try { await roundTrip(conn, 'plain'); } finally { await conn.close(); }
  });
  await test('amqplib_publishes_and_consumes_over_tls_with_a_client_certificate', async () => {
    const conn = await connect('client', false);
    try { await roundTrip(conn, 'cert'); } finally { await conn.close(); }
  });
  await test('amqplib_external_logs_in_as_the_certificates_user', async () => {
    const conn = await connect('client', true);
    try { await roundTrip(conn, 'external'); } finally { await conn.close(); }
  });
  await test('amqplib_external_for_a_user_that_does_not_exist_is_refused', async () => {
    const e = await refused('nobody', true);
    assert.match(String(e.message), /ACCESS_REFUSED/);
  });
  await test('amqplib_external_is_not_offered_without_a_client_certificate', async () => {
    const e = await refused(null, true);
    assert.match(String(e.message), /EXTERNAL/);
  });
  await test('amqplib_with_a_certificate_from_an_untrusted_ca_is_refused', async () => {
    const e = await refused('stranger', false);
    assert.match(String(e.message), /unknown ca/i);
  });
  process.exitCode = failed ? 1 : 0;
}

main().catch((e) => {
  console.log(`FAIL ${SUITE} amqplib_tls: ${e}`);
  process.exitCode = 1;
});
