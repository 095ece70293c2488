"""webui modules/sd_hijack_open_clip.py: the open_clip text towers' `*WithCustomWords` wrappers (SD2's
`cond_stage_model`, SDXL's `conditioner.embedders[1]`). Chunking and emphasis as in sd_hijack_clip; padding after the
first EOS is token 0. The BPE is the CLIP one (open_clip's own tokenizer is not imported)."""

from modules import sd_hijack_clip


def _tokenizer():
    import fake_ldm

    return fake_ldm.clip_tokenizer()


class OpenCLIPTokens:
    """The open_clip BPE ids (start, end, pad 0) shared by both wrappers."""

    def __init__(self, wrapped, hijack):
        super().__init__(wrapped, hijack)
        tokenizer = _tokenizer()
        self.comma_token = tokenizer.get_vocab().get(",</w>")
        self.id_start = tokenizer.bos_token_id
        self.id_end = tokenizer.eos_token_id
        self.id_pad = 0

    def tokenize(self, texts):
        return _tokenizer()(list(texts), truncation=False, add_special_tokens=False)["input_ids"]


class FrozenOpenCLIPEmbedderWithCustomWords(OpenCLIPTokens, sd_hijack_clip.FrozenCLIPEmbedderWithCustomWordsBase):
    """`.wrapped` is ldm's FrozenOpenCLIPEmbedder (`.model` the open_clip tower, penultimate layer + ln_final)."""

    def encode_with_transformers(self, tokens):
        return self.wrapped.encode_with_transformer(tokens)


class FrozenOpenCLIPEmbedder2WithCustomWords(OpenCLIPTokens, sd_hijack_clip.FrozenCLIPEmbedderWithCustomWordsBase):
    """`.wrapped` is sgm's FrozenOpenCLIPEmbedder2 (bigG): the penultimate layer, and `.pooled` (returned as the
    second output, `return_pooled`)."""

    def encode_with_transformers(self, tokens):
        d = self.wrapped.encode_with_transformer(tokens)
        z = d[self.wrapped.layer]
        pooled = d.get("pooled")
        if pooled is not None:
            z.pooled = pooled
        return z
