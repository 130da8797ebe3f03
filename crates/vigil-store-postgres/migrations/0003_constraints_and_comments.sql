-- vigil schema, version 3: the database itself refuses two events at one position of a tenant's
-- log, and every table and column says what it holds (`\d+ vigil_events` in psql shows it).
-- Applied like the earlier versions (see src/schema.rs). Adding the constraint builds a unique
-- index over vigil_event_ids inside the migration's transaction: on a large database that takes
-- a while, during which appends wait.

-- Gap-free seq is kept by the writers (under the head row's lock); this makes a second event at
-- the same seq impossible whatever writes to the database. It lives on vigil_event_ids, which
-- has one row per event and is not partitioned: a unique key of the partitioned vigil_events
-- would have to include its partition key (time_ns).
ALTER TABLE vigil_event_ids
    ADD CONSTRAINT vigil_event_ids_tenant_seq UNIQUE (tenant, seq);

COMMENT ON TABLE vigil_events IS
    'Every event, partitioned by event time (one partition per UTC day, plus a default one). Rows are never updated; retention drops whole partitions.';
COMMENT ON COLUMN vigil_events.tenant IS 'The tenant whose log holds the event (from the credential that sent it).';
COMMENT ON COLUMN vigil_events.seq IS 'Position in the tenant''s log: 1, 2, 3 … without gaps, assigned at append.';
COMMENT ON COLUMN vigil_events.time_ns IS 'Event time (its "time", or the receipt time when absent) in nanoseconds since the Unix epoch, UTC. The partition key.';
COMMENT ON COLUMN vigil_events.received_ns IS 'When vigil received the event, in nanoseconds since the Unix epoch, UTC.';
COMMENT ON COLUMN vigil_events.id IS 'The event id: the client''s, or a UUIDv7 vigil assigned. Unique per tenant (vigil_event_ids).';
COMMENT ON COLUMN vigil_events.type IS 'The event type (account.created, login.failed …).';
COMMENT ON COLUMN vigil_events.severity IS 'Severity (criticality), 0 to 10.';
COMMENT ON COLUMN vigil_events.actor IS 'actor.id as sent in the actor object; NULL when the event names no actor.';
COMMENT ON COLUMN vigil_events.actor_multi IS 'True for the rare event where another value also flattens to the path actor.id (a top-level key "actor.id"): queries on actor.id then also look in fields. Indexed by vigil_events_actor_multi, a partial index over these rows only.';
COMMENT ON COLUMN vigil_events.hash IS 'Chain hash of the tenant''s log up to and including this event (SHA-256, 32 bytes).';
COMMENT ON COLUMN vigil_events.canonical IS 'The event as hashed: RFC 8785 canonical JSON bytes, everything but "hash". The source of truth of every read.';
COMMENT ON COLUMN vigil_events.fields IS 'The event flattened to {"path": [scalar, …]}, the form the query language is defined on; GIN-indexed (jsonb_path_ops).';

COMMENT ON TABLE vigil_event_ids IS
    'One row per event: ids and seqs unique per tenant across all partitions, for idempotent appends and reads by id.';
COMMENT ON COLUMN vigil_event_ids.tenant IS 'The tenant whose log holds the event.';
COMMENT ON COLUMN vigil_event_ids.id IS 'The event id.';
COMMENT ON COLUMN vigil_event_ids.seq IS 'The event''s position in the tenant''s log; unique per tenant (vigil_event_ids_tenant_seq).';
COMMENT ON COLUMN vigil_event_ids.time_ns IS 'Event time in nanoseconds since the Unix epoch, UTC: which partition of vigil_events holds the row.';
COMMENT ON COLUMN vigil_event_ids.digest IS 'SHA-256 of the content as sent: the same id with the same digest is a duplicate, with another digest a conflict.';

COMMENT ON TABLE vigil_tenants IS
    'The head of each tenant''s log. Appends lock the row for their transaction, which keeps seq gap-free and the chain linear across nodes.';
COMMENT ON COLUMN vigil_tenants.tenant IS 'The tenant.';
COMMENT ON COLUMN vigil_tenants.seq IS 'The seq of the tenant''s newest event.';
COMMENT ON COLUMN vigil_tenants.hash IS 'The chain hash after the newest event.';
COMMENT ON COLUMN vigil_tenants.frontier IS 'The right edge of the tenant''s Merkle tree: the tree size as 8 bytes big-endian, then the root of each maximal complete subtree.';

COMMENT ON TABLE vigil_meta IS
    'Small named documents shared by every node: credentials ("auth": key and password hashes, the JWT public key; no secret), schemas ("schemas"), the pinned checkpoint key.';
COMMENT ON COLUMN vigil_meta.name IS 'The document''s name.';
COMMENT ON COLUMN vigil_meta.version IS 'Grows by one on every change; writers compare-and-swap on it.';
COMMENT ON COLUMN vigil_meta.doc IS 'The document (JSON bytes).';
COMMENT ON COLUMN vigil_meta.updated_at IS 'When the document last changed.';

COMMENT ON TABLE vigil_tree_hashes IS
    'Each tenant''s Merkle tree as stored hashes, in the layout of Go''s sumdb/tlog. Never updated; not touched by retention (proofs of remaining events need them).';
COMMENT ON COLUMN vigil_tree_hashes.tenant IS 'The tenant whose tree this is.';
COMMENT ON COLUMN vigil_tree_hashes.idx IS 'stored_hash_index(level, n): the root of the 2^level leaves from leaf n << level.';
COMMENT ON COLUMN vigil_tree_hashes.hash IS 'The hash (SHA-256, 32 bytes; leaves are SHA-256(0x00 ‖ canonical)).';

COMMENT ON TABLE vigil_checkpoints IS
    'Signed checkpoints (C2SP tlog-checkpoint notes) of each tenant''s tree; the first one saved per size is kept.';
COMMENT ON COLUMN vigil_checkpoints.tenant IS 'The tenant whose tree was signed.';
COMMENT ON COLUMN vigil_checkpoints.size IS 'The tree size (number of events) the checkpoint covers.';
COMMENT ON COLUMN vigil_checkpoints.root IS 'The Merkle root at that size.';
COMMENT ON COLUMN vigil_checkpoints.time_ns IS 'When it was signed, in nanoseconds since the Unix epoch, UTC.';
COMMENT ON COLUMN vigil_checkpoints.note IS 'The signed note, as served by GET /v1/checkpoint.';

COMMENT ON TABLE vigil_migrations IS 'The schema versions applied to this database (vigil''s migrations/NNNN_*.sql), each once.';
COMMENT ON COLUMN vigil_migrations.version IS 'The schema version.';
COMMENT ON COLUMN vigil_migrations.applied_at IS 'When it was applied.';
