"""Jobs around the engine: CSV logs (and later the queue and the plot)."""
