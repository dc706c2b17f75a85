"""Bot actors, the Telegram client side, and the Bot API emulator."""
