"""A TCP proxy in front of a real server: drop every connection, refuse new ones, or stall, on demand (asyncio).

It lets a test take a server "down" for one client without touching the shared
server other tests use. It forwards bytes only; the server behind it is real.
"""

from __future__ import annotations

import asyncio
import contextlib
from urllib.parse import urlsplit, urlunsplit

from omniq.testing.plugin import probe_address

__all__ = ["TcpProxy"]


class TcpProxy:
    """Forwards 127.0.0.1:<port> (an ephemeral port) to ``target_url``'s host and port.

    The target's port is the URL's, else ``default_port``, else a first-party
    scheme's (:func:`omniq.testing.plugin.probe_address`; ValueError without one).
    ``await start()``, then point a client at :attr:`url`.
    """

    def __init__(self, target_url: str, default_port: int | None = None) -> None:
        self._target_url = target_url
        self._target = probe_address(target_url, default_port)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self.port = 0
        self._flowing = asyncio.Event()
        self._flowing.set()

    @property
    def stalled(self) -> bool:
        """While True, bytes are held instead of forwarded: the server looks hung (no reply, no reset)."""
        return not self._flowing.is_set()

    @stalled.setter
    def stalled(self, value: bool) -> None:
        if value:
            self._flowing.clear()
        else:
            self._flowing.set()

    @property
    def url(self) -> str:
        """``target_url`` with its host and port replaced by the proxy's."""
        parts = urlsplit(self._target_url)
        netloc = parts.netloc.rsplit("@", 1)
        host = f"127.0.0.1:{self.port}"
        return urlunsplit(parts._replace(netloc=f"{netloc[0]}@{host}" if len(netloc) == 2 else host))

    async def start(self) -> None:
        """Accept connections (on the same port as before, if it was started already)."""
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port, reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]

    def drop_connections(self) -> None:
        """Reset every proxied connection (clients see the server go away); keep accepting new ones."""
        for writer in self._writers:
            writer.transport.abort()
        self._writers.clear()

    async def stop(self) -> None:
        """Refuse new connections and reset the open ones: the server looks down."""
        if self._server is not None:
            self._server.close()
            self.drop_connections()
            await self._server.wait_closed()
            self._server = None

    async def _accept(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        self._writers.add(client_writer)  # from the start: a stop while the server's side opens resets it too
        try:
            server_reader, server_writer = await asyncio.open_connection(*self._target)
        except OSError:
            client_writer.transport.abort()
            return
        if client_writer not in self._writers:  # dropped (or stopped) meanwhile: so is the server's side
            server_writer.transport.abort()
            return
        self._writers.add(server_writer)
        await asyncio.gather(self._pipe(client_reader, server_writer), self._pipe(server_reader, client_writer))

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                await self._flowing.wait()
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError, RuntimeError):
                writer.close()
