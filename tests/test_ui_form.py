"""The tab's form ↔ upstream JSON (parsed as the CLI parses it, and what it cannot load said), presets, visibility per
mode, and the tab's handlers (built in-process under the installed Gradio, with a stand-in runner; each browser
session's notice is a value handed to them)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from trainer import packages, presets
from trainer.errors import UserError
from trainer.paths import PRESETS_DIR
from trainer.settings import SECOND_PASS_KEYS, job_from_json
from trainer.ui import form as F

PRESETS = sorted(PRESETS_DIR.glob("*.json"))


@pytest.mark.parametrize("path", PRESETS, ids=[p.stem for p in PRESETS])
def test_every_shipped_preset_fills_the_form_and_comes_back_unchanged(path):
    data = json.loads(path.read_text(encoding="utf-8"))
    form, problems = F.form_from_json(data)
    assert problems == []
    back = F.json_from_form(form)
    for name, value in data.items():
        if name in ("te", "vae"):
            continue
        if name == "2nd pass" and value is not None:
            assert {k: back[name][k] for k in value} == value
            continue
        assert back[name] == value, name  # same value and same JSON type (16 stays 16, "500" stays "500")


def test_upstream_json_with_lowercase_optimizer_and_string_numbers():
    form, _ = F.form_from_json({"train_optimizer": "adamw8bit", "network_rank": "32", "network_alpha": 0.5,
                             "mode": "iLECO", "original prompt": "a cat"})
    assert form["1:train_optimizer"] == "AdamW8bit" and form["1:network_rank"] == "32"
    assert form["1:network_alpha"] == "0.5" and form["mode"] == "iLECO" and form["original prompt"] == "a cat"
    assert F.json_from_form(form)["network_rank"] == 32


def test_second_pass_comes_from_its_object_or_copies_the_first():
    data = json.loads((PRESETS_DIR / "Difference_Use2ndPass.json").read_text(encoding="utf-8"))
    form, _ = F.form_from_json(data)
    assert form["1:network_rank"] == "16" and form["2:network_rank"] == "4" and form[F.USE_2ND] is True
    job = F.job_from_form(form)
    assert job.second_pass.network_rank == 4 and job.settings.network_rank == 16
    plain, _ = F.form_from_json({"network_rank": 64})
    assert plain["2:network_rank"] == "64" and F.json_from_form(plain)["2nd pass"] is None


# Values settings.cast accepts, written the odd ways upstream JSON files and people write them.
ODD_BUT_VALID = {
    "booleans": {"image_mirroring": "yes", "save_overwrite": "1", "use_gradient_checkpointing": "TRUE",
                 "logging_save_csv": "", "image_disable_upscale": 0, "model_v_pred": "off"},
    "dropdowns": {"train_optimizer": "adamw8bit", "network_rank": "32", "network_alpha": 0.5,
                  "network_conv_alpha": "0.25", "network_conv_rank": 8.0, "network_type": " c3lier "},
    "texts": {"train_iterations": 500, "train_learning_rate": 0.0002, "train_textencoder_learning_rate": 0,
              "train_seed": " 7 ", "image_size(height, width)": "512x768",
              "network_blocks(BASE = TextEncoder)": "BASE, IN01, OUT11",
              "train_optimizer_settings": "weight_decay=0.01;betas=(0.9,0.99)"},
    "ranks of one's own": {"network_rank": 12, "network_alpha": "0.75", "network_conv_rank": "6",
                           "image_buckets_step": 96},  # numeric dropdowns take a typed number, as the CLI does
    "iLECO": {"mode": "iLECO", "original prompt": "a cat", "target prompt": "a dog", "network_rank": 4},
    "2nd pass": {"mode": "Difference", "use_2nd_pass_settings": "true", "network_rank": 8, "image_buckets_step": "64",
                 "2nd pass": {"network_rank": "4", "train_learning_rate": "1e-5", "train_optimizer": "lion"}},
}


def trained(job) -> tuple:
    """What a run trains from a Job: its mode, prompts, both passes' settings (pass 2: its column, when used)."""
    second = job.second_pass if job.settings.use_2nd_pass_settings else None
    return (job.mode, job.model, job.vae, job.original_prompt, job.target_prompt, job.settings.as_dict(),
            second and {key: getattr(second, key) for key in SECOND_PASS_KEYS})


