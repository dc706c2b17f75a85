-- Beyond one host (supervisor/registry/leases.py): shards held by leases, one row each.
-- The shard count is fixed per cluster: the first master stores it, later ones must
-- match (`botvisor shards migrate --to N` changes it while no host runs).
CREATE TABLE cluster (
    id         boolean PRIMARY KEY DEFAULT true CHECK (id),  -- one row
    shards     integer NOT NULL CHECK (shards > 0),
    created_at timestamptz NOT NULL DEFAULT now()
);

-- Changed only in transactions (row locks, SKIP LOCKED). `epoch` grows on every change of
-- holder and is the fencing token Redis compares progress writes with (ipc/fencing.py).
CREATE TABLE shard_leases (
    shard       integer PRIMARY KEY CHECK (shard >= 0),
    host        text,                                   -- NULL: free
    epoch       bigint NOT NULL DEFAULT 0,
    expires_at  timestamptz NOT NULL DEFAULT '-infinity',
    acquired_at timestamptz
);
CREATE INDEX shard_leases_host ON shard_leases (host);

-- Every host's presence and health, renewed with its leases: the balance counts the
-- hosts seen within one lease TTL; `botvisor status` and /v1/status read the rest.
CREATE TABLE lease_hosts (
    host       text PRIMARY KEY,
    http       text NOT NULL,
    pid        integer NOT NULL,
    seen_at    timestamptz NOT NULL DEFAULT now(),
    leaving    boolean NOT NULL DEFAULT false,
    ready      boolean NOT NULL DEFAULT false,
    reason     text NOT NULL DEFAULT '',
    bots       jsonb NOT NULL DEFAULT '{}'::jsonb
);
