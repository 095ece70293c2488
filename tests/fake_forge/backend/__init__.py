"""The fake Forge Neo `backend` package (tests/fake_forge/README.md; forge-api.md F4, F7, F8)."""
