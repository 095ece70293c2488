"""Where the trainer runs. `standalone` (CLI / standalone UI) reads checkpoint files and writes to an output
folder; `webui` (issue: the tab) reuses the webui's paths, devices and Interrupt button. Only host/webui.py
imports the webui's `modules`."""
