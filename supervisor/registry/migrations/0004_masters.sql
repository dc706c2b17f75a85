-- The master holding each host id's advisory lock (supervisor/registry/master_lock.py):
-- written by the lock holder, read by a second `botvisor run` to say who runs.
CREATE TABLE masters (
    host       text PRIMARY KEY,                   -- host id (the machine's host name)
    pid        integer NOT NULL,
    http       text NOT NULL,                      -- host:port of its HTTP endpoints
    started_at timestamptz NOT NULL DEFAULT now()
);
