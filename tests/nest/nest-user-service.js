'use strict';
/**
 * user-service written as a NestJS 11 developer would write it: one `@MessagePattern`
 * handler answering `{cmd:"get_user"}` from Postgres through a `pg` Pool, on `Transport.RMQ`
 * with NestJS's default options. It is the baseline of the side-by-side benchmark
 * (`cargo bench -p user-service --bench nest_vs_ours`), so it reads the same `users` table
 * (user-service's migrations/0001_users.sql: `id uuid PRIMARY KEY`) with the obvious query.
 *
 * Environment:
 *   AMQP_URL      broker URL (default amqp://guest:guest@127.0.0.1:5672/%2f)
 *   QUEUE         queue to consume (asserted with {durable: true}); required
 *   DATABASE_URL  Postgres URL of a database holding the `users` table; required
 *   PG_POOL_SIZE  the pg Pool's `max` (default 10, pg's own default)
 *   PREFETCH      optional: consume with manual acks and this prefetch (NestJS's default is
 *                 no acks and no prefetch limit)
 *
 * Stdout: `READY` once listening. Nest's own logs go to stderr. Exits when stdin closes
 * and on SIGTERM/SIGINT.
 *
 * Plain CommonJS with the decorators applied by hand, like nest-server.js.
 */
require('reflect-metadata');
const { Controller, Module } = require('@nestjs/common');
const { NestFactory } = require('@nestjs/core');
const { MessagePattern, RpcException, Transport } = require('@nestjs/microservices');
const { Pool } = require('pg');

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

const pool = new Pool({
  connectionString: process.env.DATABASE_URL,
  max: Number(process.env.PG_POOL_SIZE || 10),
});

class UsersController {
  async getUser(data) {
    const id = data && data.id;
    if (typeof id !== 'string' || !UUID.test(id)) {
      throw new RpcException({ status: 400, message: 'invalid user id' });
    }
    const { rows } = await pool.query('SELECT id, email, name, created_at FROM users WHERE id = $1', [id]);
    if (rows.length === 0) {
      throw new RpcException({ status: 404, message: 'user not found' });
    }
    const [user] = rows;
    return { id: user.id, email: user.email, name: user.name, createdAt: user.created_at.toISOString() };
  }
}

function decorateMethod(cls, method, decorator) {
  const descriptor = Object.getOwnPropertyDescriptor(cls.prototype, method);
  const result = decorator(cls.prototype, method, descriptor);
  Object.defineProperty(cls.prototype, method, result || descriptor);
}

decorateMethod(UsersController, 'getUser', MessagePattern({ cmd: 'get_user' }));
Controller()(UsersController);

class AppModule {}
Module({ controllers: [UsersController] })(AppModule);

/** Nest's log lines go to stderr so stdout stays a clean line protocol. */
const stderrLogger = ['log', 'error', 'warn', 'debug', 'verbose', 'fatal'].reduce((logger, level) => {
  logger[level] = (...args) => process.stderr.write(`[nest-user-service] ${level} ${args.join(' ')}\n`);
  return logger;
}, {});

async function main() {
  const queue = process.env.QUEUE;
  if (!queue || !process.env.DATABASE_URL) {
    throw new Error('QUEUE and DATABASE_URL are required');
  }
  const options = {
    urls: [process.env.AMQP_URL || 'amqp://guest:guest@127.0.0.1:5672/%2f'],
    queue,
    queueOptions: { durable: true },
    maxConnectionAttempts: 1,
  };
  if (process.env.PREFETCH) {
    Object.assign(options, { noAck: false, prefetchCount: Number(process.env.PREFETCH) });
  }
  const app = await NestFactory.createMicroservice(AppModule, {
    transport: Transport.RMQ,
    options,
    logger: stderrLogger,
  });

  let closing = false;
  const shutdown = async reason => {
    if (closing) return;
    closing = true;
    process.stderr.write(`[nest-user-service] shutting down: ${reason}\n`);
    setTimeout(() => process.exit(0), 2000).unref();
    try {
      await app.close();
      await pool.end();
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
  process.stderr.write(`[nest-user-service] failed: ${err && err.stack ? err.stack : err}\n`);
  process.exit(1);
});
