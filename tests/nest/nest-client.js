'use strict';
/**
 * A stock NestJS 11 `ClientProxy` on `Transport.RMQ`, run once per command by the Rust interop
 * tests (`tests/src/nest.rs`) to call or notify our services exactly as a NestJS app would.
 *
 * Usage: node nest-client.js '<json command>' with one of
 *   {"op":"send","queue":"q","pattern":P,"data":D,"timeoutMs":3000,"count":N?}
 *   {"op":"emit","queue":"q","pattern":"user.created","data":D}
 *   {"op":"emit","exchange":"events","pattern":"user.created","data":D}
 * Environment: AMQP_URL (default amqp://guest:guest@127.0.0.1:5672/%2f; a comma-separated
 * list is a cluster's nodes, passed as NestJS's `urls`).
 *
 * Prints exactly one JSON line on stdout, then exits 0:
 *   {"ok":true,"response":R}   send resolved (the last value, once the reply says isDisposed)
 *   {"ok":false,"error":E}     send rejected: E is the error as NestJS hands it over (the `err`
 *                              of the reply, string or object), {"timeout":true} on timeout
 *   {"ok":true}                emit completed (the broker confirmed the publish)
 * With "count": N, N sends run concurrently and R is an array of per-send results
 * ({"ok":true,"response":..} or {"ok":false,"error":..}) in call order.
 * Nest's own logs go to stderr.
 */
require('reflect-metadata');
const { Logger } = require('@nestjs/common');
const { ClientProxyFactory, Transport } = require('@nestjs/microservices');
const { lastValueFrom, TimeoutError } = require('rxjs');
const { timeout } = require('rxjs/operators');

/** Keeps stdout for the single result line. */
class StderrLogger {
  log(...args) { this.write('LOG', args); }
  error(...args) { this.write('ERROR', args); }
  warn(...args) { this.write('WARN', args); }
  debug(...args) { this.write('DEBUG', args); }
  verbose(...args) { this.write('VERBOSE', args); }
  fatal(...args) { this.write('FATAL', args); }
  write(level, args) {
    const text = args
      .map(a => (a instanceof Error ? a.stack : typeof a === 'string' ? a : JSON.stringify(a)))
      .join(' ');
    process.stderr.write(`[nest-client] ${level} ${text}\n`);
  }
}

/** Turns a rejection into the JSON the Rust side sees as `Err(..)`. */
function describeError(err) {
  if (err instanceof TimeoutError) {
    return { timeout: true };
  }
  if (err instanceof Error) {
    // Transport failures (not a reply from the server): keep them readable.
    const described = { name: err.name, message: err.message };
    if (err.code !== undefined) described.code = err.code;
    return described;
  }
  return err === undefined ? null : err;
}

let printed = false;
/** Prints the one result line (only the first call counts) and exits 0. */
function finish(result) {
  if (printed) return;
  printed = true;
  process.stdout.write(`${JSON.stringify(result)}\n`, () => process.exit(0));
}

function buildClient(command) {
  // A comma-separated list is a cluster's nodes, handed to NestJS as its `urls` option.
  const urls = (process.env.AMQP_URL || 'amqp://guest:guest@127.0.0.1:5672/%2f').split(',');
  const options = { urls };
  if (command.exchange) {
    // Publishes to the topic exchange with routing key = pattern (NestJS `wildcards: true`).
    Object.assign(options, { exchange: command.exchange, exchangeType: 'topic', wildcards: true });
    if (command.queue) options.queue = command.queue;
  } else {
    Object.assign(options, { queue: command.queue, queueOptions: { durable: true } });
  }
  return ClientProxyFactory.create({ transport: Transport.RMQ, options });
}

async function sendOnce(client, command) {
  const timeoutMs = Number(command.timeoutMs || 3000);
  try {
    const response = await lastValueFrom(
      client.send(command.pattern, command.data === undefined ? null : command.data).pipe(timeout(timeoutMs)),
      { defaultValue: null },
    );
    return { ok: true, response: response === undefined ? null : response };
  } catch (err) {
    return { ok: false, error: describeError(err) };
  }
}

async function run(command) {
  const client = buildClient(command);
  try {
    await client.connect();
    if (command.op === 'send') {
      if (command.count === undefined) {
        return await sendOnce(client, command);
      }
      const calls = Array.from({ length: Number(command.count) }, () => sendOnce(client, command));
      return { ok: true, response: await Promise.all(calls) };
    }
    if (command.op === 'emit') {
      await lastValueFrom(client.emit(command.pattern, command.data === undefined ? null : command.data), {
        defaultValue: null,
      });
      return { ok: true };
    }
    return { ok: false, error: { message: `unknown op ${JSON.stringify(command.op)}` } };
  } catch (err) {
    return { ok: false, error: describeError(err) };
  } finally {
    // Never hang on close if the broker went away.
    await Promise.race([client.close(), new Promise(resolve => setTimeout(resolve, 2000).unref())]).catch(() => {});
  }
}

async function main() {
  Logger.overrideLogger(new StderrLogger());
  const arg = process.argv[2];
  if (!arg) {
    throw new Error("usage: node nest-client.js '<json command>'");
  }
  const command = JSON.parse(arg);
  // A broker-side refusal while the client sets up its channel (e.g. 406 PRECONDITION_FAILED
  // on a queue or exchange declared with other options) surfaces as an unhandled 'error'
  // event: report it as the result instead of crashing.
  process.on('uncaughtException', err => {
    process.stderr.write(`[nest-client] uncaught: ${err && err.stack ? err.stack : err}\n`);
    finish({ ok: false, error: describeError(err) });
  });
  finish(await run(command));
}

main().catch(err => {
  process.stderr.write(`[nest-client] failed: ${err && err.stack ? err.stack : err}\n`);
  process.exit(2);
});
