"""Neo modules/ui_loadsave.py is A1111's (forge-api.md F1–F2): the A1111 fake's module
(tests/fake_webui/modules/ui_loadsave.py) is run here as this one, so its `from modules...` imports find Neo's
fake modules (its ToolButton among them)."""

from pathlib import Path

_A1111 = Path(__file__).resolve().parents[2] / "fake_webui" / "modules" / "ui_loadsave.py"
exec(compile(_A1111.read_text(encoding="utf-8"), str(_A1111), "exec"))
