-- The trigram index behind `q=` gets new entries on every update of a conversation row: its
-- `search` column holds the last message's preview, which every message changes. GIN's fast
-- update queues those entries in a pending list, and the insert that overflows the list merges
-- it into the index. At the default limit of 4 MB that merge stalled a projector batch for
-- 100 ms and more (projection lag p99 100 to 119 ms against 37 to 46 ms without the index, at
-- 1,500 commands/s). A 256 kB list keeps each merge short (p99 51 to 54 ms); turning fast update
-- off made every update slower (lag p50 85 ms against 18 ms).
ALTER INDEX conversation_list_search SET (gin_pending_list_limit = 256);
