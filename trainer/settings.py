"""The settings table: one row per upstream setting (its name is the JSON key), and everything built from it —
validation, typed values, JSON import/export in upstream's format, `--set key=value`.

Raw values are what a UI widget holds (textboxes: strings; checkboxes: bools; dropdowns: their choice; blocks: a
list). `validate(raw, mode)` turns them into a frozen `Settings`; a bad value is an error naming the setting and
the value, never silently replaced by a default.
"""

from __future__ import annotations

import ast
import enum
import math
import re
from dataclasses import dataclass
from types import MappingProxyType

from .engine.loss import LOSSES
from .engine.optim import OPTIMIZER_ENTRIES, SCHEDULES
from .errors import UserError
from .models.devices import PRECISIONS
from .modes.registry import MODES as MODE_ENTRIES
from .modes.registry import Panel
from .networks.blocks import BLOCK_IDS
from .networks.targets import ELEMENTS
from .networks.types import NETWORK_TYPES
from .sampling.samplers import SAMPLERS

MODES = tuple(MODE_ENTRIES)


class Kind(str, enum.Enum):
    """The widget a setting has."""

    DROPDOWN = "dropdown"
    TEXT = "text"
    CHECK = "check"
    BLOCKS = "blocks"


class Cast(str, enum.Enum):
    """How a raw widget value becomes a typed one (`cast`)."""

    STR = "str"
    INT = "int"
    FLOAT = "float"
    OPT_FLOAT = "opt_float"  # empty or 0 → None
    BOOL = "bool"
    SIZE = "size"  # "H,W" → (H, W)
    KV = "kv"  # "k=v; k=v" → dict
    BLOCKS = "blocks"
    CHOICE = "choice"
    OPT_SIZE = "opt_size"  # empty → None (the mode's own size), else as SIZE
    FLOATS = "floats"  # "-1, 0, 1" → (-1.0, 0.0, 1.0); empty → ()


class Column(str, enum.Enum):
    """Where the widget sits in the tab (upstream's three Required and three Option columns)."""

    REQ1 = "req1"
    REQ2 = "req2"
    REQ3 = "req3"
    REQ_ROW = "req_row"  # the row under the required columns (network_blocks)
    OPT1 = "opt1"
    OPT2 = "opt2"
    OPT3 = "opt3"
    EXT1 = "ext1"  # beyond upstream: sample previews
    EXT2 = "ext2"  # beyond upstream: resume and evaluation
    EXT3 = "ext3"  # beyond upstream: noise and captions


SEPARATOR = "--------------------------"


def _with_separators(entries) -> tuple[str, ...]:
    names, group = [], entries[0].group
    for entry in entries:
        if entry.group != group:
            names.append(SEPARATOR)
            group = entry.group
        names.append(entry.name)
    return tuple(names)


