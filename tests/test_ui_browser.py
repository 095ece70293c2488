"""End to end in headless Chromium against `python -m trainer ui` on 127.0.0.1, and the tab inside the fake webui's and
the fake Forge Neo's pages. Nothing here depends on the Gradio version: the same tests run under Gradio 3.41 (.venv)
and Gradio 4.40 (a Gradio-4 venv), and each page's Gradio is whatever that interpreter has.

Needs Debian's chromium (/usr/bin/chromium) and the `playwright` package (no browser download: it drives the system
Chromium). `.ci/run` installs both; set TRAINTRAIN_SKIP_BROWSER=1 to skip these tests on a machine without them.
Screenshots go to test-artifacts/screenshots/.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = os.environ.get("TRAINTRAIN_CHROMIUM", "/usr/bin/chromium")
SHOTS = ROOT / "test-artifacts" / "screenshots"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]

if os.environ.get("TRAINTRAIN_SKIP_BROWSER") == "1":
    pytest.skip("TRAINTRAIN_SKIP_BROWSER=1", allow_module_level=True)
if not Path(CHROMIUM).exists():
    pytest.fail(f"{CHROMIUM} is missing: `apt-get install chromium` (or set TRAINTRAIN_SKIP_BROWSER=1)",
                pytrace=False)
playwright_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (no browser download)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(tmp: Path, models: Path, port: int) -> subprocess.Popen:
    log = open(tmp / f"server-{port}.log", "w")
    process = subprocess.Popen(
        [sys.executable, "-m", "trainer", "ui", "--port", str(port), "--models-dir", str(models),
         "--output-dir", str(tmp / "out"), "--data-dir", str(tmp / "data")],
        cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    deadline = time.time() + 120
    while time.time() < deadline:
        if process.poll() is not None:
            raise AssertionError((tmp / f"server-{port}.log").read_text())
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return process
        except OSError:
            time.sleep(0.5)
    process.kill()
    raise AssertionError("the UI did not start within 120 s")


def stop_server(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, demo_models, sample_images):
    tmp = tmp_path_factory.mktemp("ui")
    models = tmp / "models"
    models.mkdir()
    for suffix in (".safetensors", ".yaml"):
        shutil.copy(demo_models["sd1"].with_suffix(suffix), models / f"demo-sd1{suffix}")
    return tmp, models, sample_images


@pytest.fixture(scope="module")
def browser():
    with playwright_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def app(workspace):
    tmp, models, _ = workspace
    port = free_port()
    process = start_server(tmp, models, port)
    yield f"http://127.0.0.1:{port}/", tmp
    stop_server(process)


def open_page(browser, url):
    page = browser.new_page(viewport={"width": 1400, "height": 1100})
    page.goto(url)
    page.wait_for_selector("#tt_message textarea", timeout=60_000)
    return page


def shot(page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=False)


def message(page) -> str:
    return page.locator("#tt_message textarea").input_value()


def wait_message(page, needle: str, timeout: float = 120) -> str:
    deadline = time.time() + timeout
    text = ""
    while time.time() < deadline:
        text = message(page)
        if needle in text:
            return text
        page.wait_for_timeout(250)
    raise AssertionError(f"{needle!r} never appeared in the Message box; last: {text!r}")


def textbox(page, elem_id: str):
    return page.locator(f'[id="{elem_id}"] textarea, [id="{elem_id}"] input').first


def fill(page, elem_id: str, value: str) -> None:
    box = textbox(page, elem_id)
    box.fill(value)
    box.dispatch_event("input")
    box.blur()


def tick(page, elem_id: str, on: bool = True) -> None:
    box = page.locator(f'[id="{elem_id}"] input[type=checkbox]')
    if box.is_checked() != on:
        box.click()


def choose(page, elem_id: str, value: str) -> None:
    """Pick a dropdown option (Gradio 3 and 4: type into the dropdown's input, then click the option)."""
    box = page.locator(f'[id="{elem_id}"] input').first
    box.click()
    box.fill(value)
    page.locator(f'[id="{elem_id}"] ul li', has_text=value).first.click()


def click(page, elem_id: str) -> None:
    page.locator(f'[id="{elem_id}"]').first.click()


def wait_until(page, check, what: str, timeout: float = 30) -> None:
    deadline = time.time() + timeout
    while not check():
        assert time.time() < deadline, f"{what}: not within {timeout} s"
        page.wait_for_timeout(200)


def enabled(page, elem_id: str) -> bool:
    button = page.locator(f'[id="{elem_id}"]').first
    return (button if button.evaluate("n => n.tagName") == "BUTTON" else button.locator("button").first).is_enabled()


def open_tab(page, title: str) -> None:
    page.locator("#tt_tabs button", has_text=title).first.click()


def step_of(text: str) -> int:
    return int(text.split("step ")[1].split("/")[0])


def start_and_stop(page, name: str, save: bool) -> str:
    """Start the configured run, wait for a step (the poll brings it), press Stop / Stop and Save; the final message."""
    click(page, "tt_start")
    wait_message(page, "step ")
    wait_until(page, lambda: enabled(page, "tt_stop") and not enabled(page, "tt_start"),
               "Stop enabled and Start disabled while it trains")
    click(page, "tt_stop_save" if save else "tt_stop")
    wait_message(page, f"Stopping '{name}' after this step" + (" and saving it." if save else " (not saved)."))
    done = wait_message(page, "Stopped at step", timeout=120)
    wait_until(page, lambda: enabled(page, "tt_start") and not enabled(page, "tt_stop"), "Start enabled again")
    return done


def created(done: str) -> Path:
    """The file a "Successfully created <path>" message names (Stop and Save adds `_<step>steps` to the name)."""
    return Path(done.split("Successfully created ")[1].split()[0])


def plot_shows(page) -> None:
    open_tab(page, "Plot")
    fill(page, "tt_plot_name", "")
    click(page, "tt_plot_reload")
    page.wait_for_selector("#tt_plot img", timeout=30_000)
    open_tab(page, "Train")


def configure_lora_run(page, images: Path, name: str, steps: int) -> None:
    choose(page, "tt_preset", "LoRA")
    click(page, "tt_preset_load")
    wait_message(page, "Loaded preset LoRA")
    assert textbox(page, "tt_1_train_iterations").input_value() == "1000"  # the preset's value, not ours
    choose(page, "tt_model", "demo-sd1.safetensors")
    fill(page, "tt_1_lora_data_directory", str(images))
    fill(page, "tt_1_image_size(height, width)", "64")
    fill(page, "tt_1_image_min_length", "64")
    choose(page, "tt_image_buckets_step", "64")
    fill(page, "tt_1_train_iterations", str(steps))
    fill(page, "tt_1_train_batch_size", "1")
    fill(page, "tt_1_train_learning_rate", "1e-3")
    fill(page, "tt_1_save_lora_name", name)
    tick(page, "tt_logging_save_csv")


def test_train_queue_plot_in_the_browser(browser, app, workspace):
    url, tmp = app
    _, _, images = workspace
    page = open_page(browser, url)
    shot(page, "01-loaded")
    configure_lora_run(page, images, "e2e_first", 24)
    shot(page, "02-configured")

    click(page, "tt_start")
    progress = wait_message(page, "step ")
    assert "/24" in progress and "loss EMA" in progress and "ETA" in progress
    page.wait_for_selector('#tt_progress .tt-progress[data-state="training"]', timeout=10_000)  # the bar is drawn
    page.wait_for_function("document.title.startsWith('[')", timeout=10_000)  # "[37%] TrainTrain"
    assert not enabled(page, "tt_start") and enabled(page, "tt_stop")
    shot(page, "03-training")
    fill(page, "tt_1_save_lora_name", "e2e_second")
    fill(page, "tt_1_train_iterations", "4")
    click(page, "tt_add_queue")
    wait_message(page, "Added 'e2e_second' to the queue (position 1)")
    fill(page, "tt_1_save_lora_name", "e2e_dropped")
    click(page, "tt_add_queue")
    wait_message(page, "Added 'e2e_dropped' to the queue (position 2)")

    # the Queue tab lists both; Delete takes one out
    open_tab(page, "Queue")
    click(page, "tt_queue_reload")
    table = page.locator("#tt_queue_table")
    wait_until(page, lambda: "e2e_second" in table.inner_text() and "e2e_dropped" in table.inner_text(),
               "the queue table lists both waiting jobs")
    fill(page, "tt_queue_name", "e2e_dropped")
    click(page, "tt_queue_delete")
    wait_message(page, "Removed 'e2e_dropped' from the queue.")
    wait_until(page, lambda: "e2e_dropped" not in table.inner_text(), "the deleted job leaves the table")
    assert "e2e_second" in table.inner_text()
    shot(page, "03b-queue")
    open_tab(page, "Train")

    # progress moves while it trains (javascript/traintrain.js polls every second)
    first_step = step_of(progress)
    later = wait_message(page, "step ", timeout=30)
    deadline = time.time() + 60
    while step_of(later) <= first_step and time.time() < deadline:
        page.wait_for_timeout(300)
        later = message(page)
    assert step_of(later) > first_step, later

    done = wait_message(page, "Successfully created", timeout=300)
    assert (tmp / "out" / "e2e_first.safetensors").is_file(), done
    shot(page, "04-first-done")
    # the queued job runs after the first
    wait_message(page, "e2e_second.safetensors", timeout=300)
    assert (tmp / "out" / "e2e_second.safetensors").is_file()
    assert not (tmp / "out" / "e2e_dropped.safetensors").exists()
    shot(page, "05-queue-done")

    page.locator("#tt_tabs button", has_text="Plot").first.click()
    fill(page, "tt_plot_name", "")
    click(page, "tt_plot_reload")
    page.wait_for_selector("#tt_plot img", timeout=30_000)
    shot(page, "06-plot")
    page.close()


def test_refresh_buttons_and_stop_in_the_browser(browser, app, workspace):
    """The 🔄 buttons list what appeared since the page loaded (presets, checkpoints, VAEs); Stop ends a run unsaved."""
    url, tmp = app
    _, models, images = workspace
    page = open_page(browser, url)
    preset = tmp / "data" / "presets" / "e2e_fresh.json"
    checkpoint = models / "e2e-refreshed.safetensors"
    vae = models / "vae" / "e2e-refreshed-vae.safetensors"
    try:
        preset.write_text('{"mode": "LoRA", "train_iterations": "77"}', encoding="utf-8")
        os.link(models / "demo-sd1.safetensors", checkpoint)
        vae.parent.mkdir(exist_ok=True)
        vae.write_bytes(b"not read: only listed")
        click(page, "tt_preset_refresh")
        choose(page, "tt_preset", "e2e_fresh")
        click(page, "tt_preset_load")
        wait_message(page, "Loaded preset e2e_fresh")
        assert textbox(page, "tt_1_train_iterations").input_value() == "77"
        click(page, "tt_model_refresh")
        choose(page, "tt_model", "e2e-refreshed.safetensors")
        click(page, "tt_vae_refresh")
        choose(page, "tt_vae", "e2e-refreshed-vae.safetensors")
        choose(page, "tt_vae", "None")
        shot(page, "07-refreshed")
    finally:
        for made in (preset, checkpoint, vae):
            made.unlink(missing_ok=True)

    configure_lora_run(page, images, "e2e_stopped", 2000)
    done = start_and_stop(page, "e2e_stopped", save=False)
    assert "Successfully created" not in done and not (tmp / "out" / "e2e_stopped.safetensors").exists(), done
    shot(page, "08-stopped")
    page.close()


def test_sample_previews_show_in_the_gallery(browser, app, workspace):
    """A run with sample previews fills the gallery under the Message box (#tt_samples) as the grids are written."""
    url, tmp = app
    _, _, images = workspace
    page = open_page(browser, url)
    configure_lora_run(page, images, "e2e_samples", 4)
    for elem_id, value in (("tt_1_sample_every_n_steps", "2"), ("tt_1_sample_steps", "2"),
                           ("tt_1_sample_size", "64"), ("tt_1_sample_multipliers", "0, 1")):
        fill(page, elem_id, value)
    click(page, "tt_start")
    wait_message(page, "Sample previews:", timeout=180)
    page.wait_for_function("document.querySelectorAll('#tt_samples img').length >= 2", timeout=30_000)
    folder = tmp / "out" / "e2e_samples_samples"
    assert sorted(p.name for p in folder.iterdir()) == ["e2e_samples_000002.png", "e2e_samples_000004.png"]
    shot(page, "09-samples")
    page.close()

MODE_GROUPS = {  # mode → (2nd pass accordion, iLECO group, images group)
    "LoRA": (False, False, False),
    "iLECO": (False, True, False),
    "Difference": (True, False, True),
    "ADDifT": (False, False, True),
    "Multi-ADDifT": (False, False, False),
}


def test_mode_switch_shows_the_right_groups(browser, app):
    url, _ = app
    page = open_page(browser, url)
    for mode, expected in MODE_GROUPS.items():
        page.locator("#tt_mode label", has_text=mode).first.click()

        def seen():
            groups = tuple(page.locator(f"#{g}").first.is_visible()
                           for g in ("tt_2nd_pass", "tt_ileco_group", "tt_images_group"))
            # settings shown in some modes only: the data folder, Multi-ADDifT's target suffix
            return (groups, textbox(page, "tt_1_lora_data_directory").is_visible(),
                    textbox(page, "tt_1_diff_target_name").is_visible())

        wanted = (expected, mode in ("LoRA", "Difference", "Multi-ADDifT"), mode == "Multi-ADDifT")
        # the page updates when the server answers the click: poll (a busy machine answers late), never guess
        wait_until(page, lambda: seen() == wanted, f"{mode}: groups and settings {wanted}", timeout=20)
        shot(page, f"10-mode-{mode}")
    page.close()


def test_each_page_has_its_own_message(browser, app):
    """Two browser sessions: an error in one stays out of the other's Message box, and each page's polling
    (every second) keeps showing that page's own notice."""
    url, _ = app
    first, second = open_page(browser, url), open_page(browser, url)
    fill(first, "tt_1_train_iterations", "many")
    click(first, "tt_start")
    wait_message(first, "Error: train_iterations: 'many' is not a whole number")
    first.wait_for_timeout(2500)  # a few polls on both pages
    assert message(first).startswith("Error: train_iterations")
    assert "Error" not in message(second), message(second)
    first.close()
    second.close()


def serve_fake(root: Path, driver: Path, env: dict) -> subprocess.Popen:
    """Start a fake webui's run_extension.py serving its page (the extension loaded as the webui loads it)."""
    log = open(root / "webui.log", "w")
    process = subprocess.Popen([sys.executable, str(driver)], cwd=root, stdout=log, stderr=subprocess.STDOUT,
                               env={**os.environ, "HF_HUB_OFFLINE": "1", **env})
    deadline = time.time() + 120
    port = int(next(v for k, v in env.items() if k.endswith("_SERVE")))
    while True:
        assert process.poll() is None, (root / "webui.log").read_text()
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return process
        except OSError:
            assert time.time() < deadline, f"{driver} did not start"
            time.sleep(0.5)


@pytest.fixture(scope="module")
def webui_page(tmp_path_factory, workspace):
    """The tab rendered inside the fake webui's page (tests/fake_webui), served with the webui's queue on."""
    _, models, _ = workspace
    root = tmp_path_factory.mktemp("webui-page")
    port = free_port()
    (root / "VAE").mkdir()
    process = serve_fake(root, ROOT / "tests" / "fake_webui" / "run_extension.py", {
        "FAKE_WEBUI_ROOT": str(root), "FAKE_WEBUI_CKPT_DIR": str(models), "FAKE_WEBUI_LORA_DIR": str(root / "Lora"),
        "FAKE_WEBUI_VAE_DIR": str(root / "VAE"), "FAKE_WEBUI_SERVE": str(port)})
    yield f"http://127.0.0.1:{port}/", root / "Lora", root / "VAE"
    stop_server(process)


def test_the_tab_inside_the_webui_page(browser, webui_page, workspace):
    """Rendered as a webui tab, with the webui's queue on: presets fill both passes, the 🔄 buttons ask the webui for
    its lists again, a run shows live progress (traintrain.js polling), Stop and Save lands it in the webui's LoRA
    folder, and the Plot tab draws it."""
    url, lora_dir, vae_dir = webui_page
    page = browser.new_page(viewport={"width": 1400, "height": 1100})
    page.goto(url)
    page.locator("#tabs button", has_text="TrainTrain").first.click()
    page.wait_for_selector("#tab_traintrain #tt_message textarea", timeout=60_000)
    choose(page, "tt_preset", "Difference_Use2ndPass")
    click(page, "tt_preset_load")
    wait_message(page, "Loaded preset Difference_Use2ndPass")
    assert page.locator("#tt_2nd_pass").first.is_visible() and page.locator("#tt_images_group").first.is_visible()
    page.locator("#tt_2nd_pass").first.click()  # open the accordion
    assert textbox(page, "tt_2_train_learning_rate").input_value() == "1e-4"
    assert textbox(page, "tt_1_train_learning_rate").input_value() == "5e-4"
    shot(page, "20-webui-difference-preset")

    (vae_dir / "webui-fresh.vae.pt").write_bytes(b"not read: only listed")
    click(page, "tt_vae_refresh")
    choose(page, "tt_vae", "webui-fresh.vae.pt")
    choose(page, "tt_vae", "None")
    checkpoint = workspace[1] / "webui-refreshed.safetensors"
    os.link(workspace[1] / "demo-sd1.safetensors", checkpoint)
    try:
        click(page, "tt_model_refresh")
        choose(page, "tt_model", "webui-refreshed.safetensors")
    finally:
        checkpoint.unlink()

    configure_lora_run(page, workspace[2], "webui_tab", 2000)
    done = start_and_stop(page, "webui_tab", save=True)  # the poll brings the steps and the end
    assert "Successfully created" in done, done
    assert created(done).parent == lora_dir and created(done).name.startswith("webui_tab_") and created(done).is_file()
    plot_shows(page)
    shot(page, "21-webui-trained")
    page.close()


def test_generate_uses_the_txt2img_tabs_current_settings(browser, webui_page):
    """iLECO's Generate Original inside the webui page: traintrain.js reads the txt2img tab's current values by their
    labels as the button is pressed, and the webui's txt2img (the fake's process_images) renders with them."""
    url, _, _ = webui_page
    page = browser.new_page(viewport={"width": 1400, "height": 1100})
    page.goto(url)
    page.wait_for_selector("#tab_txt2img #txt2img_steps input[type=number]", timeout=60_000)
    for elem_id, value in (("txt2img_steps", "7"), ("txt2img_cfg_scale", "4.5"), ("txt2img_width", "64"),
                           ("txt2img_height", "64")):
        box = page.locator(f"#{elem_id} input[type=number]").first
        box.fill(value)
        box.dispatch_event("input")
        box.blur()
    fill(page, "txt2img_seed", "5")
    page.locator("#tabs button", has_text="TrainTrain").first.click()
    page.wait_for_selector("#tab_traintrain #tt_message textarea", timeout=60_000)
    page.locator("#tt_mode label", has_text="iLECO").first.click()
    page.wait_for_selector("#tt_generate_original", state="visible", timeout=30_000)
    fill(page, "tt_original_prompt", "a red cat")
    click(page, "tt_generate_original")
    wait_message(page, "Generated 1 image(s)")
    info = textbox(page, "tt_preview_info").input_value()
    assert "a red cat" in info and "Steps: 7" in info and "CFG scale: 4.5" in info and "Seed: 5" in info, info
    assert "Size: 64x64" in info, info
    assert page.locator("#tt_preview img").count() >= 1
    shot(page, "22-webui-generate")
    page.close()


@pytest.fixture(scope="module")
def forge_page(tmp_path_factory, workspace):
    """The tab inside the fake Forge Neo's page (tests/fake_forge): Neo's queue (default_concurrency_limit=32) under
    Gradio 4, Classic's (64) under Gradio 3."""
    _, models, _ = workspace
    root = tmp_path_factory.mktemp("forge-page")
    port = free_port()
    process = serve_fake(root, ROOT / "tests" / "fake_forge" / "run_extension.py", {
        "FAKE_FORGE_ROOT": str(root), "FAKE_FORGE_CKPT_DIR": str(models), "FAKE_FORGE_LORA_DIR": str(root / "Lora"),
        "FAKE_FORGE_SERVE": str(port)})
    yield f"http://127.0.0.1:{port}/", root / "Lora"
    stop_server(process)


def test_the_tab_inside_the_forge_page(browser, forge_page, workspace):
    """Forge Neo's page: the tab's buttons are wired (the 🔄 buttons, Start, progress by the poll, Stop and Save into
    Forge's LoRA folder, the queue, Plot)."""
    url, lora_dir = forge_page
    page = browser.new_page(viewport={"width": 1400, "height": 1100})
    page.goto(url)
    page.locator("#tabs button", has_text="TrainTrain").first.click()
    page.wait_for_selector("#tab_traintrain #tt_message textarea", timeout=60_000)
    assert page.evaluate("() => !!window.traintrainLoaded")  # Forge puts javascript/*.js and style.css in its page
    click(page, "tt_model_refresh")
    click(page, "tt_vae_refresh")
    configure_lora_run(page, workspace[2], "forge_tab", 2000)
    done = start_and_stop(page, "forge_tab", save=True)
    assert "Successfully created" in done, done
    assert created(done).parent == lora_dir and created(done).name.startswith("forge_tab_") and created(done).is_file()
    fill(page, "tt_1_save_lora_name", "forge_queued")
    fill(page, "tt_1_train_iterations", "2")
    click(page, "tt_add_queue")  # nothing runs: it starts at once
    wait_message(page, "Added 'forge_queued' to the queue (position 1)")
    wait_message(page, "forge_queued.safetensors", timeout=120)
    plot_shows(page)
    shot(page, "30-forge-trained")
    page.close()
