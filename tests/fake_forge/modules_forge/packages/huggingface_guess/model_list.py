"""huggingface_guess.model_list (reduced): `SD15`, `SDXL`, `SDXLRefiner` — what `sd_model.model_config` is an
instance of. Shape matching (`matches`) is not faked: the fake's loader tells families by key layout."""


class BASE:
    huggingface_repo = None
    unet_config = {}
    unet_extra_config = {"num_heads": -1, "num_head_channels": 64}
    clip_target = {}
    supported_inference_dtypes = ("float16", "bfloat16", "float32")

    def __repr__(self):
        return f"{type(self).__name__}()"


class SD15(BASE):
    huggingface_repo = "runwayml/stable-diffusion-v1-5"
    unet_config = {"context_dim": 768, "model_channels": 320, "use_linear_in_transformer": False,
                   "adm_in_channels": None, "use_temporal_attention": False}
    clip_target = {"clip_l": "text_encoder"}


class SDXL(BASE):
    huggingface_repo = "stabilityai/stable-diffusion-xl-base-1.0"
    unet_config = {"model_channels": 320, "use_linear_in_transformer": True, "transformer_depth": [0, 0, 2, 2, 10, 10],
                   "context_dim": 2048, "adm_in_channels": 2816, "use_temporal_attention": False}
    clip_target = {"clip_l": "text_encoder", "clip_g": "text_encoder_2"}


class SDXLRefiner(BASE):
    huggingface_repo = "stabilityai/stable-diffusion-xl-refiner-1.0"
    unet_config = {"model_channels": 384, "use_linear_in_transformer": True, "context_dim": 1280,
                   "adm_in_channels": 2560, "transformer_depth": [0, 0, 4, 4, 4, 4, 0, 0],
                   "use_temporal_attention": False}
    clip_target = {"clip_g": "text_encoder"}


models = [SD15, SDXL, SDXLRefiner]
