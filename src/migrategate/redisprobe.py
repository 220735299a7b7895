"""Just enough of the Redis protocol to ask whether a key exists and its TTL.

``doctor`` looks for Dify's stale ``db_upgrade_lock``. Speaking RESP over a
socket keeps the ``redis`` package out of the core (the app image may not have
it, and we need two commands).
"""

from __future__ import annotations

import socket
import ssl
from dataclasses import dataclass
from typing import List, Optional, Union
from urllib.parse import unquote, urlparse

from .errors import ConfigError


@dataclass
class KeyState:
    exists: bool
    ttl: Optional[int]  # seconds; None when the key has no expiry or does not exist


class RedisError(Exception):
    """Redis answered with an error or could not be reached (message is password-free)."""


def _command(*parts: Union[str, bytes]) -> bytes:
    out = [b"*%d\r\n" % len(parts)]
    for p in parts:
        data = p if isinstance(p, bytes) else p.encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


class _Conn:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""

    def _line(self) -> bytes:
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise RedisError("connection closed by the server")
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\r\n")
        return line

    def _exact(self, n: int) -> bytes:
        while len(self.buf) < n + 2:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise RedisError("connection closed by the server")
            self.buf += chunk
        data, self.buf = self.buf[:n], self.buf[n + 2:]
        return data

    def call(self, *parts: str) -> Union[int, str, None, List[object]]:
        self.sock.sendall(_command(*parts))
        return self._reply()

    def _reply(self) -> Union[int, str, None, List[object]]:
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest.decode(errors="replace")
        if kind == b"-":
            raise RedisError(rest.decode(errors="replace"))
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            return None if n < 0 else self._exact(n).decode(errors="replace")
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self._reply() for _ in range(n)]
        raise RedisError(f"unexpected reply {line[:20]!r}")


def inspect_key(url: str, key: str, timeout: float = 5.0) -> KeyState:
    """EXISTS and TTL of ``key`` on the Redis at ``url`` (redis:// or rediss://)."""
    parsed = urlparse(url)
    if parsed.scheme not in ("redis", "rediss"):
        raise ConfigError("the Redis URL must start with redis:// or rediss://")
    host = parsed.hostname or "localhost"
    port = parsed.port or 6379
    db = (parsed.path or "/0").lstrip("/") or "0"
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
        if parsed.scheme == "rediss":
            sock = ssl.create_default_context().wrap_socket(sock, server_hostname=host)
    except OSError as exc:
        raise RedisError(f"cannot reach Redis at {host}:{port}: {exc.strerror or exc}") from None
    conn = _Conn(sock)
    try:
        if parsed.password is not None:
            user = unquote(parsed.username) if parsed.username else None
            password = unquote(parsed.password)
            conn.call(*(["AUTH", user, password] if user else ["AUTH", password]))
        if db != "0":
            conn.call("SELECT", db)
        exists = bool(conn.call("EXISTS", key))
        if not exists:
            return KeyState(False, None)
        ttl = conn.call("TTL", key)
        return KeyState(True, int(ttl) if isinstance(ttl, int) and ttl >= 0 else None)
    except OSError as exc:
        raise RedisError(f"Redis at {host}:{port} failed: {exc.strerror or exc}") from None
    finally:
        sock.close()
