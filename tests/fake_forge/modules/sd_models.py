"""Neo modules/sd_models.py (forge-api.md F3, F4.2, F5): the checkpoint list and look-ups, `model_data`, the lazy
`forge_model_reload()`, `unload_model_weights()`.

The list is built from a **set** of files, as Neo's: `checkpoint_tiles()` order is not sorted. Here it is shuffled
at every `list_models()` — by `random.Random(FAKE_FORGE_LIST_SEED)` when that variable is set, else at random — so
tests can show that nothing depends on it. `checkpoint_tiles()` returns `name`s (the relative file name, no hash;
`use_short=True`: `short_title`s). `CheckpointInfo.title` is "name [shorthash]" (the hash of the *name*, as if cached).

`model_data.sd_model` is a `FakeInitialModel` (no `forge_objects`) until the first `forge_model_reload()`; selecting a
checkpoint (`modules_forge.main_entry`) only sets `model_data.forge_loading_parameters`. ABSENT as in Neo:
`load_model`, `reload_model_weights`, `send_model_to_cpu/device/trash`, `read_state_dict`,
`get_checkpoint_state_dict`, `model_data.loaded_sd_models`.

Test-only: `forge_model_reload_calls` (one {"reloaded", "lock_held", "thread"} per call)."""

import contextlib
import gc
import glob
import hashlib
import json
import os
import random
import threading

import torch

from modules import paths, shared

model_dir = "Stable-diffusion"
model_path = os.path.abspath(os.path.join(paths.models_path, model_dir))
checkpoints_list = {}
checkpoint_aliases = {}
forge_model_reload_calls = []  # test-only
CHECKPOINT_EXTENSIONS = (".ckpt", ".safetensors", ".gguf")


class CheckpointInfo:
    def __init__(self, filename, folder=None):
        self.filename = filename
        folder = folder or os.path.dirname(os.path.abspath(filename))
        self.name = os.path.relpath(os.path.abspath(filename), os.path.abspath(folder))
        self.name_for_extra = os.path.splitext(os.path.basename(filename))[0]
        self.model_name = os.path.splitext(self.name.replace("/", "_").replace("\\", "_"))[0]
        self.is_safetensors = os.path.splitext(filename)[1].lower() == ".safetensors"
        self.hash = None
        self.sha256 = hashlib.sha256(self.name.encode()).hexdigest()  # the real one hashes the file (cached)
        self.shorthash = self.sha256[:10]
        self.title = f"{self.name} [{self.shorthash}]"
        self.short_title = f"{self.name_for_extra} [{self.shorthash}]"
        self.ids = [self.model_name, self.title, self.name, self.name_for_extra, self.short_title, self.sha256,
                    self.shorthash]
        self.metadata = {}

    def register(self):
        checkpoints_list[self.title] = self
        for i in self.ids:
            checkpoint_aliases[i] = self

    def calculate_shorthash(self):
        return self.shorthash


def _checkpoint_files():
    """(file, folder) of every checkpoint under models/Stable-diffusion and cmd_opts.ckpt_dirs, as a set."""
    found = set()
    seen = set()
    for folder in [model_path, *getattr(shared.cmd_opts, "ckpt_dirs", [])]:
        if not folder or not os.path.isdir(folder):
            continue
        for filename in glob.glob(os.path.join(folder, "**", "*"), recursive=True):
            if os.path.splitext(filename)[1].lower() not in CHECKPOINT_EXTENSIONS or not os.path.isfile(filename):
                continue
            real = os.path.join(os.path.realpath(os.path.dirname(filename)), os.path.basename(filename))
            if real in seen:
                continue
            seen.add(real)
            found.add((filename, folder))
    return found


def list_models():
    checkpoints_list.clear()
    checkpoint_aliases.clear()
    files = list(_checkpoint_files())
    files.sort()
    seed = os.environ.get("FAKE_FORGE_LIST_SEED")
    (random.Random(seed) if seed not in (None, "") else random.Random()).shuffle(files)  # Neo: set order
    for filename, folder in files:
        CheckpointInfo(filename, folder).register()


