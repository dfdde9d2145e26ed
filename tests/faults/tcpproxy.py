"""The TCP proxy the fault suite ships (:class:`omniq.testing.faults.TcpProxy`), for the tests that import it from here."""

from __future__ import annotations

from omniq.testing.faults.tcpproxy import TcpProxy

__all__ = ["TcpProxy"]
