"""webui modules/prompt_parser.py: `SdConditioning`, `ScheduledPromptConditioning`, `get_learned_conditioning` and the
emphasis parser. Prompt editing (`[a:b:0.5]`) is not parsed: each prompt has one schedule entry ending at `steps`."""

import re
from collections import namedtuple

ScheduledPromptConditioning = namedtuple("ScheduledPromptConditioning", ["end_at_step", "cond"])

learned_conditioning_calls = []  # test-only: (list of prompts, steps) of every get_learned_conditioning call


class SdConditioning(list):
    """A list of prompts with the image's width/height and whether they are negative prompts (read by SDXL)."""

    def __init__(self, prompts, is_negative_prompt=False, width=None, height=None, copy_from=None):
        super().__init__()
        self.extend(prompts)
        if copy_from is None:
            copy_from = prompts
        self.is_negative_prompt = is_negative_prompt or getattr(copy_from, "is_negative_prompt", False)
        self.width = width or getattr(copy_from, "width", None)
        self.height = height or getattr(copy_from, "height", None)


def get_learned_conditioning(model, prompts, steps, hires_steps=None, use_old_scheduling=False):
    """One list of ScheduledPromptConditioning per prompt. `cond` is a (77·k, D) tensor (SD1/SD2) or a dict
    {"crossattn": (77·k, D), "vector": (V,)} (SDXL). Equal prompts are encoded once; each distinct prompt is one
    `model.get_learned_conditioning(SdConditioning([prompt], copy_from=prompts))` call."""
    learned_conditioning_calls.append((list(prompts), steps))
    res = []
    cache = {}
    for prompt in prompts:
        cached = cache.get(prompt)
        if cached is not None:
            res.append(cached)
            continue
        prompt_schedule = [(steps, prompt)]
        texts = SdConditioning([x[1] for x in prompt_schedule], copy_from=prompts)
        conds = model.get_learned_conditioning(texts)
        cond_schedule = []
        for i, (end_at_step, _) in enumerate(prompt_schedule):
            cond = {k: v[i] for k, v in conds.items()} if isinstance(conds, dict) else conds[i]
            cond_schedule.append(ScheduledPromptConditioning(end_at_step, cond))
        cache[prompt] = cond_schedule
        res.append(cond_schedule)
    return res


re_attention = re.compile(r"""
\\\(|\\\)|\\\[|\\]|\\\\|\\|
\(|\[|
:\s*([+-]?[.\d]+)\s*\)|
\)|]|
[^\\()\[\]:]+|
:
""", re.VERBOSE)


def parse_prompt_attention(text):
    """[[text, weight], ...]: `(a)` ×1.1, `[a]` ÷1.1, `(a:1.5)` ×1.5, nesting multiplies, `\\(` is a literal
    bracket; unclosed brackets apply to the end; runs of equal weight are merged."""
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
            res.append([token, 1.0])
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
