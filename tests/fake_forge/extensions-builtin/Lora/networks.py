"""Neo's built-in Lora extension, networks.py (forge-api.md F4.4, F6): `available_networks`,
`available_network_aliases`, `forbidden_network_aliases`, `loaded_networks`, `list_available_networks()` (rescans
`cmd_opts.lora_dir` and every `cmd_opts.lora_dirs`), `load_network(name, network_on_disk)` (metadata only),
`load_networks(names, te_multipliers=None, unet_multipliers=None, dyn_dims=None)`.

`load_networks` follows Neo: unknown names trigger a rescan; the list of [filename, unet_mult, te_mult, online] is
compared with `sd_model.current_lora_hash` and nothing happens when equal; otherwise `forge_objects_original.unet`
and `.clip` are cloned, each network's patches are added to the clones (`add_patches`) and they become
`sd_model.forge_objects` (and `forge_objects_after_applying_lora`). The merge itself happens when the patchers are
loaded (`memory_management.load_models_gpu` → `refresh_loras`). LoRA files are **not read**: only the random
networks `merge_random_lora` made have patches.

Test-only: `list_available_networks_calls`, `load_networks_calls` (the arguments of each call), `random_networks`,
`merge_random_lora(sd_model, name="random", seed=0, strength=0.05)` — what a generation with `<lora:name>` leaves
behind; returns the merged parameters' keys ({"unet": [...], "clip": [...]})."""

import os

import network
import torch
from modules import shared

available_networks = {}
available_network_aliases = {}
forbidden_network_aliases = {}
loaded_networks = []
list_available_networks_calls = 0  # test-only
load_networks_calls = []  # test-only
random_networks = {}  # test-only: name → {"unet": {key: diff}, "clip": {key: diff}}

NETWORK_EXTENSIONS = (".pt", ".ckpt", ".safetensors")


def _walk_files(path):
    if not path or not os.path.isdir(path):
        return
    for root, _, files in sorted(os.walk(path, followlinks=True)):
        for filename in sorted(files):
            if os.path.splitext(filename)[1].lower() in NETWORK_EXTENSIONS:
                yield os.path.join(root, filename)


def list_available_networks():
    global list_available_networks_calls
    list_available_networks_calls += 1
    available_networks.clear()
    available_network_aliases.clear()
    forbidden_network_aliases.clear()
    forbidden_network_aliases.update({"none": 1, "Addams": 1})
    os.makedirs(shared.cmd_opts.lora_dir, exist_ok=True)
    candidates = []
    for folder in [shared.cmd_opts.lora_dir, *(getattr(shared.cmd_opts, "lora_dirs", None) or [])]:
        candidates += list(_walk_files(folder))
    for filename in candidates:
        name = os.path.splitext(os.path.basename(filename))[0]
        entry = network.NetworkOnDisk(name, filename)
        available_networks[name] = entry
        if entry.alias in available_network_aliases:
            forbidden_network_aliases[entry.alias.lower()] = 1
        available_network_aliases[name] = entry
        available_network_aliases[entry.alias] = entry


def load_network(name, network_on_disk):
    net = network.Network(name, network_on_disk)
    net.mtime = os.path.getmtime(network_on_disk.filename) if network_on_disk and network_on_disk.filename and \
        os.path.exists(network_on_disk.filename) else None
    return net


