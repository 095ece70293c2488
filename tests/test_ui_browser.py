"""End to end in headless Chromium against `python -m trainer ui` on 127.0.0.1.

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
    shot(page, "03-training")
    fill(page, "tt_1_save_lora_name", "e2e_second")
    fill(page, "tt_1_train_iterations", "4")
    click(page, "tt_add_queue")
    wait_message(page, "Added 'e2e_second' to the queue (position 1)")

    # progress moves while it trains (javascript/traintrain.js polls every second)
    first_step = int(progress.split("step ")[1].split("/")[0])
    later = wait_message(page, "step ", timeout=30)
    deadline = time.time() + 60
    while int(later.split("step ")[1].split("/")[0]) <= first_step and time.time() < deadline:
        page.wait_for_timeout(300)
        later = message(page)
    assert int(later.split("step ")[1].split("/")[0]) > first_step, later

    done = wait_message(page, "Successfully created", timeout=300)
    assert (tmp / "out" / "e2e_first.safetensors").is_file(), done
    shot(page, "04-first-done")
    # the queued job runs after the first
    wait_message(page, "e2e_second.safetensors", timeout=300)
    assert (tmp / "out" / "e2e_second.safetensors").is_file()
    shot(page, "05-queue-done")

    page.locator("#tt_tabs button", has_text="Plot").first.click()
    fill(page, "tt_plot_name", "")
    click(page, "tt_plot_reload")
    page.wait_for_selector("#tt_plot img", timeout=30_000)
    shot(page, "06-plot")
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
        page.wait_for_timeout(400)
        seen = tuple(page.locator(f"#{g}").first.is_visible()
                     for g in ("tt_2nd_pass", "tt_ileco_group", "tt_images_group"))
        assert seen == expected, mode
        # a setting shown in LoRA and Multi-ADDifT only: the data folder
        assert textbox(page, "tt_1_lora_data_directory").is_visible() == (mode in ("LoRA", "Difference",
                                                                                   "Multi-ADDifT")), mode
        assert textbox(page, "tt_1_diff_target_name").is_visible() == (mode == "Multi-ADDifT"), mode
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


@pytest.fixture(scope="module")
def webui_page(tmp_path_factory, workspace):
    """The tab rendered inside the fake webui's page (tests/fake_webui), served with the webui's queue on."""
    _, models, _ = workspace
    root = tmp_path_factory.mktemp("webui-page")
    port = free_port()
    log = open(root / "webui.log", "w")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "FAKE_WEBUI_ROOT": str(root), "FAKE_WEBUI_CKPT_DIR": str(models),
           "FAKE_WEBUI_LORA_DIR": str(root / "Lora"), "FAKE_WEBUI_SERVE": str(port)}
    process = subprocess.Popen([sys.executable, str(ROOT / "tests" / "fake_webui" / "run_extension.py")], cwd=root,
                               env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.time() + 120
    while True:
        assert process.poll() is None, (root / "webui.log").read_text()
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                break
        except OSError:
            assert time.time() < deadline, "the fake webui did not start"
            time.sleep(0.5)
    yield f"http://127.0.0.1:{port}/", root / "Lora"
    stop_server(process)


def test_the_tab_inside_the_webui_page(browser, webui_page, workspace):
    """Rendered as a webui tab, with the webui's queue on: presets fill both passes, and a run shows live progress
    (traintrain.js polling) and lands in the webui's LoRA folder."""
    url, lora_dir = webui_page
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

    configure_lora_run(page, workspace[2], "webui_tab", 12)
    click(page, "tt_start")
    wait_message(page, "step ")  # only the poll brings this
    wait_message(page, "Successfully created", timeout=300)
    assert (lora_dir / "webui_tab.safetensors").is_file()
    shot(page, "21-webui-trained")
    page.close()


def test_generate_uses_the_txt2img_tabs_current_settings(browser, webui_page):
    """iLECO's Generate Original inside the webui page: traintrain.js reads the txt2img tab's current values by their
    labels as the button is pressed, and the webui's txt2img (the fake's process_images) renders with them."""
    url, _ = webui_page
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
