"""The deadline watchdog on bare sockets: what fires, what doesn't, and for which driver shape."""

from __future__ import annotations

import socket
import threading
import time

from migrategate import deadline


class _PyMySQLShaped:
    def __init__(self, sock):
        self._sock = sock


class _LibpqShaped:
    """psycopg2 / psycopg 3 expose the descriptor only (the driver owns the socket)."""

    def __init__(self, sock):
        self.sock = sock

    def fileno(self):
        return self.sock.fileno()


def _blocked_recv(dbapi, sock, seconds):
    """Arm ``seconds`` on ``dbapi`` and block in ``sock.recv`` as a driver would."""
    deadline.arm(dbapi, seconds)
    started = time.monotonic()
    data = sock.recv(16)
    return data, time.monotonic() - started, deadline.disarm()


def test_an_expired_deadline_shuts_the_socket_down_both_driver_shapes():
    for shape in (_PyMySQLShaped, _LibpqShaped):
        ours, peer = socket.socketpair()
        try:
            data, waited, arm = _blocked_recv(shape(ours), ours, 0.2)
            assert data == b""  # the blocked read ended: EOF
            assert 0.15 < waited < 5
            assert arm is not None and arm.fired
            assert ours.fileno() >= 0  # shut down, not closed: the driver closes its own fd
        finally:
            ours.close()
            peer.close()


def test_a_round_trip_that_ends_in_time_is_left_alone():
    ours, peer = socket.socketpair()
    try:
        peer.sendall(b"answer")
        data, _, arm = _blocked_recv(_PyMySQLShaped(ours), ours, 0.2)
        assert data == b"answer"
        assert arm is not None and not arm.fired
        time.sleep(0.4)  # past the deadline: nothing happens to a disarmed connection
        peer.sendall(b"more")
        assert ours.recv(16) == b"more"
    finally:
        ours.close()
        peer.close()


def test_each_thread_has_its_own_deadline():
    pairs = [socket.socketpair() for _ in range(2)]
    out = {}

    def run(k, seconds):
        ours = pairs[k][0]
        out[k] = _blocked_recv(_PyMySQLShaped(ours), ours, seconds)

    threads = [threading.Thread(target=run, args=(0, 0.2)),
               threading.Thread(target=run, args=(1, 0.6))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    try:
        assert out[0][1] < out[1][1]
        assert out[1][1] > 0.5
        assert all(arm.fired for _, _, arm in out.values())
    finally:
        for a, b in pairs:
            a.close()
            b.close()


def test_the_stall_message_names_the_deadline():
    assert deadline.Stalled(3.0).one_line().startswith(
        "no answer from the database within 3.0 s (the connection stalled)")
    assert deadline.Stalled(3.0).exit_code == 3
    assert deadline.control_seconds(60) == 30 and deadline.control_seconds(0.5) == 2
