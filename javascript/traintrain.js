// TrainTrain tab: live progress and plot refresh.
// Loaded by the webui from javascript/ and by `python -m trainer ui` (inlined in the page head).
// The server holds the job state; this script only asks for it: it clicks the hidden #tt_poll button every
// second while the TrainTrain tab is on screen, and while a job trains it re-draws the Plot tab every 5 s
// when that tab is open and no log name is typed. It also mirrors the progress into the page title.
(function () {
    "use strict";
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

    function begin() {
        window.setInterval(tick, POLL_MS);
    }

    if (typeof onUiLoaded === "function") {
        onUiLoaded(begin);  // the webui's hook
    } else if (document.readyState === "loading") {
        document.addEventListener("DOMContentLoaded", begin);
    } else {
        begin();
    }
})();
