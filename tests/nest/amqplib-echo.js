'use strict';
/**
 * The raw amqplib counterpart of the benchmark's lapin echo server
 * (`cargo bench -p user-service --bench nest_vs_ours`): consumes QUEUE with manual acks and
 * prefetch PREFETCH, answers every message at once with REPLY_BODY on its `replyTo` under its
 * `correlationId`, then acks it. No framework: this is what the broker and amqplib can do.
 *
 * Environment: AMQP_URL, QUEUE, REPLY_BODY, PREFETCH (default 32).
 * Exits when stdin closes and on SIGTERM/SIGINT.
 */
const amqp = require('amqplib');

async function main() {
  const queue = process.env.QUEUE;
  if (!queue) throw new Error('QUEUE is required');
  const reply = Buffer.from(process.env.REPLY_BODY || '{}');
  // TCP_NODELAY, as lapin sets it: without it the reply waits for the broker's delayed ACK
  // of the previous write (40 ms per call at concurrency 1).
  const connection = await amqp.connect(process.env.AMQP_URL || 'amqp://guest:guest@127.0.0.1:5672/%2f', {
    noDelay: true,
  });
  const channel = await connection.createChannel();
  await channel.assertQueue(queue, { durable: true });
  await channel.prefetch(Number(process.env.PREFETCH || 32));
  await channel.consume(queue, message => {
    const { replyTo, correlationId } = message.properties;
    if (replyTo) channel.sendToQueue(replyTo, reply, { correlationId });
    channel.ack(message);
  });
  const stop = () => process.exit(0);
  process.stdin.on('end', stop);
  process.stdin.resume();
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
  process.stdout.write('READY\n');
}

main().catch(err => {
  process.stderr.write(`[amqplib-echo] failed: ${err && err.stack ? err.stack : err}\n`);
  process.exit(1);
});