def checkpoint_tiles(use_short=False):
    return [x.short_title if use_short else x.name for x in checkpoints_list.values()]


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
    found = sorted([info for info in checkpoints_list.values() if search_string_without_checksum in info.title],
                   key=lambda x: len(x.title))
    return found[0] if found else None


def select_checkpoint():
    """The checkpoint `opts.sd_model_checkpoint` names, else the first of the list; None when there is none."""
    info = checkpoint_aliases.get(shared.opts.data.get("sd_model_checkpoint"))
    if info is not None:
        return info
    if not checkpoints_list:
        print("You do not have any model!")
        return None
    return next(iter(checkpoints_list.values()))


def read_metadata_from_safetensors(filename):
    with open(filename, mode="rb") as file:
        metadata_len = int.from_bytes(file.read(8), "little")
        json_start = file.read(2)
        assert metadata_len > 2 and json_start in (b'{"', b"{'"), f"{filename} is not a safetensors file"
        json_data = json_start + file.read(metadata_len - 2)
        json_obj = json.loads(json_data)
    res = {}
    for k, v in json_obj.get("__metadata__", {}).items():
        res[k] = v
        if isinstance(v, str) and v[0:1] == "{":
            with contextlib.suppress(ValueError):
                res[k] = json.loads(v)
    return res


class FakeInitialModel:
    """What `model_data.sd_model` is before the first load: no `forge_objects`."""

    def __init__(self):
        self.cond_stage_model = None
        self.chunk_length = 75

    def get_prompt_lengths_on_ui(self, prompt):
        r = len(prompt.strip("!,. ").replace(" ", ",").replace(".", ",").replace("!", ",").replace(",,", ",")
                .replace(",,", ",").replace(",,", ",").replace(",,", ",").split(","))
        return r, ((r + self.chunk_length - 1) // self.chunk_length) * self.chunk_length


class SdModelData:
    def __init__(self):
        self.sd_model = FakeInitialModel()
        self.forge_loading_parameters = {}
        self.forge_hash = ""

    def get_sd_model(self):
        return self.sd_model

    def set_sd_model(self, v):
        self.sd_model = v


model_data = SdModelData()


@torch.inference_mode()
def forge_model_reload():
    """Load `model_data.forge_loading_parameters["checkpoint_info"]` unless `str(forge_loading_parameters)` is
    `model_data.forge_hash` already; → (sd_model, reloaded). The model held before is dropped first
    (`model_data.sd_model` is None meanwhile, and stays None when the load fails)."""
    from backend import memory_management
    from backend.loader import forge_loader

    from modules import call_queue, script_callbacks

    call = {"reloaded": False, "lock_held": call_queue.queue_lock.locked(),
            "thread": threading.current_thread().name}
    forge_model_reload_calls.append(call)
    current_hash = str(model_data.forge_loading_parameters)
    if model_data.forge_hash == current_hash:
        return model_data.sd_model, False
    print("Loading Model: " + str(model_data.forge_loading_parameters))
    if model_data.sd_model:
        model_data.sd_model = None
        memory_management.unload_all_models()
        memory_management.soft_empty_cache()
        gc.collect()
    checkpoint_info = model_data.forge_loading_parameters["checkpoint_info"]
    if checkpoint_info is None:
        raise ValueError("You do not have any model! Please download at least one model in [models/Stable-diffusion].")
    additional_state_dicts = model_data.forge_loading_parameters.get("additional_modules", [])
    sd_model = forge_loader(checkpoint_info.filename, additional_state_dicts=additional_state_dicts)
    sd_model.extra_generation_params = {}
    sd_model.comments = []
    sd_model.sd_checkpoint_info = checkpoint_info
    sd_model.filename = checkpoint_info.filename
    sd_model.sd_model_hash = checkpoint_info.calculate_shorthash()
    shared.opts.data["sd_checkpoint_hash"] = checkpoint_info.sha256
    model_data.set_sd_model(sd_model)
    script_callbacks.model_loaded_callback(sd_model)
    model_data.forge_hash = current_hash
    call["reloaded"] = True
    return sd_model, True


def unload_model_weights(sd_model=None, info=None):
    from backend import memory_management

    memory_management.unload_all_models()


list_models()