@pytest.mark.parametrize("data", [json.loads(p.read_text(encoding="utf-8")) for p in PRESETS]
                         + list(ODD_BUT_VALID.values()), ids=[p.stem for p in PRESETS] + list(ODD_BUT_VALID))
def test_the_form_trains_what_the_cli_trains_from_the_same_json(data):
    form, problems = F.form_from_json(data)
    assert problems == []
    assert trained(F.job_from_form(form)) == trained(job_from_json(data)[0])


@pytest.mark.parametrize("key,value,says", [
    ("image_mirroring", "maybe", "'maybe' is not true or false"),  # the old form read any such word as False
    ("save_overwrite", "perhaps", "'perhaps' is not true or false"),
    ("train_optimizer", "nonsense", "'nonsense' is not one of AdamW"),  # the old form took AdamW silently
    ("train_lr_scheduler", "Cosine", "'Cosine' is not one of"),
    ("network_rank", "16.5", "'16.5' is not a whole number"),
    ("network_element", "Both", "'Both' is not one of Full"),
    ("train_iterations", "many", "'many' is not a whole number"),
    ("network_blocks(BASE = TextEncoder)", ["BASE", "IN99"], "unknown block(s) ['IN99']"),
])
def test_a_value_the_form_cannot_load_keeps_the_default_and_says_so(key, value, says):
    form, problems = F.form_from_json({key: value, "network_alpha": 4})
    assert form[F.field(1, key)] == F.defaults()[F.field(1, key)] and form["1:network_alpha"] == "4"
    assert len(problems) == 1 and problems[0].startswith(f"{F.NOT_LOADED} {key}: ") and says in problems[0]


def test_bad_second_pass_values_modes_and_unknown_keys_are_reported():
    form, problems = F.form_from_json({"mode": "Lora", "network_rank": 8, "2nd pass": {"network_rank": "x"},
                                       "made_up": 1})
    assert form["mode"] == "LoRA" and form["2:network_rank"] == "16" and form["1:network_rank"] == "8"
    assert problems == [f"{F.NOT_LOADED} mode 'Lora' is not one of LoRA, iLECO, Difference, ADDifT, Multi-ADDifT",
                        f"{F.NOT_LOADED} 2nd pass network_rank: 'x' is not a whole number",
                        "Ignored unknown settings: made_up"]


def test_copy_settings_from_1st_pass_copies_everything_and_keeps_the_box():
    form = F.defaults()
    form.update({"1:network_type": "c3lier", "1:train_iterations": "77", F.USE_2ND: True})
    copied = F.copy_first_pass(form)
    assert copied["2:network_type"] == "c3lier" and copied["2:train_iterations"] == "77"  # upstream skipped the type
    assert F.USE_2ND not in copied and all(key.startswith("2:") for key in copied)


@pytest.mark.parametrize("mode", ["LoRA", "iLECO", "Difference", "ADDifT", "Multi-ADDifT"])
def test_visibility_follows_the_table(mode):
    shown = F.visibility(mode)
    for s in F.FIRST_PASS:
        assert shown[F.field(1, s.name)] == s.shown_in(mode), s.name
    groups = (shown["group:2nd pass"], shown["group:iLECO"], shown["group:images"])
    assert groups == {"LoRA": (False, False, False), "iLECO": (False, True, False),
                      "Difference": (True, False, True), "ADDifT": (False, False, True),
                      "Multi-ADDifT": (False, False, False)}[mode]


def test_presets_save_refuses_to_overwrite_unless_asked(tmp_path):
    presets.save_preset("mine", {"network_rank": 4}, overwrite=False, presets_dir=tmp_path)
    with pytest.raises(UserError, match="already exists; tick save_overwrite"):
        presets.save_preset("mine", {"network_rank": 8}, overwrite=False, presets_dir=tmp_path)
    presets.save_preset("mine.json", {"network_rank": 8}, overwrite=True, presets_dir=tmp_path)
    assert presets.load_preset("mine", tmp_path) == {"network_rank": 8}
    assert presets.preset_names(tmp_path) == ["mine"]
    for bad in ("", "../escape", "a/b"):
        with pytest.raises(UserError):
            presets.save_preset(bad, {}, overwrite=True, presets_dir=tmp_path)
    assert not list(tmp_path.glob(".*tmp"))


