"""Neo modules_forge/main_entry.py (forge-api.md F4.2, F5): selecting a checkpoint is **lazy**.

`refresh_model_loading_parameters()` sets `model_data.forge_loading_parameters = {checkpoint_info,
additional_modules, unet_storage_dtype}` from `opts` (`sd_model_checkpoint` via `select_checkpoint()`,
`forge_additional_modules`, `forge_unet_storage_dtype`) and `processing.need_global_unload = True`; nothing loads
until `sd_models.forge_model_reload()` (a generation). `checkpoint_change(name, preset=None)` sets
`opts.sd_model_checkpoint` and refreshes. `forge_main_entry()` is what the UI's start-up does: refresh once."""

from modules import processing, sd_models, shared

forge_unet_storage_dtype_options = {
    "Automatic": (None, False),
    "Automatic (fp16 LoRA)": (None, True),
    "float8-e4m3fn": ("float8_e4m3fn", False),
    "float8-e4m3fn (fp16 LoRA)": ("float8_e4m3fn", True),
    "float8-e5m2": ("float8_e5m2", False),
    "float8-e5m2 (fp16 LoRA)": ("float8_e5m2", True),
}
dynamic_args = {"online_lora": False}


def refresh_model_loading_parameters():
    checkpoint_info = sd_models.select_checkpoint()
    unet_storage_dtype, lora_fp16 = forge_unet_storage_dtype_options.get(
        shared.opts.data.get("forge_unet_storage_dtype", "Automatic"), (None, False))
    dynamic_args["online_lora"] = lora_fp16
    sd_models.model_data.forge_loading_parameters = dict(
        checkpoint_info=checkpoint_info,
        additional_modules=list(shared.opts.data.get("forge_additional_modules") or []),
        unet_storage_dtype=unet_storage_dtype,
    )
    print(f"Model selected: {sd_models.model_data.forge_loading_parameters}")
    processing.need_global_unload = True


def checkpoint_change(ckpt_name, preset=None):
    shared.opts.set("sd_model_checkpoint", ckpt_name)
    refresh_model_loading_parameters()


def modules_change(module_values, preset=None):
    shared.opts.set("forge_additional_modules", list(module_values))
    refresh_model_loading_parameters()


def forge_main_entry():
    refresh_model_loading_parameters()
