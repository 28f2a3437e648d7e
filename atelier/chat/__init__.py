"""The Gradio chat that answers and illustrates: the page, its runtime and the server that opens the services."""

from atelier.chat.page import build_page, build_server, main

__all__ = ["build_page", "build_server", "main"]
