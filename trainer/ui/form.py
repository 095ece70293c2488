"""The tab's form as a plain dict, and its mapping to and from upstream's JSON (no Gradio here).

Form keys: "mode", "model", "vae", the prompts, "use_2nd_pass_settings", and for every setting widget
`field(1, name)` / `field(2, name)`. Pass 1 has a widget for every setting; pass 2 (the Difference accordion) for the
settings its column shows. A missing JSON key takes its default; pass 2 without a "2nd pass" object copies pass 1.
Every JSON value is parsed by `settings.cast`, the parser the CLI uses, so the form holds what a run would train.
"""

from __future__ import annotations

from ..errors import UserError
from ..settings import (BY_NAME, JOB_KEYS, MODES, SECOND_PASS_KEYS, SEPARATOR, TABLE, Cast, Job, Kind, Setting, cast,
                        job_from_json)

USE_2ND = "use_2nd_pass_settings"
FIRST_PASS: tuple[Setting, ...] = tuple(s for s in TABLE if s.name != USE_2ND)
SECOND_PASS: tuple[Setting, ...] = tuple(s for s in TABLE if s.key in SECOND_PASS_KEYS)
PROMPTS = ("original prompt", "target prompt", "negative prompt")
NOT_LOADED = "Not loaded (bad value, the default is kept):"


def field(pass_no: int, name: str) -> str:
    return f"{pass_no}:{name}"


def widget_value(setting: Setting, value):
    """A JSON value as its widget holds it, after `settings.cast` has accepted it (UserError if not, or if a dropdown
    has no choice for it). Dropdowns hold their choice as text (Gradio 3.41 shows numeric choices as blank):
    16 and "16" → "16", "adamw" → "AdamW"; textboxes keep the text as written."""
    typed = cast(setting, value)
    if setting.kind == Kind.DROPDOWN:
        for choice in setting.choices:
            if choice != SEPARATOR and choice == typed:
                return str(choice)
        if takes_custom_value(setting):  # a rank or alpha of the user's own (12, 0.75): the dropdown shows it
            return f"{typed:g}"
        raise UserError(f"{setting.name}: {value!r} is not among the choices the form offers")
    if setting.kind == "check":
        return typed
    if setting.kind == "blocks":
        return list(typed)
    return "" if value is None else str(value)


def takes_custom_value(setting: Setting) -> bool:
    """Numeric dropdowns (ranks, alphas, the bucket step) accept a typed number beside their choices, as the CLI
    and upstream's JSON do."""
    return setting.kind == Kind.DROPDOWN and setting.cast in (Cast.INT, Cast.FLOAT)


def json_value(setting: Setting, value):
    """A widget value as upstream's JSON holds it: numeric dropdown values as numbers ("16" → 16, "12" → 12)."""
    if setting.kind == Kind.DROPDOWN:
        for choice in setting.choices:
            if str(choice) == str(value):
                return choice
        if takes_custom_value(setting):
            try:
                return cast(setting, value)
            except UserError:
                return value  # validation names it when the job is built
    return value


def defaults() -> dict:
    form = {"mode": "LoRA", "model": "", "vae": "None", USE_2ND: False}
    form.update({p: "" for p in PROMPTS})
    form.update({field(1, s.name): widget_value(s, s.default) for s in FIRST_PASS})
    form.update({field(2, s.name): widget_value(s, s.default) for s in SECOND_PASS})
    return form


def form_from_json(data: dict) -> tuple[dict, list[str]]:
    """Every widget value from upstream's JSON (a preset, a saved run, a queued job), and one line for each thing
    it could not load: a value `cast` refuses keeps its widget's default, and unknown keys are ignored."""
    form, problems = defaults(), []

    def load(key: str, setting: Setting, value, where: str = "") -> None:
        try:
            form[key] = widget_value(setting, value)
        except UserError as err:
            problems.append(f"{NOT_LOADED} {where}{err}")

    mode = str(data.get("mode") or "LoRA")
    if mode in MODES:
        form["mode"] = mode
    else:
        problems.append(f"{NOT_LOADED} mode {mode!r} is not one of {', '.join(MODES)}")
    form["model"] = str(data.get("model") or "")
    form["vae"] = str(data.get("vae") or "None")
    for key in ("original prompt", "target prompt"):
        form[key] = str(data.get(key) or "")
    for s in (BY_NAME[USE_2ND], *FIRST_PASS):
        if s.name in data:
            load(USE_2ND if s.name == USE_2ND else field(1, s.name), s, data[s.name])
    second = data.get("2nd pass") if isinstance(data.get("2nd pass"), dict) else {}
    for s in SECOND_PASS:
        if s.name in second:
            load(field(2, s.name), s, second[s.name], "2nd pass ")
        else:
            form[field(2, s.name)] = form[field(1, s.name)]
    unknown = sorted(k for k in data if k not in BY_NAME and k not in JOB_KEYS)
    if unknown:
        problems.append(f"Ignored unknown settings: {', '.join(unknown)}")
    return form, problems


def json_from_form(form: dict, images: dict | None = None) -> dict:
    """Upstream's JSON layout; "2nd pass" is filled only when use_2nd_pass_settings is ticked."""
    data = {s.name: json_value(s, form[field(1, s.name)]) for s in FIRST_PASS}
    data[USE_2ND] = bool(form.get(USE_2ND))
    if data[USE_2ND]:
        second = dict(data)
        second.update({s.name: json_value(s, form[field(2, s.name)]) for s in SECOND_PASS})
        data["2nd pass"] = second
    else:
        data["2nd pass"] = None
    data.update({"mode": form["mode"], "model": form.get("model") or "", "vae": form.get("vae") or "None",
                 "te": "None", "original prompt": form.get("original prompt", ""),
                 "target prompt": form.get("target prompt", "")})
    for key, path in (images or {}).items():
        if path:
            data[key] = str(path)
    return data


def job_from_form(form: dict, images: dict | None = None) -> Job:
    return job_from_json(json_from_form(form, images), "the form")[0]


def copy_first_pass(form: dict) -> dict:
    """"Copy settings from 1st pass": every pass-2 widget takes its pass-1 value (use_2nd_pass_settings untouched)."""
    return {field(2, s.name): form[field(1, s.name)] for s in SECOND_PASS}


def visibility(mode: str) -> dict:
    """Form key → shown, for every pass-1 widget and the three mode groups (2nd pass, iLECO prompts, pair images)."""
    shown = {field(1, s.name): s.shown_in(mode) for s in FIRST_PASS}
    shown.update({
        "group:2nd pass": mode == "Difference",
        "group:iLECO": mode == "iLECO",
        "group:images": mode in ("Difference", "ADDifT"),
    })
    return shown
