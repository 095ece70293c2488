"""webui modules/sd_hijack_clip.py: the `*WithCustomWords` text-encoder wrappers. A prompt is parsed for emphasis
(`(text:1.3)`, `(text)` ×1.1, `[text]` ÷1.1; `opts.emphasis`), tokenized without truncation, cut into 75-token chunks
each framed by BOS/EOS and padded to 77, encoded chunk by chunk and concatenated: (B, 77·k, D). No textual inversion,
no comma back-tracking at chunk borders. No torch.no_grad: gradients flow into the text model."""

import math

import torch

from modules import devices, prompt_parser, shared


class PromptChunk:
    def __init__(self):
        self.tokens = []
        self.multipliers = []
        self.fixes = []


def apply_emphasis(z, multipliers):
    """modules/sd_emphasis.py: "Original" scales each token's vector by its weight, then restores the mean of z;
    "No norm" only scales; anything else ("None", "Ignore") leaves z as it is."""
    option = shared.opts.data.get("emphasis", "Original")
    if option not in ("Original", "No norm"):
        return z
    original_mean = z.mean()
    z = z * multipliers.reshape(multipliers.shape + (1,)).expand(z.shape)
    if option == "Original":
        z = z * (original_mean / z.mean())
    return z


class TextConditionalModel(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.chunk_length = 75
        self.is_trainable = False
        self.input_key = "txt"
        self.return_pooled = False
        self.comma_token = None
        self.id_start = None
        self.id_end = None
        self.id_pad = None

    def empty_chunk(self):
        chunk = PromptChunk()
        chunk.tokens = [self.id_start] + [self.id_end] * (self.chunk_length + 1)
        chunk.multipliers = [1.0] * (self.chunk_length + 2)
        return chunk

    def get_target_prompt_token_count(self, token_count):
        return math.ceil(max(token_count, 1) / self.chunk_length) * self.chunk_length

    def tokenize(self, texts):
        raise NotImplementedError

    def encode_with_transformers(self, tokens):
        raise NotImplementedError

    def tokenize_line(self, line):
        """(chunks, token count) of one prompt: each chunk 77 tokens with their emphasis multipliers."""
        if shared.opts.data.get("emphasis", "Original") != "None":
            parsed = prompt_parser.parse_prompt_attention(line)
        else:
            parsed = [[line, 1.0]]
        tokenized = self.tokenize([text for text, _ in parsed])
        chunks = []
        chunk = PromptChunk()
        token_count = 0

        def next_chunk():
            nonlocal token_count, chunk
            token_count += len(chunk.tokens)
            to_add = self.chunk_length - len(chunk.tokens)
            if to_add > 0:
                chunk.tokens += [self.id_end] * to_add
                chunk.multipliers += [1.0] * to_add
            chunk.tokens = [self.id_start] + chunk.tokens + [self.id_end]
            chunk.multipliers = [1.0] + chunk.multipliers + [1.0]
            chunks.append(chunk)
            chunk = PromptChunk()

        for tokens, (_, weight) in zip(tokenized, parsed):
            for token in tokens:
                if len(chunk.tokens) == self.chunk_length:
                    next_chunk()
                chunk.tokens.append(token)
                chunk.multipliers.append(weight)
        if chunk.tokens or not chunks:
            next_chunk()
        return chunks, token_count

    def process_texts(self, texts):
        token_count = 0
        cache = {}
        batch_chunks = []
        for line in texts:
            if line not in cache:
                cache[line] = self.tokenize_line(line)
            chunks, current_token_count = cache[line]
            token_count = max(current_token_count, token_count)
            batch_chunks.append(chunks)
        return batch_chunks, token_count

    def forward(self, texts):
        batch_chunks, _ = self.process_texts(texts)
        chunk_count = max(len(x) for x in batch_chunks)
        zs = []
        for i in range(chunk_count):
            batch_chunk = [chunks[i] if i < len(chunks) else self.empty_chunk() for chunks in batch_chunks]
            zs.append(self.process_tokens([x.tokens for x in batch_chunk], [x.multipliers for x in batch_chunk]))
        if self.return_pooled:
            return torch.hstack(zs), zs[0].pooled
        return torch.hstack(zs)

    def process_tokens(self, remade_batch_tokens, batch_multipliers):
        tokens = torch.asarray(remade_batch_tokens).to(devices.device)
        if self.id_end != self.id_pad:  # open_clip: everything after the first EOS is padding
            for batch_pos in range(len(remade_batch_tokens)):
                index = remade_batch_tokens[batch_pos].index(self.id_end)
                tokens[batch_pos, index + 1:tokens.shape[1]] = self.id_pad
        z = self.encode_with_transformers(tokens)
        pooled = getattr(z, "pooled", None)
        z = apply_emphasis(z, torch.asarray(batch_multipliers).to(z))
        if pooled is not None:
            z.pooled = pooled
        return z


class FrozenCLIPEmbedderWithCustomWordsBase(TextConditionalModel):
    def __init__(self, wrapped, hijack):
        super().__init__()
        self.hijack = hijack
        self.wrapped = wrapped
        self.is_trainable = getattr(wrapped, "is_trainable", False)
        self.input_key = getattr(wrapped, "input_key", "txt")
        self.return_pooled = getattr(self.wrapped, "return_pooled", False)
        self.legacy_ucg_val = None


class FrozenCLIPEmbedderWithCustomWords(FrozenCLIPEmbedderWithCustomWordsBase):
    """SD1's `cond_stage_model`: `.wrapped` is ldm's FrozenCLIPEmbedder (`.transformer` HF CLIPTextModel,
    `.tokenizer` HF CLIPTokenizer); clip skip from `opts.CLIP_stop_at_last_layers`."""

    def __init__(self, wrapped, hijack):
        super().__init__(wrapped, hijack)
        self.tokenizer = wrapped.tokenizer
        vocab = self.tokenizer.get_vocab()
        self.comma_token = vocab.get(",</w>", None)
        self.id_start = self.wrapped.tokenizer.bos_token_id
        self.id_end = self.wrapped.tokenizer.eos_token_id
        self.id_pad = self.id_end

    def tokenize(self, texts):
        return self.wrapped.tokenizer(texts, truncation=False, add_special_tokens=False)["input_ids"]

    def encode_with_transformers(self, tokens):
        clip_skip = shared.opts.CLIP_stop_at_last_layers
        outputs = self.wrapped.transformer(input_ids=tokens, output_hidden_states=True)
        if clip_skip > 1:
            z = outputs.hidden_states[-clip_skip]
            z = self.wrapped.transformer.text_model.final_layer_norm(z)
        else:
            z = outputs.last_hidden_state
        return z


class FrozenCLIPEmbedderForSDXLWithCustomWords(FrozenCLIPEmbedderWithCustomWords):
    """SDXL's `conditioner.embedders[0]` (CLIP-L): the wrapped embedder's `layer` ("hidden", layer_idx 11), no final
    layer norm."""

    def encode_with_transformers(self, tokens):
        outputs = self.wrapped.transformer(input_ids=tokens, output_hidden_states=self.wrapped.layer == "hidden")
        if self.wrapped.layer == "last":
            return outputs.last_hidden_state
        return self.wrapped.hidden_layer(outputs.hidden_states)