def test_json_load_searches_the_json_folder_recursively(tmp_path):
    day = tmp_path / "20261122"
    day.mkdir()
    (day / "run-20261122_101010.json").write_text('{"network_rank": 32, "mode": "LoRA"}', encoding="utf-8")
    assert presets.load_json("run-20261122_101010", tmp_path)["network_rank"] == 32
    with pytest.raises(UserError, match="no nothing.json under"):
        presets.find_json("nothing", tmp_path)
    (day / "broken.json").write_text("{", encoding="utf-8")
    with pytest.raises(UserError, match="not valid JSON"):
        presets.load_json("broken", tmp_path)


# -- the tab, in-process -----------------------------------------------------------------------------------------
def make_tab(tmp_path, tool_button=None):
    """The tab over a StandaloneHost and a stand-in runner; `.blocks` is what it built, `.started` the jobs run."""
    from trainer.host.standalone import StandaloneHost
    from trainer.jobs.service import TrainingService
    from trainer.ui.tab import Folders, TrainTrainTab

    started = []

    def runner(job, host, control, logs_dir, json_dir):
        started.append(job)
        return SimpleNamespace(status="finished", path=None, message="Successfully created (stand-in)")

    folders = Folders(presets=tmp_path / "presets", json=tmp_path / "json", logs=tmp_path / "logs")
    folders.presets.mkdir()
    for preset in PRESETS_DIR.glob("*.json"):
        (folders.presets / preset.name).write_bytes(preset.read_bytes())
    host = StandaloneHost(lora_dir=tmp_path / "out")
    service = TrainingService(host, queue_file=folders.json / "queue.json", logs_dir=folders.logs,
                              json_dir=folders.json, run_job=runner)
    built = TrainTrainTab(service, host, folders, tool_button=tool_button)
    built.blocks = built.build()
    built.started = started
    return built


@pytest.fixture
def tab(tmp_path):
    return make_tab(tmp_path)


def values_of(tab, form: dict) -> dict:
    """What Gradio hands a handler with dict inputs: component → value."""
    return {tab.widgets[key]: value for key, value in form.items() if key in tab.widgets}


def test_tab_loads_a_preset_into_every_widget_and_shows_its_groups(tab):
    updates = tab._on_preset_load("Difference_Use2ndPass")
    value = {key: updates[component].get("value") for key, component in tab.widgets.items()
             if isinstance(updates.get(component), dict)}
    assert value["mode"] == "Difference" and value["1:network_rank"] == "16" and value["2:network_rank"] == "4"
    assert value[F.USE_2ND] is True and value["1:train_iterations"] == "500"
    assert updates[tab.groups["group:2nd pass"]]["visible"] is True
    assert updates[tab.groups["group:iLECO"]]["visible"] is False
    assert updates[tab.widgets["1:diff_load_1st_pass"]]["visible"] is True
    assert "Loaded preset Difference_Use2ndPass" in updates[tab.message]
    assert updates[tab.notice] == "Loaded preset Difference_Use2ndPass."


def test_tab_says_which_preset_values_it_could_not_load(tab):
    odd = {"train_optimizer": "foo", "network_rank": 32, "image_mirroring": "maybe", "made_up": 1}
    (tab.folders.presets / "odd.json").write_text(json.dumps(odd), encoding="utf-8")
    updates = tab._on_preset_load("odd")
    assert updates[tab.widgets["1:train_optimizer"]]["value"] == "AdamW"  # the default, and it says so:
    assert updates[tab.widgets["1:network_rank"]]["value"] == "32"
    lines = updates[tab.message].splitlines()
    assert lines[0] == "Loaded preset odd."
    assert lines[1].startswith(f"{F.NOT_LOADED} train_optimizer: 'foo' is not one of AdamW")
    assert lines[2] == f"{F.NOT_LOADED} image_mirroring: 'maybe' is not true or false"
    assert lines[3] == "Ignored unknown settings: made_up"


