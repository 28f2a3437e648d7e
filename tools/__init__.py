"""The shared tool layer: the only part of Atelier that talks to ComfyUI, Ollama, Qdrant and PostgreSQL."""
