"""The TrainTrain tab (Gradio): one builder used by the webui extension and the standalone app."""

import os

# Gradio 3 phones home at import (messaging, version check, analytics) unless told not to; nothing here may reach
# the network. The webui sets this itself; setdefault leaves any explicit choice alone.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