def test_tab_starts_a_job_from_the_form_and_saves_a_preset(tab, tmp_path):
    form = F.defaults()
    form.update({"1:save_lora_name": "from_tab", "1:train_iterations": "12", "model": ""})
    updates = tab._on_start(values_of(tab, form))
    assert tab.service.wait(10)
    assert tab.started[0].settings.train_iterations == 12 and tab.started[0].settings.save_lora_name == "from_tab"
    assert "Started LoRA 'from_tab'" in updates[tab.message]
    assert "GiB of memory (estimate)" in updates[tab.message]  # engine.memory's figure, shown at Start
    saved = tab._on_preset_save(values_of(tab, form))
    assert json.loads((tmp_path / "presets" / "from_tab.json").read_text())["train_iterations"] == "12"
    assert "from_tab" in saved[tab.preset]["choices"]
    again = tab._guard(tab._on_preset_save)(values_of(tab, form))
    assert "already exists" in again[tab.message]


def test_each_browser_session_sees_only_its_own_notice(tab):
    """Two sessions are two values of the notice State; Gradio hands each handler its own session's value."""
    fresh = tab.notice.value  # what every new session starts with: the install problems ("" when none)
    assert fresh == packages.problems()
    bad = F.defaults()
    bad.update({"1:train_iterations": "many"})
    a = tab._guard(tab._on_start)(values_of(tab, bad))[tab.notice]  # session A's Start fails
    assert a.startswith("Error: train_iterations")
    b = tab._on_poll(fresh)[tab.message]  # session B's poll
    assert "Error" not in b and b.startswith(fresh + ("\n" if fresh else "") + "Ready.")
    good = F.defaults()
    good.update({"1:save_lora_name": "b_job", "model": ""})
    b = tab._on_start(values_of(tab, good))[tab.notice]  # session B starts a job …
    assert tab.service.wait(10) and b.startswith("Started LoRA 'b_job'")
    seen_by_a = tab._on_poll(a)[tab.message]  # … and session A still sees only its own error
    assert seen_by_a.startswith("Error: train_iterations") and "Started" not in seen_by_a
    assert "Started" not in tab._on_queue_reload(a)[tab.message]


def test_tab_rejects_bad_input_in_one_line_and_starts_nothing(tab):
    form = F.defaults()
    form.update({"1:train_iterations": "many", "1:save_lora_name": "x"})
    updates = tab._guard(tab._on_start)(values_of(tab, form))
    assert updates[tab.message].startswith("Error: train_iterations: 'many' is not a whole number")
    form.update({"1:train_iterations": "5", "mode": "ADDifT"})
    updates = tab._guard(tab._on_start)(values_of(tab, form))
    assert "ADDifT needs both images" in updates[tab.message]
    assert tab.started == []


def test_tab_saves_uploaded_pair_images_for_queued_jobs(tab, tmp_path):
    from PIL import Image

    form = F.defaults()
    form.update({"mode": "ADDifT", "1:save_lora_name": "pair"})
    values = values_of(tab, form)
    values[tab.images["original image"]] = Image.new("RGB", (32, 32), "red")
    with pytest.raises(UserError, match="ADDifT needs both images: upload the target image"):
        tab._job(values)
    assert not (tmp_path / "json" / "images").exists()  # nothing written for a job that cannot run
    values[tab.images["target image"]] = Image.new("RGB", (32, 32), "blue")
    job = tab._job(values)
    assert Path(job.original_image).is_file() and Path(job.target_image).is_file()
    assert Path(job.original_image).is_relative_to(tmp_path / "json" / "images")
    with Image.open(job.target_image) as img:
        assert img.getpixel((0, 0)) == (0, 0, 255)
    assert sorted(p.name for p in Path(job.target_image).parent.iterdir()) == sorted(
        [Path(job.original_image).name, Path(job.target_image).name])  # no temporary file left beside them


