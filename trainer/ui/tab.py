"""The TrainTrain tab: layout generated from the settings table, wired to plain functions.

`build_tab(service, host, folders)` returns a `gr.Blocks` for the webui's `on_ui_tabs` or the standalone app. Only
idioms that exist in both Gradio 3.41 (A1111, Forge Classic) and 4.x (Forge Neo, the standalone app on Gradio 4) are
used: `gr.update`, dict inputs/outputs, no `_js`; every event is wired through `gradio_compat.listen`, which holds
what differs. Live progress comes from javascript/traintrain.js clicking the hidden `tt_poll` button every second
(no `every=` / `gr.Timer`, which differ between the versions and would poll while the tab is hidden).

The Message box shows a notice (the last action's result) above the job's status. The notice belongs to one browser
session: it lives in a `gr.State`, every handler that sets it returns it, and every handler that shows it reads it.
"""

from __future__ import annotations

import html
import logging
import random
from dataclasses import dataclass
from pathlib import Path

import gradio as gr

from .. import packages, presets
from ..errors import UserError
from ..host.base import Host
from ..jobs import plot
from ..jobs.queue import QUEUE_HEADERS, job_name, queue_row
from ..jobs.service import RunStatus, TrainingService, describe
from ..networks.blocks import BLOCK_IDS
from ..paths import JSON_DIR, LOGS_DIR, PRESETS_DIR
from ..settings import MODES, Setting
from . import form as F
from .estimate import memory_note
from .gradio_compat import listen, sends_props, unrender
from .uploads import IMAGE_KEYS, save_pair

log = logging.getLogger(__name__)
COLUMNS = {"required": ("req1", "req2", "req3"), "option": ("opt1", "opt2", "opt3"),
           # ours: previews | resume and evaluation | noise and captions (kohya's names)
           "beyond upstream": ("ext1", "ext2", "ext3")}
PAIR_MODES = ("Difference", "ADDifT")


@dataclass(frozen=True)
class Folders:
    presets: Path = PRESETS_DIR
    json: Path = JSON_DIR
    logs: Path = LOGS_DIR


def elem_id(setting: Setting, pass_no: int) -> str:
    """Upstream's ids: `tt_<name>` for choice widgets, `tt_1_<name>` / `tt_2_<name>` for textboxes. Pass-2 choice
    widgets get `tt_2_<name>` too (upstream repeats the pass-1 id, which leaves duplicate ids in the page)."""
    if setting.kind == "text" or pass_no == 2:
        return f"tt_{pass_no}_{setting.name}"
    return f"tt_{setting.name}"


def transient(component):
    """Not restored from the webui's ui-config.json (webui-api.md A11): a value that only makes sense now — the
    Model the webui holds, the VAE list of this start, messages. Harmless outside the webui."""
    component.do_not_save_to_config = True
    return component


def setting_widget(setting: Setting, value, pass_no: int, visible: bool = True):
    common = dict(label=setting.label, elem_id=elem_id(setting, pass_no), visible=visible)
    if setting.kind == "dropdown":
        return gr.Dropdown(choices=[str(c) for c in setting.choices], value=value, interactive=True,
                           allow_custom_value=F.takes_custom_value(setting), **common)
    if setting.kind == "check":
        return gr.Checkbox(value=value, interactive=True, **common)
    if setting.kind == "blocks":
        return gr.CheckboxGroup(choices=list(BLOCK_IDS), value=value, interactive=True, **common)
    return gr.Textbox(value=value, lines=1, interactive=True, **common)


def progress_html(status: RunStatus) -> str:
    """A bar the stylesheet draws; data-state/data-percent are read by traintrain.js."""
    text = ""
    if status.state == "training":
        text = f"step {status.step}/{status.total}"
    elif status.state == "loading":
        text = status.message
    return (f'<div class="tt-progress" data-state="{status.state}" data-percent="{status.percent:.1f}">'
            f'<div class="tt-progress-fill" style="width:{status.percent:.1f}%"></div>'
            f'<span class="tt-progress-text">{html.escape(text)}</span></div>')


