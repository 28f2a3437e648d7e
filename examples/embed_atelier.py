"""Use Atelier from a Python program: make an image, read a job, ask the supervisor, call a tool by name.

Run it where Atelier's settings point at your services (COMFYUI_URLS, OLLAMA_URL, DATABASE_URL or the embedded
PostgreSQL): `python examples/embed_atelier.py "a red fox in snow"`. It runs its own worker, so no
`atelier worker` is needed.
"""

from __future__ import annotations

import asyncio
import sys

from atelier import open_atelier


async def main(prompt: str) -> None:
    """Generate one image, then ask about costs and list the workflows."""
    async with open_atelier(owner="example", worker=True) as studio:
        image = await studio.generate(prompt, seed=7, steps=8)
        print(f"image: {image.status} {image.images[0].path if image.images else image.error}")
        answer = await studio.ask("How much would 3 hero images cost?")
        print(f"supervisor: {answer.reply}")
        workflows = await studio.call("list_workflows")
        print("workflows: " + ", ".join(w.name for w in workflows))


if __name__ == "__main__":
    asyncio.run(main(" ".join(sys.argv[1:]) or "a red fox in snow"))
