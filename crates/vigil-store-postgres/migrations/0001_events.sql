-- vigil schema, version 1. Applied once, inside one transaction, by the first vigil node that
-- connects (see src/schema.rs). Text columns that are compared or ordered use the "C"
-- collation: byte order, independent of the database's locale, as the query language defines.

-- Every event, partitioned by event time: one partition per UTC day, created ahead of time,
-- and a default partition for days without one (back-filled history, far-future clocks). `canonical` holds the exact RFC 8785 bytes that were hashed; `fields` is the same
-- event flattened to {"path": [scalar, ...]}, the form the query language is defined on (keys
-- joined with '.', array elements sharing their array's path), indexed by GIN.
CREATE TABLE vigil_events (
    tenant      text COLLATE "C" NOT NULL,
    seq         bigint           NOT NULL,
    time_ns     bigint           NOT NULL,
    received_ns bigint           NOT NULL,
    id          text COLLATE "C" NOT NULL,
    type        text COLLATE "C" NOT NULL,
    severity    smallint         NOT NULL,
    -- actor.id as sent in the actor object; actor_multi marks the rare event where another
    -- value flattens to the path actor.id too (a top-level key "actor.id"), which queries then
    -- find through `fields`.
    actor       text COLLATE "C",
    actor_multi boolean          NOT NULL,
    hash        bytea            NOT NULL,
    canonical   bytea            NOT NULL,
    fields      jsonb            NOT NULL
) PARTITION BY RANGE (time_ns);

CREATE TABLE vigil_events_default PARTITION OF vigil_events DEFAULT;

CREATE INDEX vigil_events_tenant_time ON vigil_events (tenant, time_ns, seq);
CREATE INDEX vigil_events_tenant_type_time ON vigil_events (tenant, type, time_ns, seq);
CREATE INDEX vigil_events_tenant_actor_time ON vigil_events (tenant, actor, time_ns, seq);
CREATE INDEX vigil_events_tenant_seq ON vigil_events (tenant, seq);
-- The rare events whose actor.id is not (only) in `actor`: keeps the `actor_multi` branch of an
-- actor.id query an index probe of (almost) nothing instead of a GIN lookup.
CREATE INDEX vigil_events_actor_multi ON vigil_events (tenant) WHERE actor_multi;
CREATE INDEX vigil_events_fields ON vigil_events USING gin (fields jsonb_path_ops);

-- Ids are unique per tenant across all partitions (a partitioned table's unique keys must
-- include the partition key, so the id lives here too): idempotent appends and get by id.
CREATE TABLE vigil_event_ids (
    tenant  text COLLATE "C" NOT NULL,
    id      text COLLATE "C" NOT NULL,
    seq     bigint           NOT NULL,
    time_ns bigint           NOT NULL,
    -- SHA-256 of the content as sent: the same id with the same digest is a duplicate.
    digest  bytea            NOT NULL,
    PRIMARY KEY (tenant, id)
);
CREATE INDEX vigil_event_ids_time ON vigil_event_ids (time_ns);

-- The head of each tenant's log. Appends lock the row (SELECT ... FOR UPDATE) for the length
-- of their transaction: that lock is what keeps seq gap-free and the chain linear when several
-- vigil nodes write to one database.
CREATE TABLE vigil_tenants (
    tenant text COLLATE "C" PRIMARY KEY,
    seq    bigint NOT NULL,
    hash   bytea  NOT NULL
);

-- Small named documents: credentials ("auth"), schemas ("schemas"). `version` grows by one on
-- every change; writers compare-and-swap on it.
CREATE TABLE vigil_meta (
    name       text COLLATE "C" PRIMARY KEY,
    version    bigint      NOT NULL,
    doc        bytea       NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
