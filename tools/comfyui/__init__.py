"""ComfyUI tool layer: async client, typed progress events, workflow templates and a sync facade."""
