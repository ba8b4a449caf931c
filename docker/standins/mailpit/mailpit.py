#!/usr/bin/env python3
"""A tiny mail catcher that stands in for Mailpit (axllent/mailpit) on machines that cannot
pull images (see docker/README.md).

It speaks SMTP (default 0.0.0.0:1025, Debian's python3-aiosmtpd) and serves the subset of
Mailpit's HTTP API that this project's smoke test and end-to-end suite use (default
0.0.0.0:8025, the standard library's http.server):

    GET    /livez, /readyz                      200 "ok"
    GET    /api/v1/info                         {"Version", "Messages", "Unread", ...}
    GET    /api/v1/messages?start=&limit=       {"total", "unread", "count", "messages_count",
                                                 "start", "tags", "messages": [summary...]}
    GET    /api/v1/search?query=&start=&limit=  same shape; terms `to:`, `from:`, `subject:`,
                                                 `message-id:` or free words, all must match
    DELETE /api/v1/messages                     all messages, or those of a body {"IDs": [...]}
    GET    /api/v1/message/{ID}                 summary fields + "Text", "HTML", "Date", ...
                                                 ({ID} may be "latest")
    GET    /api/v1/message/{ID}/headers         {"Header": ["value", ...], ...}
    GET    /api/v1/message/{ID}/raw             the message as received

A summary is {"ID", "MessageID", "Read", "From": {"Address", "Name"}, "To": [{"Address",
"Name"}], "Cc", "Bcc", "ReplyTo", "Subject", "Created", "Tags", "Size", "Attachments",
"Snippet"}; messages are listed newest first, as Mailpit does.

`mailpit readyz` asks a running catcher for /readyz (exit code 0 or 1): the same command as
the official image's HEALTHCHECK, so one compose healthcheck serves both images.

Configuration (Mailpit's own variable names): MP_SMTP_BIND_ADDR (0.0.0.0:1025),
MP_UI_BIND_ADDR (0.0.0.0:8025), MP_MAX_MESSAGES (500; the oldest are dropped beyond it).
Messages live in memory only.
"""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import json
import os
import re
import shlex
import signal
import sys
import threading
import urllib.error
import urllib.request
import uuid
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import getaddresses
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

SMTP_BIND = os.environ.get("MP_SMTP_BIND_ADDR", "0.0.0.0:1025")
UI_BIND = os.environ.get("MP_UI_BIND_ADDR", "0.0.0.0:8025")
MAX_MESSAGES = int(os.environ.get("MP_MAX_MESSAGES", "500") or "500")


def split_addr(bind: str) -> tuple[str, int]:
    host, _, port = bind.rpartition(":")
    return (host or "0.0.0.0"), int(port)


def log(text: str) -> None:
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y/%m/%d %H:%M:%S")
    print(f"{stamp} [mailcatcher] {text}", flush=True)


