-- vigil schema, version 2: tamper evidence. Each tenant's log is an RFC 6962 Merkle tree whose
-- leaf i is the event with seq i + 1 (leaf hash = SHA-256(0x00 ‖ canonical)). Applied like
-- version 1 (see src/schema.rs); the trees of events written before it are built by the store
-- when it opens (src/merkle.rs), not here: SQL has no cheap way to fold a tree.

-- The tree as stored hashes, in the layout of Go's sumdb/tlog: index
-- stored_hash_index(level, n) holds the root of the 2^level leaves from leaf n << level.
-- Appending leaf n writes its leaf hash and the roots it completes at consecutive indexes from
-- stored_hash_index(0, n): a tree of `size` leaves has stored_hash_count(size) rows, about
-- 2 × size, and never changes a row once written. Not partitioned and not touched by
-- retention: proofs for the events that remain need the hashes of those that went.
CREATE TABLE vigil_tree_hashes (
    tenant text COLLATE "C" NOT NULL,
    idx    bigint           NOT NULL,
    hash   bytea            NOT NULL,
    PRIMARY KEY (tenant, idx)
);

-- The right edge of the tenant's tree (vigil_integrity::tree::Frontier::to_bytes: tree size as
-- 8 bytes big-endian, then the root of each maximal complete subtree), moved under the head
-- row's lock with seq and hash. Every existing head starts at the empty tree (size 0); the
-- store extends a frontier that lags its head's seq from the events before it writes.
ALTER TABLE vigil_tenants
    ADD COLUMN frontier bytea NOT NULL DEFAULT '\x0000000000000000'::bytea;

-- Signed checkpoints (C2SP tlog-checkpoint notes), at most one per tree size: the first one
-- saved is kept. `time_ns` is the signing time in nanoseconds since the Unix epoch, as event
-- times are kept.
CREATE TABLE vigil_checkpoints (
    tenant  text COLLATE "C" NOT NULL,
    size    bigint           NOT NULL,
    root    bytea            NOT NULL,
    time_ns bigint           NOT NULL,
    note    text             NOT NULL,
    PRIMARY KEY (tenant, size)
);
