"""The worker runtime: claim jobs from the ledger, run them on ComfyUI (hot-swap, time limits), record results."""
