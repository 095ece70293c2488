"""webui modules/sd_models.py: the checkpoint list (titles "name [shorthash]") and look-ups."""

import glob
import hashlib
import os

from modules import shared

checkpoints_list = {}
checkpoint_aliases = {}


class CheckpointInfo:
    def __init__(self, filename):
        self.filename = filename
        base = shared.cmd_opts.ckpt_dir or os.path.dirname(filename)
        self.name = os.path.relpath(filename, base)
        self.name_for_extra = os.path.splitext(os.path.basename(filename))[0]
        self.model_name = os.path.splitext(self.name.replace("/", "_").replace("\\", "_"))[0]
        self.hash = None
        self.sha256 = hashlib.sha256(self.name.encode()).hexdigest()  # the real one hashes the file (cached)
        self.shorthash = self.sha256[:10]
        self.title = f"{self.name} [{self.shorthash}]"
        self.short_title = f"{self.name_for_extra} [{self.shorthash}]"
        self.ids = [self.name, self.model_name, self.title, self.short_title, self.sha256, self.shorthash]

    def register(self):
        checkpoints_list[self.title] = self
        for i in self.ids:
            checkpoint_aliases[i] = self


def list_models():
    checkpoints_list.clear()
    checkpoint_aliases.clear()
    folder = shared.cmd_opts.ckpt_dir
    if folder:
        for ext in ("safetensors", "ckpt"):
            for filename in sorted(glob.glob(os.path.join(folder, "**", f"*.{ext}"), recursive=True)):
                CheckpointInfo(filename).register()


def checkpoint_tiles(use_short=False):
    return [x.short_title if use_short else x.title for x in checkpoints_list.values()]


def get_closet_checkpoint_match(search_string):
    if not search_string:
        return None
    info = checkpoint_aliases.get(search_string)
    if info is not None:
        return info
    found = sorted([info for info in checkpoints_list.values() if search_string in info.title],
                   key=lambda x: len(x.title))
    if found:
        return found[0]
    search_string_without_checksum = search_string.rsplit(" [", 1)[0]
    found = sorted([info for info in checkpoints_list.values()
                    if search_string_without_checksum in info.title], key=lambda x: len(x.title))
    return found[0] if found else None


def select_checkpoint():
    info = checkpoint_aliases.get(shared.opts.sd_model_checkpoint)
    return info or next(iter(checkpoints_list.values()), None)


list_models()
