"""Neo modules/scripts.py (the part extensions use at load time): `basedir()`, the folder of the extension whose
script is loading."""

current_basedir = None


def basedir():
    return current_basedir
