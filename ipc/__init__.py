"""Wire names and typed messages shared by the master, workers and CLI over Redis."""
