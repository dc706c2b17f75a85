"""Handlers: what a bot does with an update. Chosen per bot by name (`handler` column):
`registry.make_handler`; the interface is in `base`."""
