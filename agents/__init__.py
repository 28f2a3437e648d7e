"""Atelier's agents (planner, visual designer, RAG retriever, cost/VRAM router): one module each."""
