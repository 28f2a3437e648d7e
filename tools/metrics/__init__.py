"""Prometheus collectors read at scrape time: ledger-wide usage and ComfyUI probes (workers keep their own)."""
