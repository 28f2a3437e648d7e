"""The fake Ollama's outages: its loopback server can go down (connection refused) and come back on the same port."""

from __future__ import annotations

import asyncio

from tests.fakes.loopback_runner import LoopbackServer


class BackgroundServer(LoopbackServer):
    """A LoopbackServer that tests can take down for a while (`go_down`) and bring back (`come_back`)."""

    async def _go_down_for(self, seconds: float | None) -> None:
        """Go down; come back after `seconds` (None: only at come_back())."""
        if self._comeback is not None:
            self._comeback.cancel()
            self._comeback = None
        await self._go_down()
        if seconds is not None:

            async def later() -> None:
                await asyncio.sleep(seconds)
                await self._come_up()

            self._comeback = asyncio.get_running_loop().create_task(later())

    def go_down(self, seconds: float | None = None) -> None:
        """Stop listening (connection refused) and drop open connections; back after `seconds` or at come_back()."""
        self._call(lambda: self._go_down_for(seconds))

    def come_back(self) -> None:
        """Listen again, on the same port."""

        async def up() -> None:
            if self._comeback is not None:
                self._comeback.cancel()
                self._comeback = None
            await self._come_up()

        self._call(up)
