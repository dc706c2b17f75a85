-- Quotas per owner and the audit log (supervisor/registry/quotas.py, supervisor/registry/audit.py).

-- The admin's overrides of the [quotas] defaults: NULL = the configured default,
-- 0 = unlimited, N = at most N.
CREATE TABLE owner_quotas (
    owner_id           bigint PRIMARY KEY REFERENCES owners(id) ON DELETE CASCADE,
    bots               bigint CHECK (bots >= 0),
    messages_per_day   bigint CHECK (messages_per_day >= 0),
    llm_tokens_per_day bigint CHECK (llm_tokens_per_day >= 0),
    updated_at         timestamptz NOT NULL DEFAULT now()
);

-- Usage per owner and UTC day: Redis counts (ipc/usage.py), the master copies the counts
-- here every minute and seeds Redis back from here after Redis lost them.
CREATE TABLE owner_usage (
    owner_id   bigint NOT NULL REFERENCES owners(id) ON DELETE CASCADE,
    day        date NOT NULL,
    messages   bigint NOT NULL DEFAULT 0,
    llm_tokens bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (owner_id, day)
);

-- Every owner/admin action from any surface. `owner_id` is whose resource it concerns
-- (the acting owner, or the owner of the bot the admin acted on): owners read their rows.
-- No foreign key: the record outlives what it names.
CREATE TABLE audit_log (
    id       bigserial PRIMARY KEY,
    at       timestamptz NOT NULL DEFAULT now(),
    actor    text NOT NULL,          -- 'admin' | 'owner:<id>' (never a key)
    owner_id bigint,
    action   text NOT NULL,          -- e.g. 'bot.register', 'owner.set_quota', 'keys.rotate'
    target   text NOT NULL DEFAULT '',  -- e.g. 'bot:123', 'owner:7'
    source   text NOT NULL,          -- 'http:<ip>' | 'cli' | 'telegram:<user id>' | …
    outcome  text NOT NULL,          -- 'ok' or the refusal's code
    detail   jsonb NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX audit_log_at ON audit_log (at);
CREATE INDEX audit_log_owner ON audit_log (owner_id, id);
