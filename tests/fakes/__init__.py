"""Test doubles for the services Atelier talks to (a protocol-faithful fake ComfyUI)."""
