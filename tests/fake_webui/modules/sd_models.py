"""webui modules/sd_models.py: the checkpoint list (titles "name [shorthash]") and look-ups; `model_data`, `load_model`,
`reload_model_weights`, `unload_model_weights`, `send_model_to_cpu/device/trash`, `read_state_dict`.

The model is built from the checkpoint's own keys (tests/fake_webui/fake_ldm.py), loaded in fp32
(`--no-half`), hijacked (modules/sd_hijack.py) and announced to `on_model_loaded` callbacks, in the webui's order.
torch is imported only when a model is loaded.
"""

import contextlib
import glob
import hashlib
import json
import os
import threading

from modules import shared

checkpoints_list = {}
checkpoint_aliases = {}
files_read = []  # test-only: the path of every checkpoint read_state_dict read (each full read of a file's tensors)


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

    def calculate_shorthash(self):
        return self.shorthash

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
    """The checkpoint `opts.sd_model_checkpoint` names, else the first one; FileNotFoundError when there is none."""
    info = checkpoint_aliases.get(shared.opts.sd_model_checkpoint)
    if info is not None:
        return info
    if not checkpoints_list:
        raise FileNotFoundError(f"No checkpoints found. When searching for checkpoints, looked at: "
                                f"{shared.cmd_opts.ckpt_dir}")
    return next(iter(checkpoints_list.values()))


def read_metadata_from_safetensors(filename):
    """The file's `__metadata__`, string values that hold JSON objects decoded."""
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


def read_state_dict(checkpoint_file, print_global_state=False, map_location=None):
    """All tensors of a .safetensors (or a .ckpt through torch.load(weights_only=True), its "state_dict" if any)."""
    import torch

    files_read.append(checkpoint_file)
    if os.path.splitext(checkpoint_file)[1].lower() == ".safetensors":
        import safetensors.torch

        return safetensors.torch.load_file(checkpoint_file, device=str(map_location or "cpu"))
    pl_sd = torch.load(checkpoint_file, map_location=map_location or "cpu", weights_only=True)
    return pl_sd.get("state_dict", pl_sd) if isinstance(pl_sd, dict) else pl_sd


def get_checkpoint_state_dict(checkpoint_info, timer=None):
    return read_state_dict(checkpoint_info.filename)


class SdModelData:
    """The loaded model: `sd_model`, `loaded_sd_models` (most recent first), `get_sd_model()` (loads
    select_checkpoint() on the first access if nothing was ever loaded), `set_sd_model(v)`."""

    def __init__(self):
        self.sd_model = None
        self.loaded_sd_models = []
        self.was_loaded_at_least_once = False
        self.lock = threading.Lock()

    def get_sd_model(self):
        if self.was_loaded_at_least_once:
            return self.sd_model
        if self.sd_model is None:
            with self.lock:
                if self.sd_model is not None or self.was_loaded_at_least_once:
                    return self.sd_model
                try:
                    load_model()
                except Exception as e:  # noqa: BLE001 — the webui reports it and leaves sd_model None
                    print(f"Stable diffusion model failed to load: {e!r}")
                    self.sd_model = None
        return self.sd_model

    def set_sd_model(self, v, already_loaded=False):
        self.sd_model = v
        try:
            self.loaded_sd_models.remove(v)
        except ValueError:
            pass
        if v is not None:
            self.loaded_sd_models.insert(0, v)


model_data = SdModelData()


def _read_config(config_path):
    if not config_path or not os.path.exists(config_path):
        return None
    import yaml

    with open(config_path, encoding="utf-8") as f:
        return yaml.safe_load(f)


