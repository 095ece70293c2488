// TrainTrain tab: live progress and plot refresh.
// Loaded by the webui from javascript/ and by `python -m trainer ui` (inlined in the page head).
// The server holds the job state; this script only asks for it: it clicks the hidden #tt_poll button every
// second while the TrainTrain tab is on screen, and while a job trains it re-draws the Plot tab every 5 s
// when that tab is open and no log name is typed. It also mirrors the progress into the page title.
// In the webui, pressing an iLECO Generate button first copies the txt2img tab's current settings (by their labels)
// into the hidden #tt_txt2img_settings box as JSON, so the server renders with them.
(function () {
    "use strict";
    if (window.traintrainLoaded) {
        return;  // loaded twice (a page that inlines it and also serves it): one poll, not two
    }
    window.traintrainLoaded = true;
    var POLL_MS = 1000;
    var PLOT_MS = 5000;
    var lastPlot = 0;
    var baseTitle = null;

    function root() {
        if (typeof gradioApp === "function") {
            return gradioApp();
        }
        var app = document.querySelector("gradio-app");
        return app ? (app.shadowRoot || app) : document;
    }

    function byId(id) {
        return root().querySelector("#" + id);
    }

    function onScreen(node) {
        return !!node && node.offsetParent !== null;
    }

    function buttonIn(id) {
        var node = byId(id);
        if (!node) {
            return null;
        }
        return node.tagName === "BUTTON" ? node : node.querySelector("button");
    }

    function progressState() {
        var bar = root().querySelector("#tt_progress .tt-progress");
        if (!bar) {
            return { state: "idle", percent: 0 };
        }
        return { state: bar.getAttribute("data-state"), percent: parseFloat(bar.getAttribute("data-percent")) || 0 };
    }

    function showInTitle(progress) {
        if (baseTitle === null) {
            baseTitle = document.title;
        }
        var busy = progress.state === "training" || progress.state === "loading";
        var prefix = progress.state === "training" ? "[" + Math.round(progress.percent) + "%] " : "[loading] ";
        var wanted = busy ? prefix + baseTitle : baseTitle;
        if (document.title !== wanted) {
            document.title = wanted;
        }
    }

    function tick() {
        var tabs = byId("tt_tabs");
        if (!onScreen(tabs) || document.hidden) {
            return;
        }
        var poll = buttonIn("tt_poll");
        if (poll) {
            poll.click();
        }
        var progress = progressState();
        showInTitle(progress);
        var plot = byId("tt_plot");
        var name = root().querySelector("#tt_plot_name textarea, #tt_plot_name input");
        var now = Date.now();
        if (progress.state === "training" && onScreen(plot) && (!name || name.value === "") &&
            now - lastPlot >= PLOT_MS) {
            lastPlot = now;
            var reload = buttonIn("tt_plot_reload");
            if (reload) {
                reload.click();
            }
        }
    }

    // the txt2img tab's labels the server understands (trainer/host/webui_generate.py LABELS)
    var TXT2IMG_LABELS = ["Sampling method", "Schedule type", "Sampling steps", "CFG Scale", "Width", "Height",
                          "Seed"];

    function txt2imgSettings() {
        var tab = byId("tab_txt2img");
        var found = {};
        if (!tab) {
            return found;
        }
        var labels = tab.querySelectorAll("label span, span[data-testid='block-info']");
        for (var i = 0; i < labels.length; i++) {
            var text = labels[i].textContent.trim();
            if (TXT2IMG_LABELS.indexOf(text) < 0 || text in found) {
                continue;
            }
            var block = labels[i].closest(".block") || labels[i].parentElement;
            var input = block && block.querySelector("input[type=number], input:not([type=range]), textarea");
            if (input && input.value !== "") {
                found[text] = input.value;
            }
        }
        return found;
    }

    function beforeGenerate(event) {
        var button = event.target && event.target.closest && event.target.closest("[id^=tt_generate_]");
        var box = root().querySelector("#tt_txt2img_settings textarea, #tt_txt2img_settings input");
        if (!button || !box) {
            return;
        }
        box.value = JSON.stringify(txt2imgSettings());
        box.dispatchEvent(new Event("input", { bubbles: true }));  // Gradio reads the box's value on the click
    }

    function begin() {
        window.setInterval(tick, POLL_MS);
        root().addEventListener("click", beforeGenerate, true);  // capture: before Gradio handles the click
    }

    if (typeof onUiLoaded === "function") {
        onUiLoaded(begin);  // the webui's hook
    } else if (document.readyState === "loading") {
        document.addEventListener("DOMContentLoaded", begin);
    } else {
        begin();
    }
})();
