'use strict';
/**
 * A stock NestJS 11 microservice on `Transport.RMQ`, used by the Rust interop tests as the
 * "real NestJS app" side (driven by `tests/src/nest.rs`).
 *
 * Environment:
 *   AMQP_URL  broker URL (default amqp://guest:guest@127.0.0.1:5672/%2f); a comma-separated
 *             list is a cluster's nodes, passed as NestJS's `urls`
 *   QUEUE     queue to consume (asserted with {durable: true})
 *   EXCHANGE  optional: also bind the queue to this topic exchange (NestJS `wildcards: true`,
 *             one binding per handler pattern)
 *
 * Stdout protocol (one line each): `READY` once listening, then for every `user.created`
 * event `{"event":"user.created","data":<data>}`. Nest's own logs go to stderr.
 * The process exits when stdin closes (its parent went away) and on SIGTERM/SIGINT.
 *
 * Plain CommonJS with the decorators applied by hand, so `npm ci` is the only install step.
 */
require('reflect-metadata');
const { Controller, Module } = require('@nestjs/common');
const { NestFactory } = require('@nestjs/core');
const { EventPattern, MessagePattern, RpcException, Transport } = require('@nestjs/microservices');

const KNOWN_USER_ID = '4fb7e234-2daa-5fed-bdf6-93f8f482da80';

/** Writes every Nest log line to stderr so stdout stays a clean line protocol. */
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
    process.stderr.write(`[nest-server] ${level} ${text}\n`);
  }
}

/** The handlers the interop tests call. */
class InteropController {
  sum(data) {
    const values = Array.isArray(data) ? data : [];
    return values.reduce((acc, v) => acc + Number(v), 0);
  }

  getUser(data) {
    if (data && data.id === KNOWN_USER_ID) {
      return {
        id: KNOWN_USER_ID,
        email: 'nest@example.com',
        name: 'Nest',
        createdAt: '2024-01-01T00:07:00.000Z',
      };
    }
    throw new RpcException({ status: 404, message: 'user not found' });
  }

  boom() {
    throw new Error('boom: a plain error the client must see as "Internal server error"');
  }

  userCreated(data) {
    process.stdout.write(`${JSON.stringify({ event: 'user.created', data })}\n`);
  }
}

/** Applies a method decorator the way TypeScript's emitted `__decorate` would. */
function decorateMethod(cls, method, decorator) {
  const descriptor = Object.getOwnPropertyDescriptor(cls.prototype, method);
  const result = decorator(cls.prototype, method, descriptor);
  Object.defineProperty(cls.prototype, method, result || descriptor);
}

decorateMethod(InteropController, 'sum', MessagePattern({ cmd: 'sum' }));
decorateMethod(InteropController, 'getUser', MessagePattern({ cmd: 'get_user' }));
decorateMethod(InteropController, 'boom', MessagePattern({ cmd: 'boom' }));
decorateMethod(InteropController, 'userCreated', EventPattern('user.created'));
Controller()(InteropController);

class AppModule {}
Module({ controllers: [InteropController] })(AppModule);

async function main() {
  // A comma-separated list is a cluster's nodes, handed to NestJS as its `urls` option.
  const urls = (process.env.AMQP_URL || 'amqp://guest:guest@127.0.0.1:5672/%2f').split(',');
  const queue = process.env.QUEUE;
  if (!queue) {
    throw new Error('QUEUE is required');
  }
  const options = {
    urls,
    queue,
    queueOptions: { durable: true },
    // A broker that is not there must fail the start, not retry forever. (Nest counts only
    // the first `connectFailed`, so any value above 1 would mean "forever".)
    maxConnectionAttempts: 1,
  };
  if (process.env.EXCHANGE) {
    Object.assign(options, { exchange: process.env.EXCHANGE, exchangeType: 'topic', wildcards: true });
  }

  const app = await NestFactory.createMicroservice(AppModule, {
    transport: Transport.RMQ,
    options,
    logger: new StderrLogger(),
  });

  let closing = false;
  const shutdown = async reason => {
    if (closing) return;
    closing = true;
    process.stderr.write(`[nest-server] shutting down: ${reason}\n`);
    // Never hang on a broken connection: exit after a grace period whatever happens.
    setTimeout(() => process.exit(0), 2000).unref();
    try {
      await app.close();
    } finally {
      process.exit(0);
    }
  };
  process.stdin.on('end', () => shutdown('stdin closed'));
  process.stdin.on('error', () => shutdown('stdin error'));
  process.stdin.resume();
  process.on('SIGTERM', () => shutdown('SIGTERM'));
  process.on('SIGINT', () => shutdown('SIGINT'));

  await app.listen();
  process.stdout.write('READY\n');
}

main().catch(err => {
  process.stderr.write(`[nest-server] failed: ${err && err.stack ? err.stack : err}\n`);
  process.exit(1);
});
