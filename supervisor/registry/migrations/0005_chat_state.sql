-- Per-chat state that must survive a Redis loss (issue 9): dialog state (including the
-- operator handoff mark), prefs, and `stamp`, the time of the chat's newest durable
-- change (a message row or a state change). Redis carries the same time in its version
-- token, so a load that finds Redis older than PostgreSQL rebuilds from here.
CREATE TABLE chat_state (
    bot_id      bigint NOT NULL,
    chat_id     bigint NOT NULL,
    stamp       double precision NOT NULL DEFAULT 0,   -- epoch s of the newest durable change
    state_stamp double precision NOT NULL DEFAULT 0,   -- epoch s of the dialog/prefs below
    dialog      jsonb NOT NULL DEFAULT '{}'::jsonb,
    prefs       jsonb NOT NULL DEFAULT '{}'::jsonb,
    handoff     jsonb,                                 -- dialog's handoff mark, or NULL
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (bot_id, chat_id)
);
CREATE INDEX chat_state_handoff ON chat_state (bot_id) WHERE handoff IS NOT NULL;
