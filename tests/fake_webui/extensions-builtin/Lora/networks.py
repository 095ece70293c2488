"""extensions-builtin/Lora/networks.py (v1.10.1), the parts about files and merged weights (webui-api.md A9).

`available_networks` / `available_network_aliases` (rebuilt by `list_available_networks()` from `cmd_opts.lora_dir`
and the LyCORIS dir), `loaded_networks` (the networks of the last generation), `assign_network_names_to_compvis_modules`
(`sd_model.network_layer_mapping`), `network_apply_weights(layer)` (the in-place merge with `opts.lora_functional`
False), `network_restore_weights_from_backup(layer)`, `network_reset_cached_weight(layer)`.

`load_networks(names, te_multipliers, unet_multipliers)` is what `processing.process_images` calls for a prompt's
`<lora:…>` tags; it reads the file but does not map its keys: its updates are random, seeded by the file's bytes. The
test helper `merge_random_network` stands in for a generation with a `<lora:…>`: it merges random deltas into a few
layers the way that generation would.
"""

import os

import network
import torch
from modules import devices, shared

available_networks = {}
available_network_aliases = {}
forbidden_network_aliases = {}
loaded_networks = []
originals = None  # lora_patches.LoraPatches, set by scripts/lora_script.py
list_available_networks_calls = 0  # test-only: how many times list_available_networks() ran

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
    candidates = list(_walk_files(shared.cmd_opts.lora_dir))
    candidates += list(_walk_files(shared.cmd_opts.lyco_dir_backcompat))
    for filename in candidates:
        name = os.path.splitext(os.path.basename(filename))[0]
        entry = network.NetworkOnDisk(name, filename)
        available_networks[name] = entry
        if entry.alias in available_network_aliases:
            forbidden_network_aliases[entry.alias.lower()] = 1
        available_network_aliases[name] = entry
        available_network_aliases[entry.alias] = entry


def assign_network_names_to_compvis_modules(sd_model):
    """`sd_model.network_layer_mapping`: Lora-style layer name ("." → "_") → module, for the UNet
    (`shared.sd_model.model`) and the text encoder(s) (SDXL: each embedder's `.wrapped`, prefixed `<i>_`); every
    module gets `network_layer_name`."""
    network_layer_mapping = {}
    if shared.sd_model.is_sdxl:
        for i, embedder in enumerate(shared.sd_model.conditioner.embedders):
            if not hasattr(embedder, "wrapped"):
                continue
            for name, module in embedder.wrapped.named_modules():
                network_name = f'{i}_{name.replace(".", "_")}'
                network_layer_mapping[network_name] = module
                module.network_layer_name = network_name
    else:
        cond_stage_model = getattr(shared.sd_model.cond_stage_model, "wrapped", shared.sd_model.cond_stage_model)
        for name, module in cond_stage_model.named_modules():
            network_name = name.replace(".", "_")
            network_layer_mapping[network_name] = module
            module.network_layer_name = network_name
    for name, module in shared.sd_model.model.named_modules():
        network_name = name.replace(".", "_")
        network_layer_mapping[network_name] = module
        module.network_layer_name = network_name
    sd_model.network_layer_mapping = network_layer_mapping


def _backup(weight):
    if weight is None or shared.opts.data.get("lora_without_backup_weight", False):
        return None
    return weight.to(devices.cpu, copy=True)


def network_apply_weights(self):
    """Merge `loaded_networks` into this layer in place (opts.lora_functional False): back up the base weights on
    first use, restore them when the wanted networks differ from `network_current_names`, add each network's
    update, record the new names."""
    network_layer_name = getattr(self, "network_layer_name", None)
    if network_layer_name is None:
        return
    current_names = getattr(self, "network_current_names", ())
    wanted_names = tuple((x.name, x.te_multiplier, x.unet_multiplier, x.dyn_dim) for x in loaded_networks)
    if getattr(self, "network_weights_backup", None) is None and wanted_names != ():
        if isinstance(self, torch.nn.MultiheadAttention):
            backup = (_backup(self.in_proj_weight), _backup(self.out_proj.weight))
            self.network_weights_backup = None if backup[0] is None else backup
        else:
            self.network_weights_backup = _backup(self.weight)
    if getattr(self, "network_bias_backup", None) is None and wanted_names != ():
        if isinstance(self, torch.nn.MultiheadAttention):
            self.network_bias_backup = _backup(self.out_proj.bias)
        else:
            self.network_bias_backup = _backup(getattr(self, "bias", None))
    if current_names == wanted_names:
        return
    network_restore_weights_from_backup(self)
    with torch.no_grad():
        for net in loaded_networks:
            module = net.modules.get(network_layer_name)
            if module is not None and hasattr(self, "weight"):
                updown, _ = module.calc_updown(self.weight)
                self.weight += updown
                continue
            parts = [net.modules.get(f"{network_layer_name}_{x}") for x in ("q_proj", "k_proj", "v_proj", "out_proj")]
            if isinstance(self, torch.nn.MultiheadAttention) and all(parts):
                qkv = torch.vstack([m.calc_updown(self.in_proj_weight)[0] for m in parts[:3]])
                self.in_proj_weight += qkv
                self.out_proj.weight += parts[3].calc_updown(self.out_proj.weight)[0]
    self.network_current_names = wanted_names


def network_restore_weights_from_backup(self):
    """The backups copied back into the layer (no-op when both are None); `network_current_names` is left as is."""
    weights_backup = getattr(self, "network_weights_backup", None)
    bias_backup = getattr(self, "network_bias_backup", None)
    if weights_backup is None and bias_backup is None:
        return
    with torch.no_grad():
        if weights_backup is not None:
            if isinstance(self, torch.nn.MultiheadAttention):
                self.in_proj_weight.copy_(weights_backup[0])
                self.out_proj.weight.copy_(weights_backup[1])
            else:
                self.weight.copy_(weights_backup)
        if bias_backup is not None:
            target = self.out_proj if isinstance(self, torch.nn.MultiheadAttention) else self
            target.bias.copy_(bias_backup)


