-- The chats each bot has seen (issue 14): the audience of a broadcast. Written in batches
-- by the worker's chat recorder (supervisor/worker/chat_recorder.py), one statement per
-- flush; `blocked` is set by a broadcast's 403 ("bot was blocked by the user", "user is
-- deactivated") or a my_chat_member "kicked", and cleared when the user writes again.
CREATE TABLE chats (
    bot_id     bigint NOT NULL REFERENCES bots(id) ON DELETE CASCADE,
    chat_id    bigint NOT NULL,
    type       text NOT NULL DEFAULT 'private',     -- private | group | supergroup | channel
    title      text,                                -- group title, or the user's name
    first_seen timestamptz NOT NULL DEFAULT now(),
    last_seen  timestamptz NOT NULL DEFAULT now(),
    blocked    boolean NOT NULL DEFAULT false,
    PRIMARY KEY (bot_id, chat_id)
);

-- One message to every chat of a bot. `cursor` is the highest chat id already claimed
-- (chats are walked in chat id order); `runner`/`lease_until` say which worker sends it.
CREATE TABLE broadcasts (
    id          bigserial PRIMARY KEY,
    bot_id      bigint NOT NULL REFERENCES bots(id) ON DELETE CASCADE,
    text        text NOT NULL,
    parse_mode  text,
    reply_markup jsonb,
    state       text NOT NULL DEFAULT 'pending'
                CHECK (state IN ('pending', 'running', 'done', 'cancelled')),
    total       integer NOT NULL,                   -- audience when created (not blocked)
    sent        integer NOT NULL DEFAULT 0,
    failed      integer NOT NULL DEFAULT 0,
    blocked     integer NOT NULL DEFAULT 0,         -- found blocked/deactivated by this one
    unknown     integer NOT NULL DEFAULT 0,         -- in doubt after a worker died mid-send
    cursor      bigint NOT NULL DEFAULT -9223372036854775808,
    rate        double precision NOT NULL DEFAULT 0, -- messages/s over the last batch
    runner      text,
    lease_until timestamptz,
    created_at  timestamptz NOT NULL DEFAULT now(),
    started_at  timestamptz,
    finished_at timestamptz,
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX broadcasts_bot ON broadcasts (bot_id, id);
CREATE INDEX broadcasts_active ON broadcasts (bot_id) WHERE state IN ('pending', 'running');

-- A row per chat a broadcast has claimed, written (committed) before the chat's send:
-- the per-chat record that keeps any chat from receiving the broadcast twice.
CREATE TABLE broadcast_deliveries (
    broadcast_id bigint NOT NULL REFERENCES broadcasts(id) ON DELETE CASCADE,
    chat_id      bigint NOT NULL,
    state        text NOT NULL DEFAULT 'claimed'
                 CHECK (state IN ('claimed', 'sent', 'failed', 'blocked', 'unknown')),
    PRIMARY KEY (broadcast_id, chat_id)
);
