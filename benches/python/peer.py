"""The Python peer that `load --python-peer` measures Colloquy against: the same command endpoints
as the direct cqrs-es peer (`benches/src/bin/peer.rs`), written the most direct way with the
mature library of that ecosystem, `eventsourcing` (its `Application`, `Aggregate` and `@event`,
on its PostgreSQL persistence module). Every command loads the aggregate from its whole stream
(the library's default: no snapshots, no cache) and saves it; a conflict is a 409 (no retries).
It keeps no read model: the library's way to one is a follower process reading the
notification log, which Colloquy's relay and projectors correspond to, so this peer does less
per command than either Colloquy or the cqrs-es peer.

Served by the standard library's threading HTTP server (HTTP/1.1 keep-alive), in one process
per core forked after the tables are made, as a pre-forking server (gunicorn) would run it: one
Python process holds the GIL and uses one core at most.

Configured like `colloquy serve`: `COLLOQUY_LISTEN`, `COLLOQUY_DATABASE_URL`,
`COLLOQUY_BOOTSTRAP_TOKEN`, `COLLOQUY_DB_MAX_CONNECTIONS` (connections per process). Needs
`eventsourcing[postgres]` (scripts/bench installs it in `target/python-peer`).
"""

import ctypes
import json
import os
import signal
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlparse
from uuid import UUID, uuid4

from eventsourcing.application import AggregateNotFoundError, Application
from eventsourcing.domain import Aggregate, event
from eventsourcing.persistence import IntegrityError


class Refused(Exception):
    """A command the aggregate refuses (a 422)."""


class Contact(Aggregate):
    @event("ContactCreated")
    def __init__(self, first_name: str, phone: str):
        self.first_name = first_name
        self.phone = phone


class Conversation(Aggregate):
    @event("ConversationOpened")
    def __init__(self, contact_id: str, channel: str, inbox_id: str | None):
        self.contact_id = contact_id
        self.channel = channel
        self.inbox_id = inbox_id
        self.status = "open"
        self.assignee_id = None
        self.labels = set()
        self.last_message = None

    def add_message(self, message_id: str, sender: dict, text: str):
        if not text.strip():
            raise Refused("text must not be empty")
        self._message_added(message_id, sender, text)

    @event("MessageAdded")
    def _message_added(self, message_id: str, sender: dict, text: str):
        self.last_message = text

    def assign(self, assignee_id: str):
        # Assigning the current assignee again changes nothing, as in Colloquy.
        if self.assignee_id != assignee_id:
            self._assigned(assignee_id)

    @event("ConversationAssigned")
    def _assigned(self, assignee_id: str):
        self.assignee_id = assignee_id

    def change_status(self, status: str):
        if status not in ("open", "pending", "closed"):
            raise Refused(f"unknown status {status!r}")
        if status == self.status:
            raise Refused("the conversation already has this status")
        self._status_changed(self.status, status)

    @event("StatusChanged")
    def _status_changed(self, previous: str, status: str):
        self.status = status

    def add_labels(self, labels: list):
        for label in sorted(set(labels) - self.labels):
            self._label_added(label)

    @event("LabelAdded")
    def _label_added(self, label: str):
        self.labels.add(label)


class Inbox(Application):
    def create_contact(self, first_name: str, phone: str) -> UUID:
        contact = Contact(first_name, phone)
        self.save(contact)
        return contact.id

    def open_conversation(self, contact_id: str, channel: str, inbox_id: str | None) -> UUID:
        conversation = Conversation(contact_id, channel, inbox_id)
        self.save(conversation)
        return conversation.id

    def command(self, conversation_id: UUID, act) -> None:
        conversation = self.repository.get(conversation_id)
        if not isinstance(conversation, Conversation):
            raise AggregateNotFoundError(conversation_id)
        act(conversation)
        self.save(conversation)

    def view(self, conversation_id: UUID) -> dict:
        c = self.repository.get(conversation_id)
        return {
            "contact_id": c.contact_id,
            "channel": c.channel,
            "status": c.status,
            "assignee_id": c.assignee_id,
            "labels": sorted(c.labels),
            "last_message": c.last_message,
        }


