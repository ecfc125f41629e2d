-- Checkpoints of the relay and of every projection: the last global position each has handled.
CREATE TABLE checkpoints
(
    name       text PRIMARY KEY,
    position   integer NOT NULL,
    updated_at text    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
) STRICT;
