"""Atelier over HTTP: the job REST API (and, next, its WebSocket events) for n8n and any other service."""