def rfc3339(moment: dt.datetime) -> str:
    return moment.astimezone(dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def addresses(values: list[str]) -> list[dict]:
    return [{"Name": name, "Address": addr} for name, addr in getaddresses(values) if addr]


class Stored:
    """One received message, parsed once."""

    def __init__(self, raw: bytes, mail_from: str, rcpt_tos: list[str]):
        self.id = uuid.uuid4().hex[:22]
        self.raw = raw
        self.created = dt.datetime.now(dt.timezone.utc)
        self.read = False
        message: EmailMessage = email.message_from_bytes(raw, policy=email.policy.default)  # type: ignore[assignment]
        self.message = message
        senders = addresses([str(v) for v in message.get_all("From", [])])
        self.sender = senders[0] if senders else {"Name": "", "Address": mail_from}
        to = addresses([str(v) for v in message.get_all("To", [])])
        self.to = to or [{"Name": "", "Address": rcpt} for rcpt in rcpt_tos]
        self.cc = addresses([str(v) for v in message.get_all("Cc", [])])
        self.bcc = addresses([str(v) for v in message.get_all("Bcc", [])])
        self.reply_to = addresses([str(v) for v in message.get_all("Reply-To", [])])
        self.return_path = mail_from
        self.subject = str(message.get("Subject", ""))
        self.message_id = str(message.get("Message-ID", "")).strip().strip("<>")
        self.text = self._body("plain")
        self.html = self._body("html")
        self.attachments = [part for part in message.iter_attachments()] if message.is_multipart() else []
        self.date = self.created
        if message.get("Date"):
            try:
                self.date = message["Date"].datetime or self.created
            except (AttributeError, TypeError, ValueError):
                pass

    def _body(self, subtype: str) -> str:
        try:
            part = self.message.get_body(preferencelist=(subtype,))
        except (KeyError, LookupError):
            part = None
        if part is None:
            return ""
        try:
            content = part.get_content()
        except (KeyError, LookupError, UnicodeDecodeError):
            payload = part.get_payload(decode=True) or b""
            content = payload.decode("utf-8", "replace")
        return content.replace("\r\n", "\n")

    def snippet(self) -> str:
        source = self.text or re.sub(r"<[^>]+>", " ", self.html)
        return " ".join(source.split())[:250]

    def summary(self) -> dict:
        return {
            "ID": self.id,
            "MessageID": self.message_id,
            "Read": self.read,
            "From": self.sender,
            "To": self.to,
            "Cc": self.cc,
            "Bcc": self.bcc,
            "ReplyTo": self.reply_to,
            "Subject": self.subject,
            "Created": rfc3339(self.created),
            "Tags": [],
            "Size": len(self.raw),
            "Attachments": len(self.attachments),
            "Snippet": self.snippet(),
        }

    def detail(self) -> dict:
        body = self.summary()
        for key in ("Read", "Created", "Snippet", "Attachments"):
            body.pop(key)
        body.update(
            {
                "ReturnPath": self.return_path,
                "Date": rfc3339(self.date),
                "Text": self.text,
                "HTML": self.html,
                "Inline": [],
                "Attachments": [
                    {"PartID": str(i + 1), "FileName": p.get_filename() or "", "ContentType": p.get_content_type()}
                    for i, p in enumerate(self.attachments)
                ],
            }
        )
        return body

    def headers(self) -> dict:
        result: dict[str, list[str]] = {}
        for key, value in self.message.items():
            result.setdefault(key, []).append(str(value))
        return result

    def matches(self, terms: list[str]) -> bool:
        def people(entries: list[dict]) -> str:
            return " ".join(f"{e['Name']} <{e['Address']}>" for e in entries).lower()

        for term in terms:
            field, sep, value = term.partition(":")
            if sep and field.lower() in ("to", "from", "subject", "message-id"):
                value = value.lower()
                haystack = {
                    "to": people(self.to + self.cc + self.bcc),
                    "from": people([self.sender]),
                    "subject": self.subject.lower(),
                    "message-id": self.message_id.lower(),
                }[field.lower()]
            else:
                value = term.lower()
                haystack = " ".join(
                    [self.subject, people([self.sender]), people(self.to), self.text, self.html]
                ).lower()
            if value not in haystack:
                return False
        return True


class Store:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._messages: list[Stored] = []  # oldest first

    def add(self, stored: Stored) -> None:
        with self._lock:
            self._messages.append(stored)
            del self._messages[: max(0, len(self._messages) - MAX_MESSAGES)]

    def newest_first(self) -> list[Stored]:
        with self._lock:
            return list(reversed(self._messages))

    def get(self, message_id: str) -> Stored | None:
        with self._lock:
            if message_id == "latest":
                return self._messages[-1] if self._messages else None
            return next((m for m in self._messages if m.id == message_id), None)

    def delete(self, ids: list[str] | None) -> None:
        with self._lock:
            if ids is None:
                self._messages.clear()
            else:
                wanted = set(ids)
                self._messages = [m for m in self._messages if m.id not in wanted]


STORE = Store()


class SmtpHandler:
    """aiosmtpd handler: keep every message that arrives."""

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 (aiosmtpd's name)
        content = envelope.original_content or envelope.content
        if isinstance(content, str):
            content = content.encode("utf-8")
        stored = Stored(content, envelope.mail_from or "", list(envelope.rcpt_tos))
        STORE.add(stored)
        log(f"received {stored.id} from {stored.sender['Address']} to "
            f"{', '.join(t['Address'] for t in stored.to)}: {stored.subject!r}")
        return f"250 2.0.0 Ok: queued as {stored.id}"


class Api(BaseHTTPRequestHandler):
    server_version = "mailcatcher/1"
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args) -> None:  # noqa: A002 (http.server's name)
        pass

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Access-Control-Allow-Origin", "*")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, value, status: int = 200) -> None:
        self._send(status, json.dumps(value).encode("utf-8"), "application/json; charset=utf-8")

    def _text(self, text: str, status: int = 200) -> None:
        self._send(status, text.encode("utf-8"), "text/plain; charset=utf-8")

    def _listing(self, messages: list[Stored], query: dict) -> None:
        everything = STORE.newest_first()
        start = int((query.get("start") or ["0"])[0] or 0)
        limit = int((query.get("limit") or ["50"])[0] or 50)
        page = messages[start : start + limit]
        self._json(
            {
                "total": len(everything),
                "unread": sum(1 for m in everything if not m.read),
                "count": len(page),
                "messages_count": len(messages),
                "messages_unread": sum(1 for m in messages if not m.read),
                "start": start,
                "tags": [],
                "messages": [m.summary() for m in page],
            }
        )

    def do_HEAD(self) -> None:  # noqa: N802
        self.do_GET()

    def do_GET(self) -> None:  # noqa: N802
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        path = url.path.rstrip("/") or "/"
        try:
            if path in ("/livez", "/readyz"):
                return self._text("ok")
            if path == "/api/v1/info":
                messages = STORE.newest_first()
                return self._json(
                    {
                        "Version": "mailcatcher stand-in",
                        "Messages": len(messages),
                        "Unread": sum(1 for m in messages if not m.read),
                        "Tags": {},
                    }
                )
            if path == "/api/v1/messages":
                return self._listing(STORE.newest_first(), query)
            if path == "/api/v1/search":
                raw_query = (query.get("query") or [""])[0]
                try:
                    terms = shlex.split(raw_query)
                except ValueError:
                    terms = raw_query.split()
                return self._listing([m for m in STORE.newest_first() if m.matches(terms)], query)
            match = re.fullmatch(r"/api/v1/message/([^/]+)(/raw|/headers)?", path)
            if match:
                stored = STORE.get(match.group(1))
                if stored is None:
                    return self._text("message not found", 404)
                if match.group(2) == "/raw":
                    return self._send(200, stored.raw, "text/plain; charset=utf-8")
                if match.group(2) == "/headers":
                    return self._json(stored.headers())
                stored.read = True
                return self._json(stored.detail())
            return self._text("not found", 404)
        except (BrokenPipeError, ConnectionResetError):
            return None
        except ValueError as error:
            return self._text(str(error), 400)

    def do_DELETE(self) -> None:  # noqa: N802
        path = urlsplit(self.path).path.rstrip("/")
        if path != "/api/v1/messages":
            return self._text("not found", 404)
        length = int(self.headers.get("Content-Length") or 0)
        ids = None
        if length:
            try:
                body = json.loads(self.rfile.read(length) or b"{}")
            except json.JSONDecodeError:
                return self._text("invalid JSON body", 400)
            if isinstance(body, dict) and body.get("IDs"):
                ids = [str(i) for i in body["IDs"]]
        STORE.delete(ids)
        return self._text("ok")


def readyz() -> int:
    host, port = split_addr(UI_BIND)
    if host in ("0.0.0.0", "", "[::]", "::"):
        host = "127.0.0.1"
    try:
        with urllib.request.urlopen(f"http://{host}:{port}/readyz", timeout=3) as response:
            return 0 if response.status == 200 else 1
    except (urllib.error.URLError, OSError):
        return 1


def serve() -> int:
    from aiosmtpd.controller import Controller

    smtp_host, smtp_port = split_addr(SMTP_BIND)
    controller = Controller(
        SmtpHandler(),
        hostname=smtp_host,
        port=smtp_port,
        decode_data=False,
        enable_SMTPUTF8=True,
        data_size_limit=32 * 1024 * 1024,
        server_hostname="mailcatcher",
        ident="mailcatcher (Mailpit stand-in)",
    )
    controller.start()
    log(f"SMTP listening on {smtp_host}:{smtp_port}")

    ui_host, ui_port = split_addr(UI_BIND)
    httpd = ThreadingHTTPServer((ui_host, ui_port), Api)
    httpd.daemon_threads = True
    log(f"HTTP API listening on {ui_host}:{ui_port}")

    def stop(signum, _frame):
        log(f"signal {signum}: stopping")
        threading.Thread(target=httpd.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        httpd.serve_forever(poll_interval=0.5)
    finally:
        httpd.server_close()
        controller.stop()
    return 0


def main(argv: list[str]) -> int:
    command = argv[1] if len(argv) > 1 else "serve"
    if command in ("readyz", "livez"):
        return readyz()
    if command == "serve":
        return serve()
    print(f"usage: {argv[0]} [serve|readyz]", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
