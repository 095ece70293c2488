"""Training modes. Each implements the contract in base.py (what to cache, what one step computes, which passes
to run) and has one line in registry.py."""