class TrainTrainTab:
    """Builds the widgets (kept by form key) and the handlers, which call the service and the plain modules."""

    def __init__(self, service: TrainingService, host: Host, folders: Folders = Folders(), tool_button=None):
        self.service = service
        self.host = host
        self.folders = folders
        self.host_tool_button = tool_button or getattr(host, "tool_button", None)
        self.widgets: dict[str, gr.components.Component] = {}
        self.groups: dict[str, gr.blocks.Block] = {}

    def tool_button(self, value: str, elem_id: str):
        """The host's small emoji button (the webui's ToolButton), else our own: a webui whose ToolButton is not where
        the host looks, or one that Gradio 4 would send to the page without its id and text, still gets the tab's
        buttons, wired and working."""
        if self.host_tool_button is not None:
            try:
                button = self.host_tool_button(value, elem_id)
            except (ImportError, AttributeError) as err:
                log.warning("the webui's ToolButton is not available (%s); using TrainTrain's own", err)
                self.host_tool_button = None
                return _tool_button(value, elem_id)
            if sends_props(button):
                return button
            log.warning("the webui's ToolButton (%s) would reach this Gradio %s page without its id and text; using "
                        "TrainTrain's own", type(button).__qualname__, gr.__version__)
            unrender(button)
            self.host_tool_button = None
        return _tool_button(value, elem_id)

    # -- layout ------------------------------------------------------------------------------------------------------
    def build(self) -> gr.Blocks:
        with gr.Blocks(analytics_enabled=False) as blocks:
            with gr.Tabs(elem_id="tt_tabs"):
                with gr.Tab("Train", elem_id="tt_train_tab"):
                    self._train_tab()
                with gr.Tab("Queue", elem_id="tt_queue_tab"):
                    self._queue_tab()
                with gr.Tab("Plot", elem_id="tt_plot_tab"):
                    self._plot_tab()
                with gr.Tab("Image", elem_id="tt_image_tab"):
                    self._image_tab()
        return blocks

    def _train_tab(self) -> None:
        form = F.defaults()
        form["model"] = self.host.default_model()
        first = packages.problems()  # what is not installed: every session's notice starts as this
        self.notice = gr.State(first)  # this browser session's notice
        self.message = transient(gr.Textbox(label="Message", value=self._text(first), lines=2, interactive=False,
                                            elem_id="tt_message"))
        self.progress = gr.HTML(progress_html(self.service.status()), elem_id="tt_progress")
        # the job's sample-preview grids (sample_every_n_steps), shown once there is one; the State holds the paths
        # this page shows, so that a poll sends the images only when they change
        self.samples = gr.Gallery(label="Sample previews", elem_id="tt_samples", columns=4, object_fit="contain",
                                  visible=False)
        self.samples_shown = gr.State(())
        with gr.Row():
            self.start = gr.Button("Start Training", variant="primary", elem_id="tt_start")
            self.stop = gr.Button("Stop", elem_id="tt_stop")
            self.stop_save = gr.Button("Stop and Save", elem_id="tt_stop_save")
        with gr.Row():
            self.add_queue = gr.Button("Add to Queue", elem_id="tt_add_queue")
            # clicked every second by traintrain.js; hidden by style.css (an invisible widget would not be in the page)
            self.poll = gr.Button("refresh progress", elem_id="tt_poll", elem_classes=["tt-hidden"])
        with gr.Row(elem_id="tt_preset_row"):
            self.preset = gr.Dropdown(choices=presets.preset_names(self.folders.presets), value="LoRA",
                                      show_label=False, interactive=True, elem_id="tt_preset")
            self.preset_load = self.tool_button("↙️", "tt_preset_load")
            self.preset_save = self.tool_button("💾", "tt_preset_save")
            self.preset_refresh = self.tool_button("🔄", "tt_preset_refresh")
            self.json_name = gr.Textbox(show_label=False, placeholder="name of a saved JSON (json/…)",
                                        elem_id="tt_json_name")
            self.json_load = self.tool_button("↙️", "tt_json_load")
        self.widgets["mode"] = gr.Radio(choices=list(MODES), value="LoRA", label="Mode", elem_id="tt_mode")
        with gr.Row(elem_id="tt_model_row"):
            self.widgets["model"] = transient(gr.Dropdown(choices=self.host.models(), value=form["model"], label="Model",
                                                          allow_custom_value=True, interactive=True,
                                                          elem_id="tt_model"))
            self.model_refresh = self.tool_button("🔄", "tt_model_refresh")
            self.widgets["vae"] = transient(gr.Dropdown(choices=self.host.vaes(), value="None", label="VAE",
                                                        allow_custom_value=True, interactive=True, elem_id="tt_vae"))
            self.vae_refresh = self.tool_button("🔄", "tt_vae_refresh")
        shown = F.visibility("LoRA")
        self._parameter_columns(F.FIRST_PASS, 1, form, shown)
        with gr.Accordion("2nd pass", open=False, visible=shown["group:2nd pass"], elem_id="tt_2nd_pass") as acc:
            self.groups["group:2nd pass"] = acc
            self.widgets[F.USE_2ND] = gr.Checkbox(value=False, label=F.USE_2ND.replace("_", " "),
                                                  elem_id=f"tt_{F.USE_2ND}")
            self.copy_first = gr.Button("Copy settings from 1st pass", elem_id="tt_copy_1st_pass")
            self._parameter_columns(F.SECOND_PASS, 2, form, None)
        with gr.Group(visible=shown["group:iLECO"], elem_id="tt_ileco_group") as group:
            self.groups["group:iLECO"] = group
            for key, label in (("original prompt", "Original Prompt"), ("target prompt", "Target Prompt"),
                               ("negative prompt", "Negative Prompt(not userd in training)")):
                self.widgets[key] = gr.Textbox(label=label, lines=2, elem_id="tt_" + key.replace(" ", "_"))
            if self.host.can_generate:
                self._generate_row()
        with gr.Group(visible=shown["group:images"], elem_id="tt_images_group") as group:
            self.groups["group:images"] = group
            with gr.Row():
                self.images = {key: gr.Image(label=key.title(), type="pil", interactive=True,
                                             elem_id="tt_" + key.replace(" ", "_")) for key in IMAGE_KEYS}
        self._wire_train()

    def _generate_row(self) -> None:
        """Generate Original / Target / All: a txt2img of the prompts with the txt2img tab's current settings, which
        traintrain.js copies into the hidden #tt_txt2img_settings box (JSON by label) as a button is pressed."""
        with gr.Row():
            buttons = {which: gr.Button(f"Generate {which.title()}", elem_id=f"tt_generate_{which}")
                       for which in ("original", "target", "all")}
        self.txt2img_settings = gr.Textbox(value="", show_label=False, elem_id="tt_txt2img_settings",
                                           elem_classes=["tt-hidden"])
        self.preview = gr.Gallery(label="Preview", elem_id="tt_preview", columns=2)
        self.preview_info = transient(gr.Textbox(label="Generation info", lines=2, interactive=False,
                                                 elem_id="tt_preview_info"))
        prompts = [self.widgets["original prompt"], self.widgets["target prompt"], self.widgets["negative prompt"]]
        for which, button in buttons.items():
            listen(button.click, self._guard(lambda *values, which=which: self._on_generate(which, *values)),
                   [*prompts, self.txt2img_settings], [self.notice, self.message, self.preview, self.preview_info])

    def _on_generate(self, which: str, original: str, target: str, negative: str, txt2img: str) -> dict:
        if self.service.status().busy:
            raise UserError("a training job is running; Generate when it has finished")
        prompts = {"original": [original], "target": [target], "all": [original, target]}[which]
        images, info = self.host.generate(prompts, negative, txt2img)
        return {**self._say(f"Generated {len(images)} image(s)."), self.preview: images, self.preview_info: info}

    def _parameter_columns(self, settings, pass_no: int, form: dict, shown: dict | None) -> None:
        for title, columns in COLUMNS.items():
            if not any(s.column in columns for s in settings):
                continue
            gr.Markdown(f"**{title.title()} Parameters**")
            with gr.Row():
                for column in columns:
                    with gr.Column():
                        for s in (s for s in settings if s.column == column):
                            self._add(s, pass_no, form, shown)
            for s in (s for s in settings if s.column == "req_row" and title == "required"):
                self._add(s, pass_no, form, shown)

    def _add(self, s: Setting, pass_no: int, form: dict, shown: dict | None) -> None:
        key = F.field(pass_no, s.name)
        visible = shown[key] if shown is not None else True
        self.widgets[key] = setting_widget(s, form[key], pass_no, visible)

    def _queue_tab(self) -> None:
        with gr.Row():
            self.queue_reload = gr.Button("Reload Queue", elem_id="tt_queue_reload")
            self.queue_delete = gr.Button("Delete Queue", elem_id="tt_queue_delete")
            self.queue_name = transient(gr.Textbox(label="Name of Queue to delete", elem_id="tt_queue_name"))
        self.queue_table = gr.Dataframe(headers=QUEUE_HEADERS, value=self._queue_rows(), interactive=False,
                                        elem_id="tt_queue_table")
        said = [self.notice, self.message]
        listen(self.queue_reload.click, self._guard(self._on_queue_reload), [self.notice], [*said, self.queue_table])
        listen(self.queue_delete.click, self._guard(self._on_queue_delete), [self.queue_name],
               [*said, self.queue_table])

    def _plot_tab(self) -> None:
        with gr.Row():
            self.plot_reload = gr.Button("Reload Plot", elem_id="tt_plot_reload")
            self.plot_name = gr.Textbox(label="Name of logfile, blank for last or current training",
                                        elem_id="tt_plot_name")
        self.plot = gr.Plot(elem_id="tt_plot")
        listen(self.plot_reload.click, self._guard(self._on_plot), [self.notice, self.plot_name],
               [self.notice, self.message, self.plot], queue=False)

    def _image_tab(self) -> None:
        gr.Markdown("**Rotate random angle and scaling**")
        image_message = transient(gr.Textbox(label="Message", interactive=False, elem_id="tt_image_message"))
        with gr.Row():
            from_dir = gr.Button("From Directory", elem_id="tt_image_from_dir")
            from_file = gr.Button("From File", elem_id="tt_image_from_file")
        fix_side = gr.Radio(["none", "right", "left", "top", "bottom"], value="none", label="fix side",
                            elem_id="tt_image_fix_side")
        with gr.Row():
            image_dir = gr.Textbox(label="Image directory", elem_id="tt_image_dir")
            output_name = gr.Textbox(label="Output name", elem_id="tt_image_output_name")
            output_dir = gr.Textbox(label="Output directory", elem_id="tt_image_output_dir")
        with gr.Row():
            count = gr.Slider(0, 1000, value=5, step=1, label="number of images", elem_id="tt_image_count")
            angle = gr.Slider(0, 180, value=180, step=1, label="max_tilting_angle", elem_id="tt_image_angle")
            scale = gr.Slider(0, 1, value=0.4, step=0.01, label="minimun downscale ratio", elem_id="tt_image_scale")
        with gr.Row():
            change_angle = gr.Checkbox(value=True, label="change angle", elem_id="tt_image_change_angle")
            change_scale = gr.Checkbox(value=True, label="change scale", elem_id="tt_image_change_scale")
        image = gr.Image(label="Input Image", type="pil", image_mode="RGBA", elem_id="tt_image_input")
        options = [count, angle, scale, change_angle, change_scale, fix_side]
        listen(from_dir.click, _guard_one(_augment_directory), [image_dir, *options], [image_message])
        listen(from_file.click, _guard_one(_augment_file), [image, output_name, output_dir, *options],
               [image_message])

    # -- wiring ------------------------------------------------------------------------------------------------------
    def _wire_train(self) -> None:
        form_inputs = set(self.widgets.values()) | set(self.images.values())
        all_form = list(self.widgets.values())
        said = [self.notice, self.message]  # every guarded handler may set the notice (an error at least)
        status_outputs = [self.message, self.progress, self.start, self.stop, self.stop_save]
        listen(self.start.click, self._guard(self._on_start), form_inputs, [self.notice, *status_outputs])
        listen(self.add_queue.click, self._guard(self._on_add_queue), form_inputs, [self.notice, *status_outputs])
        listen(self.stop.click, self._guard(lambda: self._on_stop(False)), None, [self.notice, *status_outputs],
               queue=False)
        listen(self.stop_save.click, self._guard(lambda: self._on_stop(True)), None, [self.notice, *status_outputs],
               queue=False)
        # reads the notice and never writes it, so a poll cannot put back a notice that a click just replaced;
        # no loading overlay, it runs every second
        listen(self.poll.click, self._on_poll, [self.notice, self.samples_shown],
               [*status_outputs, self.samples, self.samples_shown], queue=False, progress=False)

        visible_outputs = [self.widgets[k] for k in F.visibility("LoRA") if k in self.widgets]
        visible_outputs += list(self.groups.values())
        listen(self.widgets["mode"].change, self._on_mode, [self.widgets["mode"]], visible_outputs, queue=False)

        fill_outputs = [*said, *all_form, *self.groups.values()]
        listen(self.preset_load.click, self._guard(self._on_preset_load), [self.preset], fill_outputs)
        listen(self.json_load.click, self._guard(self._on_json_load), [self.json_name], fill_outputs)
        listen(self.preset_save.click, self._guard(self._on_preset_save), form_inputs, [*said, self.preset])
        listen(self.preset_refresh.click, self._guard(self._on_preset_refresh), None, [*said, self.preset])
        listen(self.model_refresh.click, self._guard(self._on_model_refresh), None, [*said, self.widgets["model"]])
        listen(self.vae_refresh.click, self._guard(self._on_vae_refresh), None, [*said, self.widgets["vae"]])
        first = {self.widgets[F.field(1, s.name)] for s in F.SECOND_PASS}
        second = [self.widgets[F.field(2, s.name)] for s in F.SECOND_PASS]
        listen(self.copy_first.click, self._guard(self._on_copy), first, [*said, *second])

    def _guard(self, handler):
        """The one boundary for user errors: a one-line notice in this session's Message box, nothing else changes."""

        def run(*args):
            try:
                return handler(*args)
            except UserError as err:
                return self._say(f"Error: {err}")

        return run

    # -- handlers ----------------------------------------------------------------------------------------------------
    def _text(self, notice: str, status: RunStatus | None = None) -> str:
        text = describe(status or self.service.status())
        return f"{notice}\n{text}" if notice else text

    def _say(self, notice: str) -> dict:
        """Set this session's notice and show it."""
        return {self.notice: notice, self.message: self._text(notice)}

    def _status_updates(self, notice: str) -> dict:
        status = self.service.status()
        busy = status.busy or bool(status.others)  # Stop: the job shown, or another device's when it has ended
        return {self.message: self._text(notice, status), self.progress: progress_html(status),
                self.start: gr.update(interactive=status.idle_devices > 0), self.stop: gr.update(interactive=busy),
                self.stop_save: gr.update(interactive=busy)}

    def _say_with_status(self, notice: str) -> dict:
        return {self.notice: notice, **self._status_updates(notice)}

    def _form(self, values: dict) -> dict:
        by_component = {component: key for key, component in self.widgets.items()}
        return {by_component[c]: v for c, v in values.items() if c in by_component}

    def _job(self, values: dict):
        required = packages.missing(packages.REQUIRED)
        if required:
            raise UserError(f"cannot train: {', '.join(required)} is not installed (see install.py)")
        form = self._form(values)
        job = F.job_from_form(form)  # validates before any image is written
        if form["mode"] in PAIR_MODES:
            images = save_pair({key: values.get(self.images[key]) for key in IMAGE_KEYS}, self.folders.json,
                               job_name(job), form["mode"])
            job = F.job_from_form(form, images)
        return job

    def _on_start(self, values: dict) -> dict:
        job = self._job(values)
        return self._say_with_status(self.service.start(job) + memory_note(job, self.host))

    def _on_add_queue(self, values: dict) -> dict:
        return self._say_with_status(self.service.enqueue(self._job(values)))

    def _on_stop(self, save: bool) -> dict:
        return self._say_with_status(self.service.stop(save))

    def _on_poll(self, notice: str, shown=()) -> dict:
        updates = self._status_updates(notice)
        samples = self.service.status().samples
        if tuple(shown or ()) != samples:
            updates.update({self.samples: gr.update(value=[(p, Path(p).stem) for p in samples], visible=bool(samples)),
                            self.samples_shown: samples})
        return updates

    def _on_mode(self, mode: str) -> dict:
        shown = F.visibility(mode)
        widgets = {**self.widgets, **self.groups}
        return {widgets[key]: gr.update(visible=visible) for key, visible in shown.items() if key in widgets}

    def _fill(self, data: dict, source: str) -> dict:
        form, problems = F.form_from_json(data)
        shown = F.visibility(form["mode"])
        updates = {}
        for key, component in self.widgets.items():
            if key in shown:
                updates[component] = gr.update(value=form[key], visible=shown[key])
            elif key in form:
                updates[component] = gr.update(value=form[key])
        for key, what in (("model", "model"), ("vae", "VAE")):
            if not self._names_one(form[key], key, what):  # keep the user's current choice
                updates.pop(self.widgets[key], None)
                if form[key] and form[key] != "None":
                    problems.append(f"Not loaded: {what} {form[key]!r} is not here; the current {what} is kept")
        updates.update({group: gr.update(visible=shown[key]) for key, group in self.groups.items()})
        updates.update(self._say("\n".join([f"Loaded {source}.", *problems])))
        return updates

    def _names_one(self, value: str, key: str, what: str) -> bool:
        """Does a loaded file's Model / VAE name one that exists here? Upstream presets leave it empty, and a
        saved run may name a checkpoint this install lacks: then the dropdown keeps what the user chose."""
        if not value or (key == "vae" and value == "None"):
            return False
        if value in (self.host.models() if key == "model" else self.host.vaes()):
            return True
        try:
            return bool(self.host.resolve(value, what))
        except UserError:
            return False

    def _on_preset_load(self, name: str) -> dict:
        return self._fill(presets.load_preset(name, self.folders.presets), f"preset {name}")

    def _on_json_load(self, name: str) -> dict:
        path = presets.find_json(name, self.folders.json)
        return self._fill(presets.read_json(path), str(path))

    def _on_preset_save(self, values: dict) -> dict:
        job = self._job(values)
        name = job.settings.save_lora_name
        path = presets.save_preset(name, F.json_from_form(self._form(values)), job.settings.save_overwrite,
                                   self.folders.presets)
        return {**self._say(f"Saved preset {path}"),
                self.preset: gr.update(choices=presets.preset_names(self.folders.presets), value=path.stem)}

    def _on_preset_refresh(self) -> dict:
        return {self.preset: gr.update(choices=presets.preset_names(self.folders.presets))}

    def _on_model_refresh(self) -> dict:
        models = self.host.refresh_models()
        return {self.widgets["model"]: gr.update(choices=models)}

    def _on_vae_refresh(self) -> dict:
        vaes = self.host.refresh_vaes()
        return {self.widgets["vae"]: gr.update(choices=vaes)}

    def _on_copy(self, values: dict) -> dict:
        copied = F.copy_first_pass(self._form(values))
        return {self.widgets[key]: value for key, value in copied.items()}

    def _queue_rows(self) -> list[list[str]]:
        """With several devices first the jobs training ("<name> (training on cuda:1)"); then the waiting jobs, then
        those a crash interrupted (named "<name> (interrupted)"; Delete dismisses them)."""
        rows = []
        for job, device in self.service.running():
            if device:
                row = queue_row(job)
                rows.append([f"{row[0]} (training on {device})", *row[1:]])
        rows += [queue_row(job) for job in self.service.queue.jobs()]
        for job in self.service.queue.interrupted():
            row = queue_row(job)
            rows.append([f"{row[0]} (interrupted)", *row[1:]])
        return rows or [[""] * len(QUEUE_HEADERS)]

    def _on_queue_reload(self, notice: str) -> dict:
        return {self.queue_table: self._queue_rows(), self.message: self._text(notice)}

    def _on_queue_delete(self, name: str) -> dict:
        return {**self._say(self.service.delete(name)), self.queue_table: self._queue_rows()}

    def _on_plot(self, notice: str, name: str) -> dict:
        status = self.service.status()
        if not str(name or "").strip() and status.history:
            series = plot.series_from_history(status.history, status.eval_history)
            title = f"Training Result: {status.name}"
        else:
            path = plot.find_log(name, self.folders.logs)
            series, title = plot.series_from_log(path), f"Training Result: {path.stem}"
        return {self.plot: plot.loss_figure(series, title), self.message: self._text(notice)}