# Written out by hand from upstream's "visible in" column, not derived from our table: the pass-1 settings each mode
# hides. diff_random_timesteps_in_span is ours, shown with the other ADDifT settings; so are the noise and caption
# options beyond upstream.
HIDDEN = {
    "LoRA": {"diff_target_name", "network_train_text_encoder", "diff_alt_ratio", "diff_revert_original_target",
             "diff_use_diff_mask", "diff_load_1st_pass", "diff_save_1st_pass", "diff_1st_pass_only",
             "diff_random_timesteps_in_span"},
    "iLECO": {"lora_data_directory", "diff_target_name", "lora_trigger_word", "network_resume", "image_buckets_step",
              "image_num_multiply", "image_min_length", "image_max_ratio", "sub_image_num", "image_mirroring",
              "image_use_filename_as_tag", "image_disable_upscale", "train_textencoder_learning_rate",
              "diff_alt_ratio", "diff_revert_original_target", "diff_use_diff_mask", "diff_load_1st_pass",
              "diff_save_1st_pass", "diff_1st_pass_only", "diff_random_timesteps_in_span",
              # ours, beyond upstream: iLECO trains on latents it denoises itself and has no captions or images
              "noise_offset", "multires_noise_iterations", "multires_noise_discount", "caption_dropout_rate",
              "shuffle_caption", "keep_tokens", "cache_latents_to_disk"},
}
GROUPS = {"LoRA": {"group:2nd pass": False, "group:iLECO": False, "group:images": False},
          "iLECO": {"group:2nd pass": False, "group:iLECO": True, "group:images": False}}


@pytest.mark.parametrize("mode", ["LoRA", "iLECO"])
def test_tab_mode_switch_updates_every_setting_and_group(tab, mode):
    updates = tab._on_mode(mode)
    first_pass = {key: widget for key, widget in tab.widgets.items() if key.startswith("1:")}
    assert set(updates) == set(first_pass.values()) | set(tab.groups.values())
    assert {key[2:] for key, widget in first_pass.items() if not updates[widget]["visible"]} == HIDDEN[mode]
    assert {key: updates[group]["visible"] for key, group in tab.groups.items()} == GROUPS[mode]


def test_image_tab_handlers_write_variants_and_report_bad_input(tmp_path):
    from PIL import Image

    from trainer.ui.tab import _augment_directory, _augment_file, _guard_one

    source = tmp_path / "src"
    source.mkdir()
    Image.new("RGB", (40, 30), "green").save(source / "cat.JPG")
    message = _augment_directory(str(source), 3, 30, 0.5, True, True, "none")
    assert sorted(p.name for p in (source / "modified").iterdir()) == ["cat_id_0.png", "cat_id_1.png", "cat_id_2.png"]
    assert "3" in message
    written = _augment_file(Image.new("RGBA", (40, 30)), "dog", str(tmp_path / "out"), 2.0, 0, 1, False, True, "left")
    assert "2" in written and len(list((tmp_path / "out").glob("dog_id_*.png"))) == 2
    assert _guard_one(_augment_directory)(str(tmp_path / "missing"), 3, 30, 0.5, True, True, "none").startswith(
        "Error: ")


def test_the_queue_tab_lists_an_interrupted_job_until_it_is_deleted(tab, tmp_path):
    from trainer.jobs.queue import JobQueue
    from trainer.settings import Job, validate

    crashed = Job("LoRA", validate({"save_lora_name": "crashed"}, "LoRA"))
    waiting = Job("LoRA", validate({"save_lora_name": "waiting"}, "LoRA"))
    path = tmp_path / "crash" / "queue.json"
    path.parent.mkdir()
    path.write_text(json.dumps({"jobs": [waiting.to_json()], "running": crashed.to_json()}), encoding="utf-8")
    tab.service.queue = JobQueue(path)  # what a restart after a kill reads
    names = [row[0] for row in tab._queue_rows()]
    assert names == ["waiting", "crashed (interrupted)"]
    tab.service.delete("crashed")  # the Delete Queue button
    assert [row[0] for row in tab._queue_rows()] == ["waiting"]



def test_loading_a_preset_or_json_keeps_the_chosen_model_unless_it_names_one_here(tab, demo_models):
    """A preset (upstream's leave Model empty) or a saved run naming a checkpoint this install lacks must not switch
    the Model under the user — that is how a LoRA gets trained for the wrong model family."""
    updates = tab._on_preset_load("LoRA")
    assert tab.widgets["model"] not in updates and tab.widgets["vae"] not in updates
    elsewhere = {"mode": "LoRA", "model": "/nowhere/sdxl.safetensors", "vae": "gone.vae.pt"}
    (tab.folders.presets / "elsewhere.json").write_text(json.dumps(elsewhere), encoding="utf-8")
    updates = tab._on_preset_load("elsewhere")
    assert tab.widgets["model"] not in updates and tab.widgets["vae"] not in updates
    assert "model '/nowhere/sdxl.safetensors' is not here; the current model is kept" in updates[tab.message]
    here = {"mode": "LoRA", "model": str(demo_models["sd1"])}
    (tab.folders.presets / "here.json").write_text(json.dumps(here), encoding="utf-8")
    updates = tab._on_preset_load("here")
    assert updates[tab.widgets["model"]]["value"] == str(demo_models["sd1"])


