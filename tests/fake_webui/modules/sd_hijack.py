"""webui modules/sd_hijack.py: `model_hijack.hijack(m)` on every load — the text encoder(s) wrapped in `*WithCustomWords`
(original at `.wrapped`), the token embedding(s) wrapped in `EmbeddingsWithFixes` (original at `.wrapped`);
`undo_hijack(m)` / `redo_hijack(m)`. No textual-inversion embeddings, no attention optimisation, no weighted_forward."""

import torch

from modules import sd_hijack_clip, sd_hijack_open_clip


class EmbeddingsWithFixes(torch.nn.Module):
    """The token embedding after the hijack: `.wrapped` is the original nn.Embedding; textual-inversion vectors would
    be spliced in here (none in the fake)."""

    def __init__(self, wrapped, embeddings, textual_inversion_key="clip_l"):
        super().__init__()
        self.wrapped = wrapped
        self.embeddings = embeddings
        self.textual_inversion_key = textual_inversion_key

    def forward(self, input_ids):
        self.embeddings.fixes = None
        return self.wrapped(input_ids)


class StableDiffusionModelHijack:
    fixes = None
    layers = None
    circular_enabled = False
    clip = None
    optimization_method = None

    def __init__(self):
        self.comments = []

    def hijack(self, m):
        conditioner = getattr(m, "conditioner", None)
        if conditioner is not None:
            text_cond_models = []
            for i, embedder in enumerate(conditioner.embedders):
                typename = type(embedder).__name__
                if typename == "FrozenCLIPEmbedder":
                    embeddings = embedder.transformer.text_model.embeddings
                    embeddings.token_embedding = EmbeddingsWithFixes(embeddings.token_embedding, self)
                    conditioner.embedders[i] = sd_hijack_clip.FrozenCLIPEmbedderForSDXLWithCustomWords(embedder, self)
                    text_cond_models.append(conditioner.embedders[i])
                elif typename == "FrozenOpenCLIPEmbedder2":
                    embedder.model.token_embedding = EmbeddingsWithFixes(embedder.model.token_embedding, self,
                                                                         textual_inversion_key="clip_g")
                    conditioner.embedders[i] = sd_hijack_open_clip.FrozenOpenCLIPEmbedder2WithCustomWords(embedder,
                                                                                                         self)
                    text_cond_models.append(conditioner.embedders[i])
            m.cond_stage_model = text_cond_models[0] if len(text_cond_models) == 1 else conditioner
        elif type(m.cond_stage_model).__name__ == "FrozenCLIPEmbedder":
            embeddings = m.cond_stage_model.transformer.text_model.embeddings
            embeddings.token_embedding = EmbeddingsWithFixes(embeddings.token_embedding, self)
            m.cond_stage_model = sd_hijack_clip.FrozenCLIPEmbedderWithCustomWords(m.cond_stage_model, self)
        elif type(m.cond_stage_model).__name__ == "FrozenOpenCLIPEmbedder":
            m.cond_stage_model.model.token_embedding = EmbeddingsWithFixes(m.cond_stage_model.model.token_embedding,
                                                                           self)
            m.cond_stage_model = sd_hijack_open_clip.FrozenOpenCLIPEmbedderWithCustomWords(m.cond_stage_model, self)
        self.optimization_method = "InvokeAI"
        self.clip = m.cond_stage_model

    def undo_hijack(self, m):
        conditioner = getattr(m, "conditioner", None)
        if conditioner is not None:
            for i, embedder in enumerate(conditioner.embedders):
                if isinstance(embedder, sd_hijack_open_clip.FrozenOpenCLIPEmbedder2WithCustomWords):
                    embedder.wrapped.model.token_embedding = embedder.wrapped.model.token_embedding.wrapped
                    conditioner.embedders[i] = embedder.wrapped
                elif isinstance(embedder, sd_hijack_clip.FrozenCLIPEmbedderForSDXLWithCustomWords):
                    embeddings = embedder.wrapped.transformer.text_model.embeddings
                    embeddings.token_embedding = embeddings.token_embedding.wrapped
                    conditioner.embedders[i] = embedder.wrapped
            if hasattr(m, "cond_stage_model"):
                delattr(m, "cond_stage_model")
        elif isinstance(m.cond_stage_model, sd_hijack_open_clip.FrozenOpenCLIPEmbedderWithCustomWords):
            m.cond_stage_model = m.cond_stage_model.wrapped
            m.cond_stage_model.model.token_embedding = m.cond_stage_model.model.token_embedding.wrapped
        elif isinstance(m.cond_stage_model, sd_hijack_clip.FrozenCLIPEmbedderWithCustomWords):
            m.cond_stage_model = m.cond_stage_model.wrapped
            embeddings = m.cond_stage_model.transformer.text_model.embeddings
            if isinstance(embeddings.token_embedding, EmbeddingsWithFixes):
                embeddings.token_embedding = embeddings.token_embedding.wrapped
        self.clip = None

    def redo_hijack(self, m):
        self.hijack(m)


model_hijack = StableDiffusionModelHijack()
