-- Telegram users linked to owners by the manager bot's /login (bots/handlers/manager.py).
-- `key_hash` is the owner's `api_key_hash` at /login: a new owner key unlinks everyone
-- who logged in with the old one (supervisor/owner_links.py compares them on every use).
CREATE TABLE owner_telegram_users (
    user_id    bigint PRIMARY KEY,                 -- Telegram user id (message.from.id)
    owner_id   bigint NOT NULL REFERENCES owners(id) ON DELETE CASCADE,
    key_hash   bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX owner_telegram_users_owner ON owner_telegram_users (owner_id);
