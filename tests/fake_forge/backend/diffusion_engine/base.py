"""Neo backend/diffusion_engine/base.py: `ForgeDiffusionEngine` (the class of `shared.sd_model` once loaded; a plain
object, not an nn.Module) and `ForgeObjects(unet, clip, vae, clipvision=None)`.

Fields: `model_config` (huggingface_guess SD15/SDXL), `is_sd1`, `is_sdxl`, `is_inpaint`, `current_lora_hash` (str of
the applied [filename, unet_mult, te_mult, online] list; "[]" at first), `forge_objects`, `forge_objects_original`,
`forge_objects_after_applying_lora`; set by `sd_models.forge_model_reload`: `sd_checkpoint_info`, `filename`,
`sd_model_hash`. Properties `first_stage_model` (the VAE module) and `cond_stage_model` (the JointTextEncoder).
`is_sd2`, `sd_model_checkpoint`, `model`, `conditioner`, `apply_model`, `alphas_cumprod`, `parameterization` are
absent (F9).

Test-only: `conditioning_calls`, the prompts of every `get_learned_conditioning` (one list each, all families)."""

from __future__ import annotations

conditioning_calls = []  # test-only


class ForgeObjects:
    def __init__(self, unet, clip, vae, clipvision=None):
        self.unet = unet
        self.clip = clip
        self.vae = vae
        self.clipvision = clipvision

    def shallow_copy(self):
        return ForgeObjects(self.unet, self.clip, self.vae, self.clipvision)


class ForgeDiffusionEngine:
    matched_guesses = []

    def __init__(self, model_config, unet, clip, vae, is_inpaint=False):
        self.model_config = model_config
        self.is_inpaint = is_inpaint
        self.forge_objects = ForgeObjects(unet, clip, vae)
        self.forge_objects_original = self.forge_objects.shallow_copy()
        self.forge_objects_after_applying_lora = self.forge_objects.shallow_copy()
        self.current_lora_hash = str([])
        self.is_sd1 = False
        self.is_sdxl = False
        self.is_sd3 = False
        self.latent_channels = 4
        self.filename = None
        self.sd_checkpoint_info = None
        self.sd_model_hash = None
        self.extra_generation_params = {}
        self.comments = []

    @property
    def first_stage_model(self):
        return self.forge_objects.vae.first_stage_model

    @property
    def cond_stage_model(self):
        return self.forge_objects.clip.cond_stage_model

    def set_clip_skip(self, clip_skip):
        pass

    def get_learned_conditioning(self, prompt: list[str]):
        raise NotImplementedError

    def encode_first_stage(self, x):
        raise NotImplementedError("the fake Forge's VAE has no forward (tests/fake_forge/README.md)")

    def decode_first_stage(self, x):
        raise NotImplementedError("the fake Forge's VAE has no forward (tests/fake_forge/README.md)")

    def save_checkpoint(self, filename):
        raise NotImplementedError

    def __repr__(self):
        return f"<{type(self).__name__} {self.filename}>"


def record(prompt):
    conditioning_calls.append(list(prompt))

