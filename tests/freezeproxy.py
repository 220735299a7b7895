"""A loopback TCP proxy that can stop forwarding without closing anything.

``freeze()`` models a hung proxy or a frozen network path: every socket stays
open, so the client's kernel keeps getting ACKs from ours and TCP keepalives
never fire, but not one byte moves either way until ``thaw()``. ``cut()``
closes every forwarded connection, ``close()`` also the listener.
``freeze_after=N`` freezes each connection once the server sent it N bytes
(a server that stalls right after the handshake); see :func:`handshake_bytes`.
"""

from __future__ import annotations

import socket
import threading
from typing import List, Optional, Tuple


class _Pair:
    def __init__(self, client: socket.socket, server: socket.socket) -> None:
        self.client = client
        self.server = server
        self.from_server = 0  # bytes forwarded to the client
        self.held = False  # frozen by freeze_after

    def close(self) -> None:
        for s in (self.client, self.server):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()


class FreezeProxy:
    def __init__(self, host: str, port: int, freeze_after: Optional[int] = None) -> None:
        self.target: Tuple[str, int] = (host, port)
        self.freeze_after = freeze_after
        self.pairs: List[_Pair] = []
        self._cond = threading.Condition()
        self._frozen = False
        self._closed = False
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port: int = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True, name="freezeproxy-accept").start()

    # ------------------------------------------------------------------ control

    def freeze(self) -> None:
        with self._cond:
            self._frozen = True

    def thaw(self) -> None:
        """Forward again, everything held included; freeze_after no longer applies."""
        with self._cond:
            self._frozen = False
            self.freeze_after = None
            for pair in self.pairs:
                pair.held = False
            self._cond.notify_all()

    def cut(self) -> None:
        with self._cond:
            pairs, self.pairs = self.pairs, []
            self._cond.notify_all()
        for pair in pairs:
            pair.close()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._frozen = False
            self._cond.notify_all()
        self.listener.close()
        self.cut()

    def url(self, url: str) -> str:
        """``url`` (a server's) pointed at this proxy."""
        from sqlalchemy.engine import make_url

        return make_url(url).set(host="127.0.0.1", port=self.port) \
            .render_as_string(hide_password=False)

    @property
    def server_bytes(self) -> int:
        with self._cond:
            return sum(p.from_server for p in self.pairs)

    # ------------------------------------------------------------------ forwarding

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.target, timeout=10)
                server.settimeout(None)
            except OSError:
                client.close()
                continue
            pair = _Pair(client, server)
            with self._cond:
                if self._closed:
                    pair.close()
                    return
                self.pairs.append(pair)
            for src, dst, down in ((client, server, False), (server, client, True)):
                threading.Thread(target=self._pump, args=(pair, src, dst, down), daemon=True,
                                 name="freezeproxy-pump").start()

    def _wait_flowing(self, pair: _Pair) -> bool:
        """Block while frozen; False once the proxy closed."""
        with self._cond:
            while (self._frozen or pair.held) and not self._closed:
                self._cond.wait()
            return not self._closed

    def _pump(self, pair: _Pair, src: socket.socket, dst: socket.socket, down: bool) -> None:
        try:
            while self._wait_flowing(pair):
                data = src.recv(65536)
                if not data:
                    break
                while data:
                    if not self._wait_flowing(pair):
                        return
                    chunk = data
                    if down:
                        with self._cond:
                            limit = self.freeze_after
                            if limit is not None:
                                allowed = max(limit - pair.from_server, 0)
                                chunk = data[:allowed]
                                if len(chunk) < len(data):
                                    pair.held = True
                            pair.from_server += len(chunk)
                    if chunk:
                        dst.sendall(chunk)
                    data = data[len(chunk):]
            try:
                dst.shutdown(socket.SHUT_WR)
            except OSError:
                pass
        except OSError:
            return


def handshake_bytes(connect, host: str, port: int) -> int:
    """How many bytes the server sends before a connection is ready for its first query.

    ``connect(host, port)`` opens (and returns) a DBAPI connection; it is closed after.
    """
    import time

    proxy = FreezeProxy(host, port)
    try:
        conn = connect("127.0.0.1", proxy.port)
        time.sleep(0.2)
        count = proxy.server_bytes
        conn.close()
        return count
    finally:
        proxy.close()
