"""webui modules/scripts.py (the part extensions use at load time)."""

current_basedir = None


def basedir():
    return current_basedir
