"""The tab's form as a plain dict, and its mapping to and from upstream's JSON (no Gradio here).

Form keys: "mode", "model", "vae", the prompts, "use_2nd_pass_settings", and for every setting widget
`field(1, name)` / `field(2, name)`. Pass 1 has a widget for every setting; pass 2 (the Difference accordion) for the
settings its column shows. A missing JSON key takes its default; pass 2 without a "2nd pass" object copies pass 1.
"""

from __future__ import annotations

from ..settings import BY_NAME, MODES, SEPARATOR, TABLE, Job, Setting, job_from_json

USE_2ND = "use_2nd_pass_settings"
FIRST_PASS: tuple[Setting, ...] = tuple(s for s in TABLE if s.name != USE_2ND)
SECOND_PASS: tuple[Setting, ...] = tuple(s for s in TABLE if "E" in s.modes and s.name != USE_2ND)
PROMPTS = ("original prompt", "target prompt", "negative prompt")


def field(pass_no: int, name: str) -> str:
    return f"{pass_no}:{name}"


def widget_value(setting: Setting, value):
    """A JSON value as its widget holds it. Dropdowns hold their choice as text (Gradio 3.41 shows numeric choices
    as blank): 16 and "16" → "16", "adamw" → "AdamW"; an unknown choice → the default."""
    if value is None:
        value = setting.default
    if setting.kind == "dropdown":
        for choice in setting.choices:
            if choice != SEPARATOR and (str(choice) == str(value).strip() or _same_number(choice, value)):
                return str(choice)
        if setting.name == "train_optimizer":  # upstream lower-cases optimizer names in its JSON
            by_lower = {str(c).lower(): c for c in setting.choices}
            return str(by_lower.get(str(value).strip().lower(), setting.default))
        return str(setting.default)
    if setting.kind == "check":
        return value if isinstance(value, bool) else str(value).strip().lower() in ("true", "1", "yes", "on")
    if setting.kind == "blocks":
        return [b.strip() for b in value.split(",") if b.strip()] if isinstance(value, str) else list(value)
    return "" if value is None else str(value)


def json_value(setting: Setting, value):
    """A widget value as upstream's JSON holds it: numeric dropdown choices as numbers ("16" → 16)."""
    if setting.kind == "dropdown":
        for choice in setting.choices:
            if str(choice) == str(value):
                return choice
    return value


def _same_number(choice, value) -> bool:
    try:
        return float(choice) == float(value)
    except (TypeError, ValueError):
        return False


def defaults() -> dict:
    form = {"mode": "LoRA", "model": "", "vae": "None", USE_2ND: False}
    form.update({p: "" for p in PROMPTS})
    form.update({field(1, s.name): widget_value(s, s.default) for s in FIRST_PASS})
    form.update({field(2, s.name): widget_value(s, s.default) for s in SECOND_PASS})
    return form


def form_from_json(data: dict) -> dict:
    """Every widget value from upstream's JSON (a preset, a saved run, a queued job)."""
    form = defaults()
    mode = str(data.get("mode") or "LoRA")
    form["mode"] = mode if mode in MODES else "LoRA"
    form["model"] = str(data.get("model") or "")
    form["vae"] = str(data.get("vae") or "None")
    for key in ("original prompt", "target prompt"):
        form[key] = str(data.get(key) or "")
    form[USE_2ND] = widget_value(BY_NAME[USE_2ND], data.get(USE_2ND, False))
    for s in FIRST_PASS:
        form[field(1, s.name)] = widget_value(s, data.get(s.name, s.default))
    second = data.get("2nd pass") if isinstance(data.get("2nd pass"), dict) else {}
    for s in SECOND_PASS:
        form[field(2, s.name)] = widget_value(s, second.get(s.name, data.get(s.name, s.default)))
    return form


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
    """Form key → shown, for every pass-1 widget and the three mode groups (§2.1 of the spec)."""
    shown = {field(1, s.name): s.shown_in(mode) for s in FIRST_PASS}
    shown.update({
        "group:2nd pass": mode == "Difference",
        "group:iLECO": mode == "iLECO",
        "group:images": mode in ("Difference", "ADDifT"),
    })
    return shown
