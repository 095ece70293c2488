"""Neo backend/text_processing/classic_engine.py: `ClassicTextProcessingEngine`, prompts → (B, 77·k, D).

A prompt is parsed for emphasis (`(a:1.3)`, `(a)` ×1.1, `[a]` ÷1.1; `emphasis_name`), tokenized without truncation,
cut into 75-token chunks framed by BOS/EOS and padded to 77, encoded chunk by chunk and concatenated. Clip skip: the
last layer (`clip_skip` 1, after the final layer norm) or `hidden_states[-clip_skip]` (then the final layer norm only
with `final_layer_norm`); `minimal_clip_skip` bounds it from below (SDXL: 2). With `return_pooled`, also the pooled
output of the first chunk (through `text_projection` when asked). Textual inversion and comma back-tracking at chunk
borders are not faked."""

from __future__ import annotations

import math
import re

import torch

from backend.text_processing import emphasis

re_attention = re.compile(r"""
\\\(|\\\)|\\\[|\\]|\\\\|\\|
\(|\[|
:\s*([+-]?[.\d]+)\s*\)|
\)|]|
[^\\()\[\]:]+|
:
""", re.VERBOSE)
re_break = re.compile(r"\s*\bBREAK\b\s*", re.S)


def parse_prompt_attention(text):
    """[[text, weight], ...] as A1111's parser (BREAK kept as its own ["BREAK", -1] entry)."""
    res = []
    round_brackets = []
    square_brackets = []

    def multiply_range(start, multiplier):
        for p in range(start, len(res)):
            res[p][1] *= multiplier

    for m in re_attention.finditer(text):
        token, weight = m.group(0), m.group(1)
        if token.startswith("\\"):
            res.append([token[1:], 1.0])
        elif token == "(":
            round_brackets.append(len(res))
        elif token == "[":
            square_brackets.append(len(res))
        elif weight is not None and round_brackets:
            multiply_range(round_brackets.pop(), float(weight))
        elif token == ")" and round_brackets:
            multiply_range(round_brackets.pop(), 1.1)
        elif token == "]" and square_brackets:
            multiply_range(square_brackets.pop(), 1 / 1.1)
        else:
            parts = re.split(re_break, token)
            for i, part in enumerate(parts):
                if i > 0:
                    res.append(["BREAK", -1])
                res.append([part, 1.0])
    for pos in round_brackets:
        multiply_range(pos, 1.1)
    for pos in square_brackets:
        multiply_range(pos, 1 / 1.1)
    if not res:
        res = [["", 1.0]]
    i = 0
    while i + 1 < len(res):
        if res[i][1] == res[i + 1][1]:
            res[i][0] += res[i + 1][0]
            res.pop(i + 1)
        else:
            i += 1
    return res


class PromptChunk:
    def __init__(self):
        self.tokens = []
        self.multipliers = []


class ClassicTextProcessingEngine:
    def __init__(self, text_encoder, tokenizer, chunk_length=75, embedding_dir=None, embedding_key="clip_l",
                 embedding_expected_shape=768, emphasis_name="Original", text_projection=False,
                 minimal_clip_skip=1, clip_skip=1, return_pooled=False, final_layer_norm=True):
        self.text_encoder = text_encoder  # an IntegratedCLIP
        self.tokenizer = tokenizer
        self.chunk_length = chunk_length
        self.embedding_key = embedding_key
        self.emphasis = emphasis.get_current_option(emphasis_name)()
        self.text_projection = text_projection
        self.minimal_clip_skip = minimal_clip_skip
        self.clip_skip = clip_skip
        self.return_pooled = return_pooled
        self.final_layer_norm = final_layer_norm
        self.id_start = tokenizer.bos_token_id
        self.id_end = tokenizer.eos_token_id
        self.id_pad = tokenizer.pad_token_id

    def empty_chunk(self):
        chunk = PromptChunk()
        chunk.tokens = [self.id_start] + [self.id_end] * (self.chunk_length + 1)
        chunk.multipliers = [1.0] * (self.chunk_length + 2)
        return chunk

    def get_target_prompt_token_count(self, token_count):
        return math.ceil(max(token_count, 1) / self.chunk_length) * self.chunk_length

    def tokenize(self, texts):
        return self.tokenizer(texts, truncation=False, add_special_tokens=False)["input_ids"]

    def tokenize_line(self, line):
        """(chunks, token count): each chunk 77 tokens (BOS, 75, EOS + pad) with its emphasis multipliers."""
        parsed = parse_prompt_attention(line) if self.emphasis.name != "None" else [[line, 1.0]]
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

        for tokens, (text, weight) in zip(tokenized, parsed):
            if text == "BREAK" and weight == -1:
                next_chunk()
                continue
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
            if line in cache:
                chunks = cache[line]
            else:
                chunks, current = self.tokenize_line(line)
                token_count = max(current, token_count)
                cache[line] = chunks
            batch_chunks.append(chunks)
        return batch_chunks, token_count

    def encode_with_transformers(self, tokens):
        transformer = self.text_encoder.transformer
        embeddings = transformer.text_model.embeddings
        embeddings.to(torch.float32)  # as Neo: the embedding modules become fp32 in place
        clip_skip = max(int(self.clip_skip), int(self.minimal_clip_skip))
        outputs = transformer(input_ids=tokens, output_hidden_states=True)
        if clip_skip > 1:
            z = outputs.hidden_states[-clip_skip]
            if self.final_layer_norm:
                z = transformer.text_model.final_layer_norm(z)
        else:
            z = outputs.last_hidden_state
        pooled = None
        if self.return_pooled:
            pooled = outputs.pooler_output
            if self.text_projection:
                pooled = transformer.text_projection(pooled)
        return z, pooled

    def process_tokens(self, remade_batch_tokens, batch_multipliers):
        tokens = torch.asarray(remade_batch_tokens)
        if self.id_end != self.id_pad:  # pad after the first EOS of each row
            for batch_pos in range(len(remade_batch_tokens)):
                index = remade_batch_tokens[batch_pos].index(self.id_end)
                tokens[batch_pos, index + 1:tokens.shape[1]] = self.id_pad
        z, pooled = self.encode_with_transformers(tokens)
        self.emphasis.tokens = remade_batch_tokens
        self.emphasis.multipliers = torch.asarray(batch_multipliers).to(z)
        self.emphasis.z = z
        self.emphasis.after_transformers()
        return self.emphasis.z, pooled

    def __call__(self, texts):
        batch_chunks, _ = self.process_texts(texts)
        chunk_count = max(len(x) for x in batch_chunks)
        zs = []
        pooled = None
        for i in range(chunk_count):
            batch_chunk = [chunks[i] if i < len(chunks) else self.empty_chunk() for chunks in batch_chunks]
            z, p = self.process_tokens([x.tokens for x in batch_chunk], [x.multipliers for x in batch_chunk])
            zs.append(z)
            if pooled is None:
                pooled = p
        z = torch.hstack(zs)
        if self.return_pooled:
            return z, pooled
        return z
