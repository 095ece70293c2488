"""webui modules/sd_models_xl.py: `extend_sdxl(model)` (parameterization, alphas_cumprod, …) and the
`DiffusionEngine.get_learned_conditioning` patch: prompts → {"crossattn": (B, 77·k, D0+D1), "vector": (B, adm)}, with
width/height from the batch's attributes (a prompt_parser.SdConditioning), 1024 by default."""

import fake_ldm
import torch

from modules import devices, shared


def get_learned_conditioning(self, batch):
    fake_ldm.conditioning_calls.append(list(batch))
    for embedder in self.conditioner.embedders:
        embedder.ucg_rate = 0.0
    width = getattr(batch, "width", 1024) or 1024
    height = getattr(batch, "height", 1024) or 1024
    is_negative_prompt = getattr(batch, "is_negative_prompt", False)
    devices_args = {"device": devices.device, "dtype": devices.dtype}
    sdxl_conds = {
        "txt": batch,
        "original_size_as_tuple": torch.tensor([height, width], **devices_args).repeat(len(batch), 1),
        "crop_coords_top_left": torch.tensor([shared.opts.data.get("sdxl_crop_top", 0),
                                              shared.opts.data.get("sdxl_crop_left", 0)],
                                             **devices_args).repeat(len(batch), 1),
        "target_size_as_tuple": torch.tensor([height, width], **devices_args).repeat(len(batch), 1),
    }
    force_zero_negative_prompt = is_negative_prompt and all(x == "" for x in batch)
    return self.conditioner(sdxl_conds, force_zero_embeddings=["txt"] if force_zero_negative_prompt else [])


def get_first_stage_encoding(self, x):  # SDXL scales inside encode_first_stage
    return x


def extend_sdxl(model):
    """Makes an SDXL model look a bit more like SD1.5 to the rest of the webui."""
    dtype = next(model.model.diffusion_model.parameters()).dtype
    model.model.diffusion_model.dtype = dtype
    model.model.conditioning_key = "crossattn"
    model.cond_stage_key = "txt"
    model.parameterization = "v" if isinstance(model.denoiser.scaling, fake_ldm.VScaling) else "eps"
    alphas_cumprod, _ = fake_ldm.scaled_linear_alphas_cumprod(0.00085, 0.012, 1000)  # LegacyDDPMDiscretization
    model.alphas_cumprod = torch.asarray(alphas_cumprod, device=devices.device, dtype=torch.float32)
    model.conditioner.wrapped = torch.nn.Module()


fake_ldm.DiffusionEngine.get_learned_conditioning = get_learned_conditioning
fake_ldm.DiffusionEngine.get_first_stage_encoding = get_first_stage_encoding