OPTIMIZERS = _with_separators(OPTIMIZER_ENTRIES)
SCHEDULERS = tuple(SCHEDULES)
RANKS = (4, 8, 16, 32, 64, 128, 256, 512, 1024)
ALPHAS = (0.03125, 0.0625, 0.125, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
TRAIN_PRECISIONS = tuple(PRECISIONS)
# "model" keeps the checkpoint's dtype; "int8" is upstream's choice for DiT models, refused with a reason.
MODEL_PRECISIONS = ("model", *TRAIN_PRECISIONS, "int8")
SAVE_PRECISIONS = ("model", *TRAIN_PRECISIONS)


@dataclass(frozen=True)
class Setting:
    name: str  # upstream's exact name: the JSON key and (with "_" → " ") the UI label
    kind: Kind
    default: object  # the raw widget value
    cast: Cast
    panels: Panel  # where the widget is shown
    column: Column
    help: str
    choices: tuple = ()
    minimum: float | None = None  # for numbers: smallest allowed value
    positive: bool = False  # for numbers: must be > 0
    upstream: bool = True  # False: a setting of ours (upstream ignores the key in its JSON files)

    @property
    def key(self) -> str:
        """The attribute name: the upstream name up to its first "(" (`image_size`, `network_blocks`)."""
        return self.name.split("(")[0]

    @property
    def label(self) -> str:
        return self.name.replace("_", " ")

    def shown_in(self, mode: str) -> bool:
        return bool(MODE_ENTRIES[mode].panel & self.panels)

    @property
    def in_second_pass(self) -> bool:
        return bool(Panel.SECOND_PASS & self.panels)


def _s(name, kind, default, cast, panels, column, help, choices=(), minimum=None, positive=False, upstream=True):
    return Setting(name, kind, default, cast, panels, column, help, tuple(choices), minimum, positive, upstream)


# Short names for the table below.
DROPDOWN, TEXT, CHECK, BLOCKS = Kind
STR, INT, FLOAT, OPT_FLOAT, BOOL, SIZE, KV, BLOCK_LIST, CHOICE, OPT_SIZE, FLOATS = Cast
REQ1, REQ2, REQ3, REQ_ROW, OPT1, OPT2, OPT3, EXT1, EXT2, EXT3 = Column
L, I, D, E, A, M = Panel  # E: the Difference 2nd-pass column (upstream's "D2")
ALL = L | I | D | E | A | M
NOWHERE = Panel(0)


# fmt: off
TABLE: tuple[Setting, ...] = (
    # -- required parameters -----------------------------------------------------------------------------------
    _s("network_type", DROPDOWN, "lierla", CHOICE, ALL, REQ1,
       "lierla = LoRA on attention layers; c3lier = LoCon (also ResNet and sampler convs); loha = LyCORIS LoHa",
       tuple(NETWORK_TYPES)),
    _s("network_rank", DROPDOWN, 16, INT, ALL, REQ1, "rank (dim) of linear and 1×1 layers", RANKS, minimum=1),
    _s("network_alpha", DROPDOWN, 8, FLOAT, ALL, REQ1, "alpha; the learned delta is scaled by alpha/rank",
       ALPHAS, minimum=0),
    _s("lora_data_directory", TEXT, "", STR, L | D | M, REQ1, "folder of training images (searched recursively)"),
    _s("diff_target_name", TEXT, "", STR, M, REQ1,
       "file-name suffix of the target image of a pair, e.g. _after for cat.png / cat_after.png"),
    _s("lora_trigger_word", TEXT, "", STR, L | D | A | M, REQ1, "put in front of every caption"),
    _s("image_size(height, width)", TEXT, "512", SIZE, L | I | M, REQ2, "\"H,W\" or one side, in pixels"),
    _s("train_iterations", TEXT, "1000", INT, ALL, REQ2, "number of optimizer steps", minimum=1),
    _s("train_batch_size", TEXT, "2", INT, ALL, REQ2, "images per step", minimum=1),
    _s("train_learning_rate", TEXT, "1e-4", FLOAT, ALL, REQ2, "learning rate (UNet)", positive=True),
    _s("train_optimizer", DROPDOWN, "AdamW", CHOICE, ALL, REQ3, "optimizer", OPTIMIZERS),
    _s("train_optimizer_settings", TEXT, "", KV, ALL, REQ3,
       "extra optimizer arguments: key=value separated by ; or new lines, e.g. weight_decay=0.01;betas=(0.9,0.99)"),
    _s("train_lr_scheduler", DROPDOWN, "cosine", CHOICE, ALL, REQ3, "learning-rate schedule", SCHEDULERS),
    _s("train_lr_scheduler_settings", TEXT, "", KV, ALL, REQ3,
       "extra scheduler arguments, same syntax, e.g. eta_min=1e-5"),
    _s("save_lora_name", TEXT, "", STR, L | I | D | A | M, REQ3, "file name of the LoRA (empty: untitled)"),
    _s("use_gradient_checkpointing", CHECK, False, BOOL, ALL, REQ3, "less memory, slower steps"),
    _s("network_blocks(BASE = TextEncoder)", BLOCKS, list(BLOCK_IDS), BLOCK_LIST, ALL, REQ_ROW,
       "blocks to train; BASE is the text encoder", BLOCK_IDS),
    # -- option parameters, column 1 -----------------------------------------------------------------------------
    _s("network_resume", TEXT, "", STR, L | D | M, OPT1, "path of a LoRA to continue training"),
    _s("network_strength", TEXT, "1", FLOAT, ALL, OPT1, "the saved delta is multiplied by this", positive=True),
    _s("network_conv_rank", DROPDOWN, 0, INT, ALL, OPT1, "rank of k×k convs (c3lier, loha); 0 = network_rank",
       (0, *RANKS), minimum=0),
    _s("network_conv_alpha", DROPDOWN, 0, FLOAT, ALL, OPT1, "alpha of k×k convs; 0 = network_alpha",
       (0, *ALPHAS), minimum=0),
    _s("network_element", DROPDOWN, "Full", CHOICE, ALL, OPT1,
       "Full, or only cross-attention (attn2) or self-attention (attn1) layers", ELEMENTS),
    _s("network_train_text_encoder", CHECK, False, BOOL, I, OPT1,
       "iLECO: also train the text encoder (the same as selecting BASE in network_blocks)"),
    _s("image_buckets_step", DROPDOWN, 256, INT, L | D | M, OPT1, "bucket side increment in pixels",
       (0, 64, 128, 192, 256, 320, 384, 448, 512, 576)),
    _s("image_num_multiply", TEXT, "1", INT, L | D | M, OPT1, "repeat the image list this many times", minimum=1),
    _s("image_min_length", TEXT, "512", INT, L | D | M, OPT1, "smallest bucket side in pixels", minimum=8),
    _s("image_max_ratio", TEXT, "2", FLOAT, L | D | M, OPT1, "largest bucket aspect ratio", minimum=1),
    _s("sub_image_num", TEXT, "0", INT, L | D | M, OPT1, "extra downscaled copies of each image", minimum=0),
    _s("image_mirroring", CHECK, False, BOOL, L | D | M, OPT1, "also train on horizontally flipped copies"),
    _s("image_use_filename_as_tag", CHECK, False, BOOL, L | D | M, OPT1, "caption = trigger + tags from the file name"),
    _s("image_disable_upscale", CHECK, False, BOOL, L | D | M, OPT1, "skip buckets that would need upscaling"),
    _s("train_fixed_timsteps_in_batch", CHECK, False, BOOL, ALL, OPT1, "one timestep for the whole batch"),
    # -- option parameters, column 2 -----------------------------------------------------------------------------
    _s("train_textencoder_learning_rate", TEXT, "", OPT_FLOAT, L, OPT2,
       "text-encoder learning rate; empty or 0 = train_learning_rate", minimum=0),
    _s("train_seed", TEXT, "-1", INT, ALL, OPT2, "random seed; -1 = pick one (recorded in the file)"),
    _s("train_min_timesteps", TEXT, "0", INT, ALL, OPT2, "smallest training timestep", minimum=0),
    _s("train_max_timesteps", TEXT, "1000", INT, ALL, OPT2, "largest training timestep (exclusive)", minimum=1),
    _s("train_loss_function", DROPDOWN, "MSE", CHOICE, ALL, OPT2, "loss", LOSSES),
    _s("train_lr_step_rules", TEXT, "", STR, ALL, OPT2, "piecewise_constant rules, e.g. 1:10,0.1:20,0.01"),
    _s("train_lr_warmup_steps", TEXT, "0", INT, ALL, OPT2, "warm-up steps (diffusers schedules)", minimum=0),
    _s("train_lr_scheduler_num_cycles", TEXT, "1", INT, ALL, OPT2, "cycles of cosine_with_restarts", minimum=1),
    _s("train_lr_scheduler_power", TEXT, "1.0", FLOAT, ALL, OPT2, "power of the polynomial schedule",
       positive=True),
    _s("train_snr_gamma", TEXT, "5", FLOAT, ALL, OPT2, "min-SNR-γ loss weight; 0 or less turns it off"),
    _s("save_per_steps", TEXT, "0", INT, ALL, OPT2, "also save every N steps; 0 = only at the end", minimum=0),
    _s("diff_alt_ratio", TEXT, "1", FLOAT, A | M, OPT2,
       "strength of the reverse step; below 0 the odd steps keep pure noise unchanged"),
    _s("diff_revert_original_target", CHECK, False, BOOL, A | M, OPT2, "swap original and target"),
    _s("diff_use_diff_mask", CHECK, False, BOOL, A | M, OPT2, "train only where the pair differs"),
    # -- option parameters, column 3 -----------------------------------------------------------------------------
    _s("train_model_precision", DROPDOWN, "fp16", CHOICE, ALL, OPT3,
       "dtype of the frozen model (computed in fp32 on a CPU when fp16 is chosen)", MODEL_PRECISIONS),
    _s("train_lora_precision", DROPDOWN, "fp32", CHOICE, ALL, OPT3, "dtype of the trained weights",
       TRAIN_PRECISIONS),
    _s("save_precision", DROPDOWN, "fp16", CHOICE, ALL, OPT3, "dtype of the saved file", SAVE_PRECISIONS),
    _s("train_VAE_precision", DROPDOWN, "fp32", CHOICE, ALL, OPT3, "dtype of the VAE while encoding images",
       TRAIN_PRECISIONS),
    _s("diff_load_1st_pass", TEXT, "", STR, D, OPT3, "use this saved copier LoRA instead of training pass 1"),
    _s("diff_save_1st_pass", CHECK, False, BOOL, D, OPT3, "also save the copier as <name>_copy"),
    _s("diff_1st_pass_only", CHECK, False, BOOL, D, OPT3, "stop after pass 1 (and save the copier)"),
    _s("logging_save_csv", CHECK, False, BOOL, L | I | D | A | M, OPT3, "write a CSV loss log under logs/"),
    _s("logging_verbose", CHECK, False, BOOL, L | I | D | A | M, OPT3, "print LoRA module names and dataset counts"),
    _s("save_overwrite", CHECK, False, BOOL, ALL, OPT3, "replace an existing file of the same name"),
    _s("save_as_json", CHECK, False, BOOL, L | I | D | A | M, OPT3, "save these settings under json/ at start"),
    _s("model_v_pred", CHECK, False, BOOL, ALL, OPT3,
       "v-prediction model (SD2-768-v and similar); when unticked it is detected from the model files"),
    _s("use_2nd_pass_settings", CHECK, False, BOOL, E, OPT3,
       "train pass 2 of Difference with the settings in this column"),
    # -- ours ------------------------------------------------------------------------------------------------------
    _s("diff_random_timesteps_in_span", CHECK, False, BOOL, A | M, OPT2,
       "ADDifT: draw each timestep at random inside its tenth of [min, max) instead of upstream's fixed values",
       upstream=False),
    # -- ours, beyond upstream: kohya sd-scripts' names, every default off (upstream presets train as before) -------
    _s("sample_every_n_steps", TEXT, "-1", INT, L | I | D | A | M, EXT1,
       "sample previews every N steps; 0 = only at the end; -1 = no previews", minimum=-1, upstream=False),
    _s("sample_prompts", TEXT, "", STR, L | I | D | A | M, EXT1,
       "preview prompts, one per line; empty: the job's own prompts (LoRA: the first caption)", upstream=False),
    _s("sample_multipliers", TEXT, "", FLOATS, L | I | D | A | M, EXT1,
       "LoRA multipliers of each preview row, e.g. -1, 0, 1; empty: 1 (LoRA), 0, 1 (iLECO), -1, 0, 1 (sliders)",
       upstream=False),
    _s("sample_sampler", DROPDOWN, "euler", CHOICE, L | I | D | A | M, EXT1, "preview sampler (diffusers)",
       tuple(SAMPLERS), upstream=False),
    _s("sample_steps", TEXT, "20", INT, L | I | D | A | M, EXT1, "sampler steps of a preview", minimum=1,
       upstream=False),
    _s("sample_cfg", TEXT, "7", FLOAT, L | I | D | A | M, EXT1, "classifier-free guidance scale of a preview",
       minimum=1, upstream=False),
    _s("sample_seed", TEXT, "-1", INT, L | I | D | A | M, EXT1, "preview seed; -1 = the training seed",
       minimum=-1, upstream=False),
    _s("sample_size", TEXT, "", OPT_SIZE, L | I | D | A | M, EXT1,
       "\"H,W\" of a preview; empty: image_size (LoRA, iLECO) or the model's resolution", upstream=False),
    _s("save_state", CHECK, False, BOOL, L | I | D | A | M, EXT2,
       "with each periodic save (and Stop and Save) also save the training state, to resume from", upstream=False),
    _s("resume", TEXT, "", STR, L | I | D | A | M, EXT2,
       "folder of a saved training state (<name>_<N>steps-state) to continue", upstream=False),
    _s("cache_latents_to_disk", CHECK, False, BOOL, L | M, EXT2,
       "keep the VAE's latents (and frozen captions' conditionings) beside the images; the next run on the same "
       "images skips the VAE", upstream=False),
    _s("eval_every_n_steps", TEXT, "0", INT, L | I | D | A | M, EXT2,
       "evaluation loss on a fixed held-out set every N steps; 0 = off", minimum=0, upstream=False),
    _s("noise_offset", TEXT, "0", FLOAT, L | D | A | M, EXT3,
       "add this much per-channel constant noise (darker darks, brighter brights); 0 = off, 0.05–0.1 typical",
       minimum=0, upstream=False),
    _s("multires_noise_iterations", TEXT, "0", INT, L | D | A | M, EXT3,
       "pyramid (multi-resolution) noise levels; 0 = off, 6–10 typical", minimum=0, upstream=False),
    _s("multires_noise_discount", TEXT, "0.3", FLOAT, L | D | A | M, EXT3,
       "weight of each coarser pyramid level (discount^level)", minimum=0, upstream=False),
    _s("debiased_estimation_loss", CHECK, False, BOOL, L | I | D | A | M, EXT3,
       "weight the loss by 1/√SNR (ε) or 1/(SNR+1) (v), Yu et al. 2023", upstream=False),
    _s("caption_dropout_rate", TEXT, "0", FLOAT, L, EXT3,
       "chance that a step trains an image with an empty caption", minimum=0, upstream=False),
    _s("shuffle_caption", CHECK, False, BOOL, L, EXT3,
       "shuffle the comma-separated tags of each caption at every step", upstream=False),
    _s("keep_tokens", TEXT, "0", INT, L, EXT3,
       "keep the first N tags in place when shuffling", minimum=0, upstream=False),
)
# fmt: on

UPSTREAM = tuple(s for s in TABLE if s.upstream)
BY_NAME = MappingProxyType({s.name: s for s in TABLE})
BY_KEY = MappingProxyType({s.key: s for s in TABLE})
# Settings a 2nd pass of Difference takes from its own column (everything else comes from pass 1).
SECOND_PASS_KEYS = tuple(s.key for s in TABLE if s.in_second_pass and s.key != "use_2nd_pass_settings")


def lookup(name: str) -> Setting:
    """A setting by its upstream name or its short key (`image_size`); unknown names list the known ones."""
    setting = BY_NAME.get(name) or BY_KEY.get(name)
    if setting is None:
        raise UserError(f"unknown setting {name!r}; known: {', '.join(BY_NAME)}")
    return setting


# -- casting ---------------------------------------------------------------------------------------------------
def _number(setting: Setting, value, kind):
    text = str(value).strip() if not isinstance(value, (int, float)) or isinstance(value, bool) else value
    try:
        if kind == INT:
            number = float(text)
            if not number.is_integer():
                raise ValueError
            number = int(number)
        else:
            number = float(text)
    except (TypeError, ValueError):
        what = "a whole number" if kind == INT else "a number"
        raise UserError(f"{setting.name}: {value!r} is not {what}") from None
    if not math.isfinite(number):
        raise UserError(f"{setting.name}: {value!r} must be a finite number")
    if setting.positive and not number > 0:
        raise UserError(f"{setting.name}: {value!r} must be greater than 0")
    if setting.minimum is not None and number < setting.minimum:
        raise UserError(f"{setting.name}: {value!r} must be at least {setting.minimum:g}")
    return number


def parse_size(setting: Setting, value) -> tuple[int, int]:
    """"H,W" or "S" → (H, W) in pixels, each a positive multiple of 8."""
    parts = [p for p in re.split(r"[,x×\s]+", str(value).strip()) if p]
    if len(parts) == 1:
        parts = parts * 2
    try:
        height, width = (int(p) for p in parts)
    except ValueError:
        raise UserError(f"{setting.name}: {value!r} is not \"height,width\" or one size in pixels") from None
    if height < 8 or width < 8 or height % 8 or width % 8:
        raise UserError(f"{setting.name}: {value!r} must be positive multiples of 8")
    return height, width


def parse_floats(setting: Setting, value) -> tuple[float, ...]:
    """"-1, 0, 1" (commas or spaces) or a JSON list → finite floats; empty → ()."""
    if isinstance(value, (list, tuple)):
        items = value
    else:
        items = [p for p in re.split(r"[,\s]+", str(value or "").strip()) if p]
    out = []
    for item in items:
        try:
            number = float(item)
        except (TypeError, ValueError):
            raise UserError(f"{setting.name}: {item!r} is not a number (write e.g. -1, 0, 1)") from None
        if not math.isfinite(number):
            raise UserError(f"{setting.name}: {item!r} must be a finite number")
        out.append(number)
    return tuple(out)


def parse_kv(setting: Setting, value) -> dict:
    """`k=v` pairs separated by `;` or new lines; values are Python literals (a bare word stays a string)."""
    out = {}
    for item in re.split(r"[;\n]", str(value or "")):
        item = item.strip()
        if not item:
            continue
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key.isidentifier():
            raise UserError(f"{setting.name}: {item!r} is not key=value")
        text = text.strip()
        try:
            out[key] = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            out[key] = text
    return out


def _bool(setting: Setting, value) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes", "on"):
        return True
    if text in ("false", "0", "no", "off", ""):
        return False
    raise UserError(f"{setting.name}: {value!r} is not true or false")


def _choice(setting: Setting, value) -> str:
    text = str(value).strip()
    if setting.name == "train_optimizer":
        by_lower = {c.lower(): c for c in setting.choices if c != SEPARATOR}
        if text.lower() in by_lower:
            return by_lower[text.lower()]
    elif text in setting.choices:
        return text
    known = ", ".join(c for c in setting.choices if c != SEPARATOR)
    raise UserError(f"{setting.name}: {value!r} is not one of {known}")


def _blocks(setting: Setting, value) -> tuple[str, ...]:
    if isinstance(value, str):
        items = [b.strip() for b in value.split(",")]
    elif isinstance(value, (list, tuple)) and all(isinstance(b, str) for b in value):
        items = list(value)
    elif value is None:
        items = []
    else:
        raise UserError(f"{setting.name}: {value!r} is not a list of block names")
    unknown = [b for b in items if b not in BLOCK_IDS]
    if unknown:
        raise UserError(f"{setting.name}: unknown block(s) {unknown}; known: {', '.join(BLOCK_IDS)}")
    return tuple(b for b in BLOCK_IDS if b in items)


def cast(setting: Setting, value):
    kind = setting.cast
    if kind in (INT, FLOAT):
        return _number(setting, value, kind)
    if kind == OPT_FLOAT:
        text = str(value if value is not None else "").strip()
        return None if text in ("", "0", "0.0") else _number(setting, text, FLOAT)
    if kind == BOOL:
        return _bool(setting, value)
    if kind == SIZE:
        return parse_size(setting, value)
    if kind == KV:
        return parse_kv(setting, value)
    if kind == CHOICE:
        return _choice(setting, value)
    if kind == BLOCK_LIST:
        return _blocks(setting, value)
    if kind == OPT_SIZE:
        return None if str(value if value is not None else "").strip() == "" else parse_size(setting, value)
    if kind == FLOATS:
        return parse_floats(setting, value)
    return "" if value is None else str(value)


# -- Settings ------------------------------------------------------------------------------------------------------
class Settings:
    """Typed, validated, read-only values by short key (`s.train_iterations`, `s.image_size`, `s.network_blocks`),
    and the mode they were validated for (validation has mode-dependent rules; `replace` keeps them)."""

    __slots__ = ("_values", "_raw", "mode")

    def __init__(self, values: dict, raw: dict, mode: str | None = None):
        object.__setattr__(self, "_values", MappingProxyType(dict(values)))
        object.__setattr__(self, "_raw", MappingProxyType(dict(raw)))
        object.__setattr__(self, "mode", mode)

    def __getattr__(self, key):
        try:
            return self._values[key]
        except KeyError:
            raise AttributeError(key) from None

    def __setattr__(self, key, value):
        raise AttributeError("Settings are read-only; use replace()")

    def replace(self, **changes) -> "Settings":
        raw = dict(self._raw)
        for key, value in changes.items():
            raw[lookup(key).name] = value
        return validate(raw, self.mode)

    @property
    def raw(self) -> dict:
        """Upstream-format values by upstream name (what JSON files store)."""
        return dict(self._raw)

    def as_dict(self) -> dict:
        return dict(self._values)


def validate(raw: dict | None = None, mode: str | None = None) -> Settings:
    """Raw widget values by upstream name (missing → default) → Settings, plus the cross-field rules (`mode`
    None: the rules of every mode, but for image_min_length ≤ image_size, which only a bucketing mode needs)."""
    raw = dict(raw or {})
    full = {s.name: raw.get(s.name, s.default) for s in TABLE}
    values = {s.key: cast(s, full[s.name]) for s in TABLE}
    if values["train_optimizer"] == SEPARATOR:
        raise UserError("train_optimizer: the separator line is not an optimizer")
    if values["train_min_timesteps"] >= values["train_max_timesteps"] or values["train_max_timesteps"] > 1000:
        raise UserError(f"train_min_timesteps/train_max_timesteps: need 0 ≤ min < max ≤ 1000 "
                        f"(got {values['train_min_timesteps']} and {values['train_max_timesteps']})")
    uses_buckets = mode is None or mode in ("LoRA", "Multi-ADDifT")
    if uses_buckets and values["image_buckets_step"] <= 0:
        raise UserError("image_buckets_step: 0 is not a bucket step; choose 64 or more")
    seed = values["train_seed"]
    if not -1 <= seed <= SEED_MAX:
        raise UserError(f"train_seed: {seed} is out of range; use -1 (pick one) or 0 … {SEED_MAX}")
    if mode in ("LoRA", "Multi-ADDifT") and values["image_min_length"] > max(values["image_size"]):
        height, width = values["image_size"]
        raise UserError(f"image_min_length: {values['image_min_length']} is larger than image_size {height}x{width}; "
                        f"no bucket could have that side")
    check_output_name(values["save_lora_name"])
    if values["caption_dropout_rate"] > 1:
        raise UserError(f"caption_dropout_rate: {values['caption_dropout_rate']:g} is a chance; use 0 … 1")
    if values["train_model_precision"] == "int8":
        raise UserError("train_model_precision: int8 is for DiT models, which this trainer does not train; "
                        "choose fp16, bf16 or fp32")
    return Settings(values, full, mode)


SEED_MAX = 2**64 - 1  # the largest seed torch's generators take
NAME_BYTES_MAX = 200  # a file name is at most 255 bytes; room for "_copy_<N>steps.safetensors" and temp names


def check_output_name(name: str) -> None:
    """save_lora_name must be a plain, portable file name: no path separators, no ':' (Windows streams), no control
    characters (NUL, new lines), not too long for the file system once suffixed."""
    bad = sorted({c for c in name if c in '/\\:' or ord(c) < 32})
    if bad or name.strip() in ("..", "."):
        shown = ", ".join(repr(c) for c in bad) or repr(name)
        raise UserError(f"save_lora_name: {name!r} must be a plain file name (not allowed: {shown})")
    if len(name.encode("utf-8")) > NAME_BYTES_MAX:
        raise UserError(f"save_lora_name: {len(name.encode('utf-8'))} bytes is too long for a file name "
                        f"(at most {NAME_BYTES_MAX})")


# -- JSON (upstream's format) and the job ---------------------------------------------------------------------
@dataclass(frozen=True)
class Job:
    mode: str
    settings: Settings
    second_pass: Settings | None = None
    model: str = ""
    vae: str = ""
    original_prompt: str = ""
    target_prompt: str = ""
    original_image: str = ""
    target_image: str = ""

    def to_json(self) -> dict:
        data = dict(self.settings.raw)
        data["2nd pass"] = self.second_pass.raw if self.second_pass is not None else None
        data.update({
            "mode": self.mode, "model": self.model, "vae": self.vae, "te": "",
            "original prompt": self.original_prompt, "target prompt": self.target_prompt,
        })
        if self.original_image or self.target_image:
            data.update({"original image": self.original_image, "target image": self.target_image})
        return data


JOB_KEYS = ("2nd pass", "mode", "model", "vae", "te", "original prompt", "target prompt", "original image",
            "target image", "negative prompt")


def job_from_json(data: dict, source: str = "the JSON") -> tuple[Job, list[str]]:
    """A Job from upstream's JSON layout, and the keys it did not know (reported by the caller, once)."""
    if not isinstance(data, dict):
        raise UserError(f"{source}: expected a JSON object of settings")
    mode = str(data.get("mode") or "LoRA")
    if mode not in MODES:
        raise UserError(f"{source}: mode {mode!r} is not one of {', '.join(MODES)}")
    unknown = sorted(k for k in data if k not in BY_NAME and k not in JOB_KEYS)
    first = {k: v for k, v in data.items() if k in BY_NAME}
    settings = validate(first, mode)
    second = None
    if isinstance(data.get("2nd pass"), dict):
        second = validate({**first, **{k: v for k, v in data["2nd pass"].items() if k in BY_NAME}}, mode)
    job = Job(
        mode=mode, settings=settings, second_pass=second,
        model=_optional_file(data.get("model")), vae=_optional_file(data.get("vae")),
        original_prompt=str(data.get("original prompt") or ""), target_prompt=str(data.get("target prompt") or ""),
        original_image=str(data.get("original image") or ""), target_image=str(data.get("target image") or ""),
    )
    return job, unknown


def _optional_file(value) -> str:
    """Upstream writes "None" for an unselected model/VAE dropdown."""
    text = str(value or "").strip()
    return "" if text in ("None", "none") else text


def apply_overrides(data: dict, assignments: list[str]) -> dict:
    """`--set key=value` on a JSON dict; keys by upstream name or short key, plus the job keys."""
    data = dict(data)
    for assignment in assignments:
        full = next((n for n in BY_NAME if assignment.startswith(n + "=")), None)  # names may contain "="
        key, sep, value = (full, "=", assignment[len(full) + 1:]) if full else assignment.partition("=")
        key = key.strip()
        if not sep:
            raise UserError(f"--set {assignment!r}: expected key=value")
        if key in JOB_KEYS or key.replace("_", " ") in JOB_KEYS:
            data[key.replace("_", " ")] = value
            continue
        setting = lookup(key)
        if setting.kind == BLOCKS:
            data[setting.name] = [b.strip() for b in value.split(",") if b.strip()]
        else:
            data[setting.name] = value
    return data
