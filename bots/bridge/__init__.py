"""The aiogram bridge: aiogram Routers and Dispatchers running as botvisor handlers.

`handler` feeds updates through a Dispatcher, `session` sends every Bot API method of
the aiogram `Bot` through the bot's limited API, `storage` keeps FSM state in the
context store. aiogram is imported only by workers that run such a handler.
"""
