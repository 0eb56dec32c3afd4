"""A local provider sandbox for development and the main job (a MailHog for every channel): one
HTTP server that speaks Twilio's Messages API and takes push webhooks, and one SMTP server
(aiosmtpd). Every message it receives is appended to a JSON-lines file, so `make run` shows what
customers would have received without reaching Twilio, a mail relay or a push service.

    python -m notifier.sandbox --http-port 8025 --smtp-port 1025 --out .stack/sandbox/messages.jsonl

Point a notifier at it with `sandbox_env()` (Twilio base URL and SMTP port overrides) and give
simulated recipients push endpoints under `push_base()`. The tests use their own recording
servers (tests/integration/providers.py), which can also fail on purpose.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
import uuid
from email import message_from_bytes
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

HTTP_PORT = 8025
SMTP_PORT = 1025


def sandbox_env(http_port: int = HTTP_PORT, smtp_port: int = SMTP_PORT) -> dict[str, str]:
    """Settings overrides that send a notifier's SMS and email to the sandbox."""
    return {"PARCEL_NOTIFIER__TWILIO__BASE_URL": f"http://127.0.0.1:{http_port}",
            "PARCEL_NOTIFIER__SMTP__HOST": "127.0.0.1", "PARCEL_NOTIFIER__SMTP__PORT": str(smtp_port)}


def push_base(http_port: int = HTTP_PORT) -> str:
    return f"http://127.0.0.1:{http_port}/push"


def is_twilio_messages(path: str) -> bool:
    p = urlsplit(path).path
    return p.startswith("/2010-04-01/Accounts/") and p.endswith("/Messages.json")


class TwilioMessages:
    """Twilio's Messages resource as the sandbox and the tests' provider keep it: create (POST) and
    list (GET: newest first, filtered by To and From; one page), the shapes the `twilio` client
    reads. The notifier lists before re-sending an SMS that may already have gone out."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._messages: list[dict[str, Any]] = []

    def create(self, path: str, form: dict[str, str]) -> dict[str, Any]:
        account = urlsplit(path).path.split("/")[3]
        sid = "SM" + uuid.uuid4().hex
        now = time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime())
        msg = {"sid": sid, "account_sid": account, "to": form.get("To"), "from": form.get("From"),
               "body": form.get("Body"), "status": "queued", "num_segments": "1", "direction": "outbound-api",
               "api_version": "2010-04-01", "date_created": now, "date_updated": now, "date_sent": None,
               "price": None, "error_code": None, "uri": f"/2010-04-01/Accounts/{account}/Messages/{sid}.json"}
        with self._lock:
            self._messages.append(msg)
        return msg

    def page(self, path: str) -> dict[str, Any]:
        parts = urlsplit(path)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        size = int(query.get("PageSize", 50))
        with self._lock:
            found = [m for m in reversed(self._messages)
                     if all(m[field] == query[key] for key, field in (("To", "to"), ("From", "from")) if key in query)]
        return {"messages": found[:size], "page": 0, "page_size": size, "start": 0, "end": min(size, len(found)),
                "uri": path, "first_page_uri": path, "next_page_uri": None, "previous_page_uri": None}


class Outbox:
    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

    def write(self, channel: str, to: str, body: str, subject: str | None = None) -> None:
        line = json.dumps({"at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "channel": channel, "to": to,
                           "subject": subject, "body": body}, ensure_ascii=False)
        with self._lock, self.path.open("a", encoding="utf-8") as f:
            f.write(line + "\n")


def serve(http_port: int, smtp_port: int, out: Path) -> None:
    from aiosmtpd.controller import Controller

    outbox = Outbox(out)
    twilio = TwilioMessages()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            if is_twilio_messages(self.path):
                self._answer(200, twilio.page(self.path))
            else:
                self._answer(404, {"error": f"no such endpoint {self.path}"})

        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if is_twilio_messages(self.path):
                form = {k: v[0] for k, v in parse_qs(raw.decode()).items()}
                outbox.write("sms", form.get("To", ""), form.get("Body", ""))
                self._answer(201, twilio.create(self.path, form))
            elif self.path.startswith("/push/"):
                try:
                    payload = json.loads(raw or b"{}")
                except ValueError:
                    self._answer(400, {"error": "body is not JSON"})
                    return
                outbox.write("push", self.path, payload.get("body", ""), payload.get("title"))
                self._answer(201, {"id": uuid.uuid4().hex})
            else:
                self._answer(404, {"error": f"no such endpoint {self.path}"})

        def _answer(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    class SmtpHandler:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
            msg = message_from_bytes(envelope.content)
            payload = msg.get_payload(decode=True)
            text = payload.decode(errors="replace") if isinstance(payload, bytes) else str(msg.get_payload())
            for rcpt in envelope.rcpt_tos:
                outbox.write("email", rcpt, text.strip(), msg["Subject"])
            return "250 OK"

    smtp = Controller(SmtpHandler(), hostname="127.0.0.1", port=smtp_port)
    smtp.start()
    http = ThreadingHTTPServer(("127.0.0.1", http_port), Handler)
    print(f"provider sandbox: Twilio API and push on http://127.0.0.1:{http_port}, SMTP on 127.0.0.1:{smtp_port}, "
          f"messages to {out}", flush=True)
    try:
        http.serve_forever()
    finally:
        smtp.stop()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--http-port", type=int, default=HTTP_PORT)
    ap.add_argument("--smtp-port", type=int, default=SMTP_PORT)
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args(argv)
    serve(a.http_port, a.smtp_port, a.out)


if __name__ == "__main__":
    main()
