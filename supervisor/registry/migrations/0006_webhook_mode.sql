-- Webhook mode per bot (issue 13): how the bot receives updates, and the random
-- secret_token Telegram echoes in X-Telegram-Bot-Api-Secret-Token, encrypted like the
-- token (AES-GCM under the key `webhook_key_id` names; AAD "webhook:<bot id>").
ALTER TABLE bots
    ADD COLUMN mode text NOT NULL DEFAULT 'polling' CHECK (mode IN ('polling', 'webhook')),
    ADD COLUMN webhook_key_id text,
    ADD COLUMN webhook_secret bytea;