def _tool_button(value: str, elem_id: str):
    """The standalone app's version of the webui's ToolButton: a small emoji button (sized by style.css)."""
    return gr.Button(value=value, elem_id=elem_id, elem_classes=["tool", "tt-tool"])


def _options(count, angle, scale, change_angle, change_scale, fix_side):
    from ..imagetools.augment import AugmentOptions

    return AugmentOptions(count=int(count), max_angle=float(angle), min_scale=float(scale),
                          change_angle=bool(change_angle), change_scale=bool(change_scale), fix_side=fix_side)


def _augment_directory(directory, *options) -> str:
    from ..imagetools.augment import augment_directory, summary

    _, written = augment_directory(str(directory or "").strip(), _options(*options), random.Random())
    return summary(written)


def _augment_file(image, name, directory, *options) -> str:
    from ..imagetools.augment import augment_file, summary

    return summary(augment_file(image, str(name or "").strip(), str(directory or "").strip(), _options(*options),
                                random.Random()))


def _guard_one(handler):
    def run(*args):
        try:
            return handler(*args)
        except UserError as err:
            return f"Error: {err}"

    return run


def build_tab(service: TrainingService, host: Host, folders: Folders = Folders(), tool_button=None) -> gr.Blocks:
    return TrainTrainTab(service, host, folders, tool_button).build()
