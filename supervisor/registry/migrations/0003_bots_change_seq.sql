-- Reconcile by change (issue 8, part 5): every insert/update of `bots` takes the next
-- value of one sequence into `change_seq` (indexed), every delete leaves a tombstone in
-- `bots_removed` with its own next value, so a worker reads only what changed since its
-- cursor. A sequence, not a timestamp: values are unique and never go backwards.
CREATE SEQUENCE bots_change_seq AS bigint;

ALTER TABLE bots ADD COLUMN change_seq bigint;
UPDATE bots SET change_seq = nextval('bots_change_seq');
ALTER TABLE bots ALTER COLUMN change_seq SET DEFAULT nextval('bots_change_seq'),
                 ALTER COLUMN change_seq SET NOT NULL;
CREATE INDEX bots_change_seq_idx ON bots (change_seq);

CREATE TABLE bots_removed (
    id         bigint PRIMARY KEY,                 -- the deleted bot's id
    change_seq bigint NOT NULL DEFAULT nextval('bots_change_seq'),
    removed_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX bots_removed_change_seq_idx ON bots_removed (change_seq);
CREATE INDEX bots_removed_removed_at_idx ON bots_removed (removed_at);

CREATE FUNCTION bots_touch() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.change_seq := nextval('bots_change_seq');
    RETURN NEW;
END $$;

CREATE TRIGGER bots_touch BEFORE INSERT OR UPDATE ON bots
    FOR EACH ROW EXECUTE FUNCTION bots_touch();

CREATE FUNCTION bots_tombstone() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO bots_removed (id) VALUES (OLD.id)
        ON CONFLICT (id) DO UPDATE
        SET change_seq = nextval('bots_change_seq'), removed_at = now();
    RETURN OLD;
END $$;

CREATE TRIGGER bots_tombstone AFTER DELETE ON bots
    FOR EACH ROW EXECUTE FUNCTION bots_tombstone();

-- A worker's cursor lives in memory and a restarted worker starts with a full pass, so a
-- tombstone only matters for seconds; keep a day, pruned once per DELETE statement.
CREATE FUNCTION bots_prune_tombstones() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM bots_removed WHERE removed_at < now() - interval '1 day';
    RETURN NULL;
END $$;

CREATE TRIGGER bots_prune_tombstones AFTER DELETE ON bots
    FOR EACH STATEMENT EXECUTE FUNCTION bots_prune_tombstones();
