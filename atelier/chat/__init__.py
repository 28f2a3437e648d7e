"""The Gradio chat that answers and illustrates: the page, its runtime and the server that opens the services.

runtime.py: the services the page acts through, who is calling, login sessions · render.py: the page's words
(status lines, banner, approval text), no I/O · files.py: images and previews as local files · one function
per tab: chat_tab.py, gallery_tab.py, queue_tab.py, prompts_tab.py (its actions prompts_actions.py, its words
prompts_view.py), services_tab.py · page.py: the Blocks from the tabs · server.py: the server (the page at /, the
job API at /api) and `main`, which `python app.py` runs.
"""

import os

# Before Gradio (and Hugging Face's hub client) is imported by any module of the chat: no telemetry, no downloads.
for _name, _value in {
    "GRADIO_ANALYTICS_ENABLED": "False",
    "HF_HUB_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
}.items():
    os.environ.setdefault(_name, _value)

from atelier.chat.page import build_page  # noqa: E402
from atelier.chat.server import build_server, main  # noqa: E402

__all__ = ["build_page", "build_server", "main"]
