"""bots/telegram"""