# -- Gradio 3.41 and 4.x: the same tab under either (run this module under both) ----------------------------------
TOOL_BUTTONS = {"tt_preset_load": "↙️", "tt_preset_save": "💾", "tt_preset_refresh": "🔄", "tt_json_load": "↙️",
                "tt_model_refresh": "🔄", "tt_vae_refresh": "🔄"}


def page_config(tab) -> tuple[dict, dict]:
    """(elem_id → component config, elem_id → [its events' configs]) of the built tab, as the page receives them.
    Gradio 3 lists an event's targets as ids, Gradio 4 as (id, event) pairs."""
    config = tab.blocks.get_config_file()
    components = {c["id"]: c for c in config["components"]}
    by_elem = {c["props"].get("elem_id"): c for c in components.values() if c["props"].get("elem_id")}
    events = {}
    for dependency in config["dependencies"]:
        for target in dependency["targets"]:
            target = target[0] if isinstance(target, (list, tuple)) else target
            events.setdefault(components[target]["props"].get("elem_id"), []).append(dependency)
    return by_elem, events


def test_every_handler_is_out_of_the_api_and_the_quick_ones_answer_outside_the_queue(tab):
    _, events = page_config(tab)
    assert sum(len(e) for e in events.values()) >= 15 and all(
        d["api_name"] is False for e in events.values() for d in e)
    for quick in ("tt_poll", "tt_stop", "tt_stop_save", "tt_plot_reload", "tt_mode"):
        assert [d["queue"] for d in events[quick]] == [False], quick  # answered while Start's handler runs
    for queued in ("tt_start", "tt_add_queue", "tt_preset_load", "tt_model_refresh", "tt_queue_delete"):
        assert [d["queue"] is False for d in events[queued]] == [False], queued
    assert [d["show_progress"] for d in events["tt_poll"]] == ["hidden"]  # no overlay flickering every second
    assert [d["show_progress"] for d in events["tt_start"]] == ["full"]


def test_the_page_describes_its_api_without_error(tab):
    """Gradio 4.40 builds this for every page request; with a file component (Image, Gallery) and pydantic >= 2.11
    it raised, and the page was a 500. The tab's handlers are no API, so there is nothing to describe."""
    import gradio

    if hasattr(tab.blocks, "get_api_info"):  # Gradio 4
        info = tab.blocks.get_api_info()
    else:  # Gradio 3.41
        info = gradio.blocks.get_api_info(tab.blocks.get_config_file())
    assert info["named_endpoints"] == {} and info["unnamed_endpoints"] == {}


def test_the_tool_buttons_reach_the_page_with_their_ids_and_text(tab):
    by_elem, events = page_config(tab)
    for elem_id, text in TOOL_BUTTONS.items():
        assert by_elem[elem_id]["props"]["value"] == text, elem_id
        assert len(events[elem_id]) == 1, elem_id


def _fake_webui_tool_button():
    """AUTOMATIC1111's ToolButton (tests/fake_webui): `__init__(self, *args, **kwargs)`, written for Gradio 3."""
    import importlib.util
    import sys

    name = "fake_webui_ui_components_for_test_ui_form"
    if name not in sys.modules:  # Gradio 4 reads the class's source through sys.modules as it is defined
        path = Path(__file__).parent / "fake_webui" / "modules" / "ui_components.py"
        spec = importlib.util.spec_from_file_location(name, path)
        sys.modules[name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules[name])
    return sys.modules[name].ToolButton


