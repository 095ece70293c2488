"""Neo backend/text_processing/emphasis.py: `opts.emphasis` — "Original" scales each token's vector by its weight and
restores the mean of z, "No norm" only scales, "None" (and "Ignore") leave z as it is."""

from __future__ import annotations


class Emphasis:
    name = "Base"

    def __init__(self):
        self.tokens = None
        self.multipliers = None
        self.z = None

    def after_transformers(self):
        pass


class EmphasisNone(Emphasis):
    name = "None"


class EmphasisIgnore(Emphasis):
    name = "Ignore"


class EmphasisOriginal(Emphasis):
    name = "Original"

    def after_transformers(self):
        original_mean = self.z.mean()
        self.z = self.z * self.multipliers.reshape(self.multipliers.shape + (1,)).expand(self.z.shape)
        self.z = self.z * (original_mean / self.z.mean())


class EmphasisOriginalNoNorm(EmphasisOriginal):
    name = "No norm"

    def after_transformers(self):
        self.z = self.z * self.multipliers.reshape(self.multipliers.shape + (1,)).expand(self.z.shape)


options = [EmphasisIgnore, EmphasisOriginal, EmphasisOriginalNoNorm, EmphasisNone]


def get_current_option(emphasis_option_name):
    return next(iter([x for x in options if x.name == emphasis_option_name]), EmphasisOriginal)
