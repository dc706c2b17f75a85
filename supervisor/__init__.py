"""The supervisor: spawns and watches worker processes, plans shards, runs the CLI."""