@contextlib.contextmanager
def _one_thread():
    """Many small fp16 → fp32 copies: torch's thread pool costs far more than it gives on a busy CPU (the fake's
    own speed-up; the webui does not do this)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def load_model_weights(model, checkpoint_info, state_dict, timer=None):
    """The file's tensors into `model` (strict=False, as the webui), the is_* flags, extend_sdxl, the checkpoint
    fields; `opts.sd_model_checkpoint` becomes its title."""
    from modules import sd_models_xl

    shared.opts.data["sd_model_checkpoint"] = checkpoint_info.title
    if state_dict is None:
        state_dict = get_checkpoint_state_dict(checkpoint_info, timer)
    model.is_sdxl = hasattr(model, "conditioner")
    model.is_sd2 = not model.is_sdxl and hasattr(model.cond_stage_model, "model")
    model.is_sd1 = not model.is_sdxl and not model.is_sd2
    model.is_ssd = model.is_sdxl and (
        "model.diffusion_model.middle_block.1.transformer_blocks.0.attn1.to_q.weight" not in state_dict)
    unet_input = state_dict.get("model.diffusion_model.input_blocks.0.0.weight")
    model.is_sdxl_inpaint = model.is_sdxl and unet_input is not None and unet_input.shape[1] == 9
    if model.is_sdxl:
        sd_models_xl.extend_sdxl(model)
    with _one_thread():
        model.load_state_dict(state_dict, strict=False)
    model.sd_model_hash = checkpoint_info.calculate_shorthash()
    model.sd_model_checkpoint = checkpoint_info.filename
    model.sd_checkpoint_info = checkpoint_info
    shared.opts.data["sd_checkpoint_hash"] = checkpoint_info.sha256


def send_model_to_cpu(m):
    from modules import devices, lowvram

    if getattr(m, "lowvram", False):
        lowvram.send_everything_to_cpu()
    else:
        m.to(devices.cpu)
    devices.torch_gc()


def send_model_to_device(m):
    from modules import devices, lowvram

    if lowvram.is_needed(m):
        lowvram.setup_for_low_vram(m, not shared.cmd_opts.lowvram)
    else:
        m.lowvram = False
    if not m.lowvram:
        m.to(devices.device)


def send_model_to_trash(m):
    from modules import devices

    m.to(device="meta")
    devices.torch_gc()


def load_model(checkpoint_info=None, already_loaded_state_dict=None):
    """Build, load, hijack and announce a model; the model held before goes to the trash (the meta device) first.
    It stays in `model_data.loaded_sd_models`, as in the webui."""
    import fake_ldm

    from modules import devices, script_callbacks, sd_hijack, sd_models_config

    checkpoint_info = checkpoint_info or select_checkpoint()
    if model_data.sd_model:
        send_model_to_trash(model_data.sd_model)
        model_data.sd_model = None
        devices.torch_gc()
    if already_loaded_state_dict is not None:
        state_dict = already_loaded_state_dict
    else:
        state_dict = get_checkpoint_state_dict(checkpoint_info)
    checkpoint_config = sd_models_config.find_checkpoint_config(state_dict, checkpoint_info)
    with _one_thread():
        sd_model = fake_ldm.build_model(state_dict, _read_config(checkpoint_config))
    sd_model.used_config = checkpoint_config
    sd_model.latent_channels = 4
    load_model_weights(sd_model, checkpoint_info, state_dict)
    del state_dict
    send_model_to_device(sd_model)
    sd_hijack.model_hijack.hijack(sd_model)
    sd_model.eval()
    model_data.set_sd_model(sd_model)
    model_data.was_loaded_at_least_once = True
    script_callbacks.model_loaded_callback(sd_model)
    return sd_model


def reload_model_weights(sd_model=None, info=None, forced_reload=False):
    """Switch checkpoint: nothing when `info` is the loaded file (unless forced); the same model object when the
    config matches (weights loaded in place, hijack redone, on_model_loaded fired); else load_model."""
    from modules import devices, script_callbacks, sd_hijack, sd_models_config

    checkpoint_info = info or select_checkpoint()
    if not sd_model:
        sd_model = model_data.sd_model
    if sd_model is not None and sd_model.sd_model_checkpoint == checkpoint_info.filename and not forced_reload:
        return sd_model
    if sd_model is not None:
        send_model_to_cpu(sd_model)
        sd_hijack.model_hijack.undo_hijack(sd_model)
    state_dict = get_checkpoint_state_dict(checkpoint_info)
    checkpoint_config = sd_models_config.find_checkpoint_config(state_dict, checkpoint_info)
    if sd_model is None or checkpoint_config != sd_model.used_config:
        if sd_model is not None:
            send_model_to_trash(sd_model)
        load_model(checkpoint_info, already_loaded_state_dict=state_dict)
        return model_data.sd_model
    try:
        load_model_weights(sd_model, checkpoint_info, state_dict)
    finally:
        sd_hijack.model_hijack.hijack(sd_model)
        if not sd_model.lowvram:
            sd_model.to(devices.device)
        script_callbacks.model_loaded_callback(sd_model)
    model_data.set_sd_model(sd_model)
    return sd_model


def unload_model_weights(sd_model=None):
    """Only moves the model to the CPU (it stays loaded); with no argument that is `shared.sd_model`."""
    send_model_to_cpu(sd_model or shared.sd_model)
    return sd_model


list_models()
