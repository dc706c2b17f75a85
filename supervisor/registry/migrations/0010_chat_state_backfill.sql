-- Every chat with history gets its `chat_state` row (issue 9, latency): a context load
-- that finds a chat in neither Redis nor `chat_state` takes it for new and skips the
-- history query. Rows written since 0005 always come with the chat's row (same
-- transaction); chats whose history predates 0005 get one here, stamped with their newest
-- message and no dialog/prefs (state_stamp 0), as the writer stamps a row of messages.
INSERT INTO chat_state (bot_id, chat_id, stamp)
SELECT bot_id, chat_id, extract(epoch FROM max(created_at))::float8
FROM messages
GROUP BY bot_id, chat_id
ON CONFLICT (bot_id, chat_id) DO NOTHING;
