"""bots/llm"""