def network_reset_cached_weight(self):
    self.network_current_names = ()
    self.network_weights_backup = None
    self.network_bias_backup = None


def load_networks(names, te_multipliers=None, unet_multipliers=None, dyn_dims=None):
    """What a generation's `<lora:NAME:te:unet>` tags activate: `loaded_networks` becomes those networks (found in
    `available_network_aliases`; a name not there is reported and skipped), merged into each layer when it next
    runs (`network_apply_weights`). Fake: the file is read (its tensors kept on `Network.tensors`, test-only) but its
    keys are not mapped to layers — its updates are random, seeded by the file's bytes, on the layers
    `merge_random_network` touches, so each file gives its own merge and its own images."""
    import hashlib

    from safetensors.torch import load_file

    if getattr(shared.sd_model, "network_layer_mapping", None) is None:
        assign_network_names_to_compvis_modules(shared.sd_model)
    loaded_networks.clear()
    missing = []
    for i, name in enumerate(names):
        on_disk = available_network_aliases.get(name)
        if on_disk is None:
            missing.append(name)
            continue
        with open(on_disk.filename, "rb") as f:
            digest = hashlib.sha256(f.read()).digest()
        net = _random_network(shared.sd_model, name, int.from_bytes(digest[:4], "little"), 0.05, on_disk)
        net.te_multiplier = te_multipliers[i] if te_multipliers else 1.0
        net.unet_multiplier = unet_multipliers[i] if unet_multipliers else 1.0
        net.dyn_dim = dyn_dims[i] if dyn_dims else None
        net.tensors, net.sha256 = load_file(on_disk.filename), digest.hex()
        loaded_networks.append(net)
    if missing:
        print(f"Networks not found: {', '.join(missing)}")


# -- test helper ----------------------------------------------------------------------------------------------------

def _pick_layers(sd_model):
    """A handful of layers a typical LoRA touches: the first UNet attn1.to_q and attn2.to_k (Linear) and 3×3 Conv2d;
    per text tower the first layer's q_proj and fc1 (CLIP) or mlp.c_fc and attn (open_clip nn.MultiheadAttention)."""
    mapping = sd_model.network_layer_mapping
    picked = []

    def first(predicate, count=1):
        found = [name for name, m in mapping.items() if predicate(name, m) and name not in picked][:count]
        picked.extend(found)

    unet = "diffusion_model_"
    first(lambda n, m: n.startswith(unet) and n.endswith("attn1_to_q") and isinstance(m, torch.nn.Linear))
    first(lambda n, m: n.startswith(unet) and n.endswith("attn2_to_k") and isinstance(m, torch.nn.Linear))
    first(lambda n, m: n.startswith(unet) and isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3))
    for tower in ("", "0_", "1_"):
        for suffix in ("self_attn_q_proj", "mlp_fc1"):
            first(lambda n, m, t=tower, x=suffix: n.startswith(t + "transformer_text_model_encoder_layers_")
                  and n.endswith(x) and isinstance(m, torch.nn.Linear))
        first(lambda n, m, t=tower: n.startswith(t + "model_transformer_resblocks_") and n.endswith("mlp_c_fc"))
        first(lambda n, m, t=tower: n.startswith(t + "model_transformer_resblocks_")
              and isinstance(m, torch.nn.MultiheadAttention))
    return picked


def merge_random_network(sd_model, name="random", seed=0, strength=0.05, te_multiplier=1.0, unet_multiplier=1.0):
    """Test-only: what a generation with `<lora:name:…>` leaves behind. `loaded_networks` becomes [that network],
    and `network_apply_weights` merges random updates (normal × strength, from `seed`) into the layers
    `_pick_layers` chooses (Linear/Conv2d weights; an nn.MultiheadAttention's in_proj_weight and out_proj.weight),
    taking their CPU backups (none with opts.lora_without_backup_weight) and setting their
    `network_current_names`. Other layers are not touched. Returns the merged layers' network names."""
    if getattr(sd_model, "network_layer_mapping", None) is None:
        assign_network_names_to_compvis_modules(sd_model)
    net = _random_network(sd_model, name, seed, strength, available_networks.get(name))
    net.te_multiplier, net.unet_multiplier = te_multiplier, unet_multiplier
    loaded_networks.clear()
    loaded_networks.append(net)
    names = _pick_layers(sd_model)
    for layer_name in names:
        network_apply_weights(sd_model.network_layer_mapping[layer_name])
    return names


def _random_network(sd_model, name, seed, strength, on_disk):
    """A Network of random updates (normal × strength, from `seed`) for the layers `_pick_layers` chooses."""
    generator = torch.Generator().manual_seed(seed)
    net = network.Network(name, on_disk)

    def random_like(weight):
        return torch.randn(weight.shape, generator=generator) * strength

    names = _pick_layers(sd_model)
    for layer_name in names:
        layer = sd_model.network_layer_mapping[layer_name]
        if isinstance(layer, torch.nn.MultiheadAttention):
            width = layer.embed_dim
            for part in ("q_proj", "k_proj", "v_proj"):
                key = f"{layer_name}_{part}"
                net.modules[key] = network.NetworkModule(net, key, random_like(torch.empty(width, width)))
            key = f"{layer_name}_out_proj"
            net.modules[key] = network.NetworkModule(net, key, random_like(layer.out_proj.weight))
        else:
            net.modules[layer_name] = network.NetworkModule(net, layer_name, random_like(layer.weight))
    return net
