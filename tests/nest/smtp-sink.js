'use strict';
/**
 * An SMTP sink for the Rust test suites (`tests/src/smtp.rs`): a real SMTP server (the
 * `smtp-server` package) that records every accepted message and can be told to fail.
 *
 * Environment: PORT (0 or unset = ephemeral), listens on 127.0.0.1 only, plain SMTP (no
 * STARTTLS), AUTH optional (any credentials accepted).
 *
 * Stdout protocol, one line each:
 *   LISTENING <port>                                   once bound
 *   {"mailFrom":"..","rcptTo":[".."],"raw":".."}       for every accepted message
 *   OK <command>  /  ERR <command>                     answer to each stdin command
 * Stdin commands, one per line:
 *   mode accept     accept everything (default)
 *   mode tempfail   answer RCPT TO with `451 4.3.0 try again later`
 *   mode permfail   answer RCPT TO with `550 5.1.1 mailbox unavailable`
 * The process exits when stdin closes.
 */
const readline = require('node:readline');
const { SMTPServer } = require('smtp-server');

const MODES = new Set(['accept', 'tempfail', 'permfail']);
let mode = 'accept';

function emitLine(line) {
  process.stdout.write(`${line}\n`);
}

/** The error the current mode answers with, or null to accept. */
function modeError() {
  if (mode === 'tempfail') {
    return Object.assign(new Error('4.3.0 try again later'), { responseCode: 451 });
  }
  if (mode === 'permfail') {
    return Object.assign(new Error('5.1.1 mailbox unavailable'), { responseCode: 550 });
  }
  return null;
}

const server = new SMTPServer({
  authOptional: true,
  disabledCommands: ['STARTTLS'],
  logger: false,
  banner: 'smtp-sink',
  size: 25 * 1024 * 1024,
  onAuth(auth, session, callback) {
    callback(null, { user: auth.username || 'anonymous' });
  },
  onRcptTo(address, session, callback) {
    callback(modeError());
  },
  onData(stream, session, callback) {
    const chunks = [];
    stream.on('data', chunk => chunks.push(chunk));
    stream.on('error', callback);
    stream.on('end', () => {
      // A mode change between RCPT and the end of DATA still applies.
      const err = modeError();
      if (err) return callback(err);
      if (stream.sizeExceeded) {
        return callback(Object.assign(new Error('5.3.4 message too big'), { responseCode: 552 }));
      }
      const envelope = session.envelope;
      emitLine(
        JSON.stringify({
          mailFrom: envelope.mailFrom ? envelope.mailFrom.address : '',
          rcptTo: envelope.rcptTo.map(r => r.address),
          raw: Buffer.concat(chunks).toString('utf8'),
        }),
      );
      callback(null, 'queued');
    });
  },
});

let listening = false;
server.on('error', err => {
  process.stderr.write(`[smtp-sink] ${err && err.stack ? err.stack : err}\n`);
  // Failing to bind (e.g. the port of a restart is taken) is fatal: the parent sees the exit.
  if (!listening) process.exit(1);
});

const port = Number(process.env.PORT || 0);
server.listen(port, '127.0.0.1', () => {
  listening = true;
  emitLine(`LISTENING ${server.server.address().port}`);
});

const commands = readline.createInterface({ input: process.stdin, terminal: false });
commands.on('line', line => {
  const command = line.trim();
  if (!command) return;
  const [verb, arg] = command.split(/\s+/);
  if (verb === 'mode' && MODES.has(arg)) {
    mode = arg;
    emitLine(`OK ${command}`);
  } else {
    emitLine(`ERR ${command}`);
  }
});
commands.on('close', () => process.exit(0));
