"""GPU memory shared by ComfyUI and Ollama: what each holds, and making room before a heavy image job."""
