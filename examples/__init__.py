"""Example bots for botvisor (not part of the runtime; see README "Write your own bot")."""
