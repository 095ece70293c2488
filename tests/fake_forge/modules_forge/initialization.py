"""Neo modules_forge/initialization.py (the part that matters here): `modules_forge/packages` goes first on sys.path,
so the vendored packages are importable top-level (here only `huggingface_guess`)."""

import os
import sys

PACKAGES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "packages")


def initialize_forge():
    if PACKAGES not in sys.path:
        sys.path.insert(0, PACKAGES)


initialize_forge()