def load_networks(names, te_multipliers=None, unet_multipliers=None, dyn_dims=None):
    load_networks_calls.append({"names": list(names), "te_multipliers": list(te_multipliers or []),
                                "unet_multipliers": list(unet_multipliers or []), "dyn_dims": list(dyn_dims or [])})
    sd_model = shared.sd_model
    if not hasattr(sd_model, "forge_objects"):
        return
    if any(available_network_aliases.get(name) is None and name not in random_networks for name in names):
        list_available_networks()
    loaded_networks.clear()
    compiled = []
    for i, name in enumerate(names):
        on_disk = available_network_aliases.get(name)
        if on_disk is None and name not in random_networks:
            print(f"Couldn't find Lora with name {name}")
            continue
        net = load_network(name, on_disk)
        net.te_multiplier = te_multipliers[i] if te_multipliers else 1.0
        net.unet_multiplier = unet_multipliers[i] if unet_multipliers else 1.0
        net.mentioned_name = name
        loaded_networks.append(net)
        filename = on_disk.filename if on_disk is not None else f"<random network {name}>"
        compiled.append([filename, net.unet_multiplier, net.te_multiplier, False, name])
    current = str([x[:4] for x in compiled])
    if current == sd_model.current_lora_hash:
        return
    sd_model.current_lora_hash = current
    unet = sd_model.forge_objects_original.unet.clone()
    clip = sd_model.forge_objects_original.clip.clone()
    for filename, unet_mult, te_mult, online, name in compiled:
        patches = random_networks.get(name)
        if patches is None:
            print(f"[fake Forge] the Lora file {filename} is not read: no weights change")
            continue
        unet.add_patches(filename=filename, patches=patches["unet"], strength_patch=float(unet_mult),
                         online_mode=online)
        clip.patcher.add_patches(filename=filename, patches=patches["clip"], strength_patch=float(te_mult),
                                 online_mode=online)
    sd_model.forge_objects.unet = unet
    sd_model.forge_objects.clip = clip
    sd_model.forge_objects_after_applying_lora = sd_model.forge_objects.shallow_copy()


# -- test helper ----------------------------------------------------------------------------------------------------

def _pick(named_parameters, wanted):
    """The first parameter key ending with each of `wanted` (in order), skipping ones already picked."""
    picked = []
    for suffix in wanted:
        key = next((k for k, p in named_parameters if k.endswith(suffix) and k not in picked), None)
        if key is not None:
            picked.append(key)
    return picked


def merge_random_lora(sd_model, name="random", seed=0, strength=0.05):
    """Test-only: a generation with `<lora:name>` — random diffs (normal × strength, from `seed`) for the first UNet
    `attn1.to_q`, `attn2.to_k` and 3×3 conv weights and each text tower's first `self_attn.q_proj` and `mlp.fc1`
    weights become network `name`; `load_networks([name])` puts them on clones of the original patchers and
    `load_models_gpu` merges them (the Parameters are replaced; originals in `lora_loader.backup`)."""
    from backend import memory_management

    generator = torch.Generator().manual_seed(seed)

    def random_like(weight):
        return torch.randn(weight.shape, generator=generator, dtype=torch.float32) * strength

    unet_params = list(sd_model.forge_objects_original.unet.model.named_parameters())
    unet_keys = _pick(unet_params, ["attn1.to_q.weight", "attn2.to_k.weight"])
    conv = next((k for k, p in unet_params if p.ndim == 4 and p.shape[-1] == 3 and k.startswith("diffusion_model.")
                 and "input_blocks.0." not in k), None)
    unet_keys += [conv] if conv else []
    clip_params = list(sd_model.forge_objects_original.clip.patcher.model.named_parameters())
    clip_keys = []
    for tower in sd_model.forge_objects_original.clip.cond_stage_model.keys():
        tower_params = [(k, p) for k, p in clip_params if k.startswith(tower + ".")]
        clip_keys += _pick(tower_params, ["self_attn.q_proj.weight", "mlp.fc1.weight"])
    unet_by_key, clip_by_key = dict(unet_params), dict(clip_params)
    random_networks[name] = {"unet": {k: random_like(unet_by_key[k]) for k in unet_keys},
                             "clip": {k: random_like(clip_by_key[k]) for k in clip_keys}}
    load_networks([name], [1.0], [1.0], [None])
    objects = sd_model.forge_objects
    memory_management.load_models_gpu([objects.unet, objects.clip.patcher])
    return {"unet": unet_keys, "clip": clip_keys}