def test_a_webui_tool_button_is_used_where_the_page_gets_its_id_else_our_own(tmp_path):
    from trainer.ui.gradio_compat import GRADIO_4

    tool_button = _fake_webui_tool_button()
    made = []

    def host_tool_button(value, elem_id):
        made.append(elem_id)
        return tool_button(value=value, elem_id=elem_id)

    built = make_tab(tmp_path, tool_button=host_tool_button)
    by_elem, events = page_config(built)
    for elem_id, text in TOOL_BUTTONS.items():
        assert by_elem[elem_id]["props"]["value"] == text and len(events[elem_id]) == 1, elem_id
    # Gradio 3 sends what its get_config says: the webui's button, every time. Gradio 4 sends only what __init__'s
    # signature names: it would have no id and no text, so after the first try the tab draws its own.
    assert isinstance(built.model_refresh, tool_button) is (not GRADIO_4)
    assert len(made) == (1 if GRADIO_4 else len(TOOL_BUTTONS))
    assert len([c for c in built.blocks.get_config_file()["components"]
                if c["props"].get("value") == "🔄"]) == 3  # the one taken out is not in the page


def test_a_webui_without_its_tool_button_still_gets_the_tab(tmp_path):
    def missing(value, elem_id):
        from modules_that_do_not_exist.ui_components import ToolButton  # noqa: F401

    built = make_tab(tmp_path, tool_button=missing)
    by_elem, _ = page_config(built)
    assert all(by_elem[elem_id]["props"]["value"] == text for elem_id, text in TOOL_BUTTONS.items())


def test_client_side_code_takes_the_keyword_of_the_installed_gradio():
    import gradio as gr

    from trainer.ui.gradio_compat import GRADIO_4, MAJOR, js_kwargs

    assert MAJOR == int(gr.__version__.split(".")[0]) and GRADIO_4 is (MAJOR >= 4)
    assert js_kwargs("() => 1") == ({"js": "() => 1"} if GRADIO_4 else {"_js": "() => 1"})
    assert js_kwargs(None) == {}


UI_SOURCES = sorted((Path(__file__).parent.parent / "trainer" / "ui").glob("*.py")) + [
    Path(__file__).parent.parent / "scripts" / "traintrain.py"]
GRADIO_3_ONLY = {  # what plain Gradio 4 lacks or renamed (Neo shims some of it, the standalone app has no shims)
    r"\bgr\.\w+\.update\(": "gr.update(...)", r"\b_js=": "gradio_compat.js_kwargs", r"\.style\(": "constructor kwargs",
    r"\bgr\.Box\b": "gr.Group", r"\bconcurrency_count\b": "per-event concurrency", r"\bsource=": "sources=[...]",
}


@pytest.mark.parametrize("path", UI_SOURCES, ids=[p.name for p in UI_SOURCES])
def test_the_ui_code_uses_no_gradio_3_only_idiom(path):
    import re

    if path.name == "gradio_compat.py":
        return
    code = path.read_text(encoding="utf-8")
    for pattern, instead in GRADIO_3_ONLY.items():
        assert not re.search(pattern, code), f"{path.name}: {pattern} (use {instead})"
    if path.name == "tab.py":
        assert not re.search(r"\.(click|change|input|select|submit)\(", code), "wire events through listen()"


def test_the_poll_sends_the_sample_previews_only_when_they_change(tab, tmp_path):
    """The gallery under the Message box shows the job's preview grids (STEP events' "samples"); a poll resends
    them only when the list differs from what this page shows (its State)."""
    from trainer.engine.control import Event

    grids = [str(tmp_path / f"p_{n:06d}.png") for n in (10, 20)]

    def runner(job, host, control, logs_dir, json_dir):
        for step, path in zip((10, 20), grids):
            control.emit(Event.STEP, step=step, total=20, loss=0.1, loss_ema=0.1, lrs=[1e-3], elapsed=1.0, eta=0.0,
                         samples=[path])
        return SimpleNamespace(status="finished", path=None, message="Successfully created (stand-in)")

    tab.service._run_job = runner
    assert tab.samples not in tab._on_poll(tab.notice.value, tab.samples_shown.value)  # nothing yet: no update
    form = F.defaults()
    form.update({"1:save_lora_name": "previewed", "model": ""})
    tab._on_start(values_of(tab, form))
    assert tab.service.wait(10)
    updates = tab._on_poll(tab.notice.value, ())
    assert [item[0] for item in updates[tab.samples]["value"]] == grids and updates[tab.samples]["visible"] is True
    assert tab.samples not in tab._on_poll(tab.notice.value, updates[tab.samples_shown])  # unchanged: not resent
