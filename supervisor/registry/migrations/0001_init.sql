-- owners, bots and durable conversation history (DESIGN.md "PostgreSQL").
CREATE TABLE owners (
    id           bigserial PRIMARY KEY,
    name         text NOT NULL UNIQUE,
    api_key_hash bytea,
    created_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE bots (
    id              bigint PRIMARY KEY,             -- Telegram bot id, the number before ':'
    owner_id        bigint REFERENCES owners(id) ON DELETE RESTRICT,
    username        text NOT NULL DEFAULT '',
    token_encrypted bytea NOT NULL,                 -- AES-GCM: nonce || ciphertext
    key_id          text NOT NULL,                  -- which key encrypted it (for rotation)
    handler         text NOT NULL DEFAULT 'echo',
    settings        jsonb NOT NULL DEFAULT '{}'::jsonb,
    state           text NOT NULL DEFAULT 'active'
                    CHECK (state IN ('active', 'paused', 'disabled')),
    disabled_reason text,
    revision        bigint NOT NULL DEFAULT 1,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX bots_owner ON bots (owner_id);

CREATE TABLE messages (
    bot_id     bigint NOT NULL,
    chat_id    bigint NOT NULL,
    seq        bigserial,
    role       text NOT NULL,
    content    text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (bot_id, chat_id, seq)
);