def persistence_env() -> dict:
    """The library's PostgreSQL settings from `COLLOQUY_DATABASE_URL`."""
    url = urlparse(os.environ["COLLOQUY_DATABASE_URL"])
    size = os.environ.get("COLLOQUY_DB_MAX_CONNECTIONS", "32")
    return {
        "PERSISTENCE_MODULE": "eventsourcing.postgres",
        "POSTGRES_DBNAME": url.path.lstrip("/"),
        "POSTGRES_HOST": url.hostname or "127.0.0.1",
        "POSTGRES_PORT": str(url.port or 5432),
        "POSTGRES_USER": unquote(url.username or "postgres"),
        "POSTGRES_PASSWORD": unquote(url.password or ""),
        "POSTGRES_POOL_SIZE": size,
        "POSTGRES_MAX_OVERFLOW": "0",
    }


INBOX: Inbox | None = None
TOKEN = os.environ.get("COLLOQUY_BOOTSTRAP_TOKEN", "")


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # The headers and the body go out in two writes: without TCP_NODELAY the second waits for
    # the client's delayed ACK of the first (40 ms a request).
    disable_nagle_algorithm = True

    def log_message(self, *args):
        pass

    def answer(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        parts = self.path.strip("/").split("/")
        if parts == ["healthz"]:
            return self.answer(200, {"status": "ok"})
        if parts == ["stats"]:
            return self.answer(200, {"view_errors": 0})
        if not self.authorized():
            return self.answer(401, {"detail": "unauthorized"})
        if len(parts) == 3 and parts[:2] == ["v1", "conversations"]:
            try:
                return self.answer(200, INBOX.view(UUID(parts[2])))
            except (ValueError, AggregateNotFoundError):
                return self.answer(404, {"detail": "not found"})
        return self.answer(404, {"detail": "no such route"})

    def do_POST(self):
        length = int(self.headers.get("content-length") or 0)
        try:
            body = json.loads(self.rfile.read(length) or b"{}")
        except ValueError:
            return self.answer(400, {"detail": "malformed JSON"})
        if not self.authorized():
            return self.answer(401, {"detail": "unauthorized"})
        parts = self.path.strip("/").split("/")
        try:
            if parts == ["v1", "contacts"]:
                contact = INBOX.create_contact(body["first_name"], body.get("phone", ""))
                return self.answer(201, {"id": str(contact)})
            if parts == ["v1", "conversations"]:
                opened = INBOX.open_conversation(body["contact_id"], body["channel"], body.get("inbox_id"))
                return self.answer(201, {"id": str(opened)})
            if len(parts) == 4 and parts[:2] == ["v1", "conversations"]:
                conversation, action = UUID(parts[2]), parts[3]
                if action == "messages":
                    message_id = str(uuid4())
                    INBOX.command(conversation, lambda c: c.add_message(message_id, body["sender"], body["text"]))
                    return self.answer(201, {"id": message_id})
                acts = {
                    "assignment": lambda c: c.assign(body["assignee_id"]),
                    "status": lambda c: c.change_status(body["status"]),
                    "labels": lambda c: c.add_labels(body["add"]),
                }
                if action in acts:
                    INBOX.command(conversation, acts[action])
                    return self.answer(200, {"id": parts[2]})
            return self.answer(404, {"detail": "no such route"})
        except (KeyError, TypeError, ValueError) as error:
            return self.answer(422, {"detail": f"bad request: {error}"})
        except AggregateNotFoundError:
            return self.answer(404, {"detail": "not found"})
        except Refused as error:
            return self.answer(422, {"detail": str(error)})
        except IntegrityError:
            return self.answer(409, {"detail": "the conversation changed meanwhile"})

    def authorized(self) -> bool:
        return self.headers.get("authorization", "") == f"Bearer {TOKEN}"


def serve(server: ThreadingHTTPServer) -> None:
    global INBOX
    INBOX = Inbox(env={**persistence_env(), "CREATE_TABLE": "n"})
    server.serve_forever()


def main() -> None:
    host, port = os.environ.get("COLLOQUY_LISTEN", "127.0.0.1:8082").rsplit(":", 1)
    # The tables, once, before the workers start.
    Inbox(env={**persistence_env(), "CREATE_TABLE": "y"}).close()
    server = ThreadingHTTPServer((host, int(port)), Handler)
    server.daemon_threads = True
    workers = []
    for _ in range(int(os.environ.get("PEER_WORKERS", os.cpu_count() or 1))):
        pid = os.fork()
        if pid == 0:
            # A worker ends with its parent (which the harness kills), not after it.
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
            serve(server)
            os._exit(0)
        workers.append(pid)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        os.wait()
    finally:
        for pid in workers:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


if __name__ == "__main__":
    main()
