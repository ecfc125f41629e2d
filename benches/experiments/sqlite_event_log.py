#!/usr/bin/env python3
"""What `event_log`'s unique key costs the SQLite store (BENCHMARKS.md, "Round trips per command").

Builds two scratch stores shaped like infra/migrations/sqlite (the events' table and its key,
the AUTOINCREMENT log filled by a trigger, the tenant index): `unique`, the log as it is, which
repeats the events' (aggregate_type, aggregate_id, sequence) in a unique key, and `rowid`, a log
that keeps the events' rowid instead. Each gets 200,000 events over 2,000 conversations, then
2,000 commits of 4 events (synchronous=FULL, WAL, no checkpoints) are timed and their WAL frames
counted; then the whole log is read in pages of 10,000, joined to the events as each log would be.

    python3 benches/experiments/sqlite_event_log.py [directory]
"""
import json
import os
import random
import sqlite3
import sys
import time
import uuid

DIRECTORY = sys.argv[1] if len(sys.argv) > 1 else "/tmp"
CONVERSATIONS = 2000
COMMITS = 2000


def build(variant):
    path = os.path.join(DIRECTORY, f"event_log_{variant}.db")
    for name in (path, path + "-wal", path + "-shm"):
        if os.path.exists(name):
            os.remove(name)
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute(
        """CREATE TABLE events (aggregate_type text NOT NULL, aggregate_id text NOT NULL,
           sequence integer NOT NULL, event_type text NOT NULL, event_version text NOT NULL,
           payload text NOT NULL, metadata text NOT NULL,
           tenant_id text GENERATED ALWAYS AS (json_extract(metadata, '$.tenant_id')) VIRTUAL,
           PRIMARY KEY (aggregate_type, aggregate_id, sequence)) STRICT"""
    )
    if variant == "unique":
        db.execute(
            """CREATE TABLE event_log (position integer PRIMARY KEY AUTOINCREMENT,
               aggregate_type text NOT NULL, aggregate_id text NOT NULL, sequence integer NOT NULL,
               tenant_id text NOT NULL,
               recorded_at text NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
               UNIQUE (aggregate_type, aggregate_id, sequence)) STRICT"""
        )
        db.execute(
            """CREATE TRIGGER events_to_log AFTER INSERT ON events BEGIN
               INSERT INTO event_log (aggregate_type, aggregate_id, sequence, tenant_id)
               VALUES (NEW.aggregate_type, NEW.aggregate_id, NEW.sequence,
                       json_extract(NEW.metadata, '$.tenant_id')); END"""
        )
    else:
        db.execute(
            """CREATE TABLE event_log (position integer PRIMARY KEY AUTOINCREMENT,
               event_rowid integer NOT NULL, tenant_id text NOT NULL,
               recorded_at text NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))) STRICT"""
        )
        db.execute(
            """CREATE TRIGGER events_to_log AFTER INSERT ON events BEGIN
               INSERT INTO event_log (event_rowid, tenant_id)
               VALUES (NEW.rowid, json_extract(NEW.metadata, '$.tenant_id')); END"""
        )
    db.execute("CREATE INDEX event_log_tenant_position ON event_log (tenant_id, position)")
    return db, path


def main():
    random.seed(1)
    conversations = [str(uuid.uuid4()) for _ in range(CONVERSATIONS)]
    payload = json.dumps(
        {"MessageAdded": {"message_id": str(uuid.uuid4()), "text": "Where is my order? " * 5,
                          "sender": {"kind": "customer"}}}
    )

    def metadata():
        return json.dumps(
            {"event_id": str(uuid.uuid4()), "tenant_id": "default", "actor_kind": "user",
             "actor_id": "agent-1", "correlation_id": str(uuid.uuid4()),
             "recorded_at": "2026-12-01T00:00:00Z"}
        )

    for variant in ("unique", "rowid", "unique", "rowid"):
        db, path = build(variant)
        sequences = dict.fromkeys(conversations, 0)

        def batch(n):
            rows = []
            for conversation in random.sample(conversations, n):
                sequences[conversation] += 1
                rows.append(("conversation", conversation, sequences[conversation], "MessageAdded",
                             "1.0", payload, metadata()))
            return rows

        def commit(rows):
            db.execute("BEGIN")
            db.executemany("INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
            db.execute("COMMIT")

        db.execute("PRAGMA synchronous=OFF")
        for _ in range(200):
            commit(batch(1000))
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        db.execute("PRAGMA synchronous=FULL")
        db.execute("PRAGMA wal_autocheckpoint=0")
        started = time.time()
        for _ in range(COMMITS):
            commit(batch(4))
        elapsed = time.time() - started
        frames = os.path.getsize(path + "-wal") / (4096 + 24)
        if variant == "unique":
            page = """SELECT l.position, e.payload, e.metadata FROM event_log l
                      JOIN events e ON e.aggregate_type = l.aggregate_type
                       AND e.aggregate_id = l.aggregate_id AND e.sequence = l.sequence
                      WHERE l.position > ? ORDER BY l.position LIMIT 10000"""
        else:
            page = """SELECT l.position, e.payload, e.metadata FROM event_log l
                      JOIN events e ON e.rowid = l.event_rowid
                      WHERE l.position > ? ORDER BY l.position LIMIT 10000"""
        started = time.time()
        read, after = 0, 0
        while rows := db.execute(page, (after,)).fetchall():
            read += len(rows)
            after = rows[-1][0]
        read_elapsed = time.time() - started
        print(f"{variant}: {COMMITS / elapsed:.0f} commits/s, {frames / COMMITS:.1f} WAL frames a commit"
              f" of 4 events; log read {read / read_elapsed:.0f} events/s ({read} events)")
        db.close()
        for name in (path, path + "-wal", path + "-shm"):
            if os.path.exists(name):
                os.remove(name)


if __name__ == "__main__":
    main()
