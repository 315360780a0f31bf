"""The shards' direct data port: used by default, authenticated, robust to bad input,
and never needed for correctness (every failure falls back to Ray calls)."""

from __future__ import annotations

import asyncio
import os
import socket
import struct
import time
from concurrent.futures import ThreadPoolExecutor

import msgpack
import pytest

from omnicache_cluster import MISS
from omnicache_cluster._near import near_of
from omnicache_cluster.client import ClientOptions
from omnicache_cluster.core import wire


def _direct(cluster) -> int:
    return _counts(cluster)[0]


def _counts(cluster) -> tuple[int, int]:
    """(direct-port requests, all requests) over the shards, from one stats call."""
    shards = cluster.stats()["shards"]
    return sum(s["direct_requests"] for s in shards), sum(s["requests"] for s in shards)


def _endpoint(cluster, name="omnicache-shard-0"):
    import ray

    handle = cluster._state.handle_of(name)
    return ray.get(handle.wire_endpoint.remote())


def _raw_call(host, port, frames: list[bytes], read: bool = True, timeout: float = 5.0):
    """Send raw frames; return the decoded replies, or ``None`` once the shard closed."""
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(b"".join(frames))
        if not read:
            return None
        try:
            return wire.recv_frame(sock)
        except wire.WireError:
            return None


def test_data_calls_use_the_direct_port(cluster):
    before_direct, before_all = _counts(cluster)
    cluster.set("a", {"x": 1})
    assert cluster.get("a") == {"x": 1}
    assert cluster.get_many(["a", "nope"]) == [{"x": 1}, MISS]
    assert cluster.exists("a")
    assert cluster.delete("a") == 1
    assert cluster.get("a") is MISS
    after_direct, after_all = _counts(cluster)
    direct = after_direct - before_direct
    assert direct >= 6, direct
    # Every data call went direct: only the stats call (one request per shard) went
    # through Ray (endpoint lookups are not counted as requests).
    assert after_all - before_all - 2 == direct


def test_async_calls_use_the_direct_port_and_match_sequential(cluster):
    keys = [f"k{i}" for i in range(300)]
    cluster.set_many({k: [i, str(i)] for i, k in enumerate(keys)})
    sequential = [cluster.get(k) for k in keys]
    before = _direct(cluster)

    async def run():
        await asyncio.gather(*(cluster.aset(f"n{i}", i) for i in range(100)))
        return await asyncio.gather(*(cluster.aget(k) for k in keys))

    assert asyncio.run(run()) == sequential
    assert cluster.get_many([f"n{i}" for i in range(100)]) == list(range(100))
    assert _direct(cluster) - before >= 2


def test_fast_path_off_uses_ray_calls_only(cluster):
    plain = cluster.with_options(fast_path=False)
    before = _direct(cluster)
    plain.set("p", 1)
    assert plain.get("p") == 1
    assert asyncio.run(plain.aget("p")) == 1
    assert _direct(cluster) == before


def test_env_switch_turns_it_off(monkeypatch):
    monkeypatch.setenv("OMNICACHE_FAST_PATH", "0")
    assert ClientOptions().fast_path is False
    monkeypatch.setenv("OMNICACHE_FAST_PATH", "1")
    monkeypatch.setenv("RAY_USE_TLS", "1")
    for name in ("RAY_TLS_SERVER_CERT", "RAY_TLS_SERVER_KEY", "RAY_TLS_CA_CERT"):
        monkeypatch.delenv(name, raising=False)
    assert ClientOptions().fast_path is False  # Ray's TLS without its certificates
    assert not wire.enabled_here()  # what a shard checks before it opens the port
    monkeypatch.delenv("RAY_USE_TLS")
    assert ClientOptions().fast_path is True


def test_wrong_token_is_closed_and_served_nothing(cluster):
    cluster.set("secret", "value")
    host, port, token = _endpoint(cluster)
    assert host == "127.0.0.1"  # local mode: loopback only
    skey = cluster.key("secret")
    request = wire.pack([1, "get_many", [skey]])
    assert _raw_call(host, port, [wire.pack(b"x" * 32), request]) is None
    assert _raw_call(host, port, [wire.pack("not bytes"), request]) is None
    # The right token gets an answer on the same kind of connection.
    reply = _raw_call(host, port, [wire.pack(token), request])
    assert reply[0] == 1
    assert reply[1] == wire.OK


def test_malformed_and_oversize_frames_close_only_that_connection(cluster):
    cluster.set("m", 7)
    owner = cluster._state.current_ring(cluster._options).owner(cluster.key("m"))
    host, port, token = _endpoint(cluster, owner)
    hello = wire.pack(token)
    garbage = struct.pack(">I", 5) + b"\xc1\xc1\xc1\xc1\xc1"  # 0xc1 is never valid msgpack
    assert _raw_call(host, port, [hello, garbage]) is None
    huge = struct.pack(">I", 0xFFFFFFFF)  # announces 4 GiB: refused before reading it
    assert _raw_call(host, port, [hello, huge]) is None
    oversize_hello = struct.pack(">I", 10_000) + b"\0" * 10_000
    assert _raw_call(host, port, [oversize_hello]) is None
    # Unknown method and wrong arity: an error reply, the connection stays usable.
    with socket.create_connection((host, port), timeout=5) as sock:
        sock.sendall(hello + wire.pack([3, "clear", None]) + wire.pack([4, "get_many"]))
        replies = {r[0]: r for r in (wire.recv_frame(sock), wire.recv_frame(sock))}
        assert replies[3][1] == wire.ERROR
        assert "not a direct-port method" in replies[3][2][1]
        assert replies[-1][1] == wire.ERROR  # no id could be read from it
        sock.sendall(wire.pack([5, "get", cluster.key("m")]))
        rid, status, value = wire.recv_frame(sock)
        assert (rid, status) == (5, wire.OK)
        assert cluster._decode(value, None) == 7
    assert cluster.get("m") == 7


def test_a_dead_port_falls_back_to_ray_calls(cluster, caplog):
    from omnicache_cluster._wire import Endpoint

    cluster.set_many({f"f{i}": i for i in range(20)})
    state = cluster._state
    ring = state.current_ring(cluster._options)
    # A free port nobody listens on, posing as every shard's endpoint.
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    dead_port = probe.getsockname()[1]
    probe.close()
    for name in ring.members:
        state.wire_off_until.pop(name, None)
        state.drop_endpoints(name)
        state.endpoints[name] = Endpoint(name, "127.0.0.1", dead_port, b"t" * 32)
    try:
        # Each dead port fails; the keys are retried and the shards' real ports learnt.
        with caplog.at_level("WARNING", logger="omnicache_cluster._routing"):
            assert cluster.get_many([f"f{i}" for i in range(20)]) == list(range(20))
            assert asyncio.run(cluster.aget("f3")) == 3
            assert cluster.get("f4") == 4
        assert "direct port" in caplog.text
        assert all(state.endpoints[name].port != dead_port for name in ring.members)
        assert not state.wire_off_until  # a new port: no back-off
        # A port that fails again when the shard names it again: Ray calls for a while.
        real = [_endpoint(cluster, name) for name in ring.members]
        for name, reply in zip(ring.members, real, strict=True):
            state.wire_failed_ports[name] = tuple(reply)
            state.endpoints.pop(name, None)
        assert cluster.get_many([f"f{i}" for i in range(20)]) == list(range(20))
        assert all(name in state.wire_off_until for name in ring.members)
        assert all(state.wire_off_until[n] > time.monotonic() for n in ring.members)
    finally:
        for name in ring.members:
            state.wire_off_until.pop(name, None)
            state.wire_failed_ports.pop(name, None)
            state.drop_endpoints(name)
    assert cluster.get("f5") == 5  # direct again after the back-off is cleared


def test_a_killed_shard_is_reached_again_after_restart(fresh_cluster, ray_session):
    cluster = fresh_cluster(num_shards=2)
    cluster.set_many({f"r{i}": i for i in range(50)})
    assert cluster.get("r1") == 1
    assert cluster._state.endpoints  # the ports were learnt
    name = cluster._state.current_ring(cluster._options).owner(cluster.key("r1"))
    old = cluster._state.endpoints.get(name)
    handle = cluster._state.handle_of(name)
    ray_session.kill(handle, no_restart=False)
    # Wait for the new process (a write that reached the old one just before it died
    # would be lost with it: a memory-only shard keeps nothing across a restart).
    deadline = time.monotonic() + 60
    while True:
        try:
            reply = ray_session.get(handle.wire_endpoint.remote(), timeout=5)
            if reply[2] != old.token:
                break
        except Exception:
            if time.monotonic() > deadline:
                raise
        time.sleep(0.2)
    # The client's pooled connection is to the dead process: the first call finds out,
    # retries, and learns the new port; no back-off, since the port changed.
    cluster.set("r1", "again")
    assert cluster.get("r1") == "again"
    before = _direct(cluster)
    assert cluster.get("r1") == "again"
    ring = cluster._state.current_ring(cluster._options)
    lost = next(f"r{i}" for i in range(2, 50) if ring.owner(cluster.key(f"r{i}")) == name)
    assert cluster.get_many(["r1", lost]) == ["again", MISS]  # it died with the process
    assert _direct(cluster) > before
    new = cluster._state.endpoints[name]
    assert new is not None
    assert new.token == reply[2]
    assert name not in cluster._state.wire_off_until


@pytest.mark.parametrize("value", ["text", b"bytes", 42, 1.5, None, True])
def test_near_hits_of_immutable_values_are_kept_decoded(cluster, value):
    from omnicache_cluster.core.nearcache import NO_VALUE, NearCacheOptions

    near = cluster.with_options(near_cache=NearCacheOptions(staleness_s=30.0))
    near.set("imm", value)
    deadline = time.monotonic() + 10
    while near_of(near) is None or near_of(near).lookup(near.key("imm")) is None:
        assert near.get("imm") == value  # until the first poll made the shards fresh
        assert time.monotonic() < deadline
        time.sleep(0.05)
    first = near.get("imm")
    second = near.get("imm")
    assert first == value
    assert second == value
    entry = near_of(near).lookup(near.key("imm"))
    assert entry is not None
    assert entry.value == value
    assert entry.value is not NO_VALUE
    assert second is first


def test_near_hits_of_mutable_values_are_fresh_copies(cluster):
    from omnicache_cluster.core.nearcache import NearCacheOptions

    near = cluster.with_options(near_cache=NearCacheOptions(staleness_s=30.0))
    near.set("mut", {"a": [1]})
    deadline = time.monotonic() + 10
    while near_of(near) is None or near_of(near).lookup(near.key("mut")) is None:
        assert near.get("mut") == {"a": [1]}
        assert time.monotonic() < deadline
        time.sleep(0.05)
    got = near.get("mut")
    got["a"].append(2)  # the caller's copy only
    assert near.get("mut") == {"a": [1]}


def test_frame_helpers_reject_bad_input():
    with pytest.raises(wire.WireError):
        wire.unpack(b"\xc1")
    with pytest.raises(wire.WireError):
        wire.frame_length(struct.pack(">I", 300), limit=256)
    body = msgpack.packb([1, "get", "k"], use_bin_type=True)
    assert wire.pack([1, "get", "k"]) == struct.pack(">I", len(body)) + body


def test_get_or_compute_hits_cost_no_ray_call(cluster):
    calls = []
    assert cluster.get_or_compute("goc", lambda: calls.append(1) or "v") == "v"
    before_direct, before_all = _counts(cluster)
    for _ in range(5):
        assert cluster.get_or_compute("goc", lambda: calls.append(1) or "other") == "v"
    assert asyncio.run(cluster.aget_or_compute("goc", lambda: "other")) == "v"
    after_direct, after_all = _counts(cluster)
    assert calls == [1]
    assert after_direct - before_direct == 6  # one direct get per hit
    assert after_all - before_all - 2 == 6  # ...and nothing else (2: the stats call)


def test_get_or_compute_miss_still_single_flight_over_the_direct_port(cluster):
    import threading

    computed = []
    gate = threading.Event()

    def slow():
        gate.wait(5)
        computed.append(1)
        return "once"

    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(cluster.get_or_compute, "sf", slow) for _ in range(8)]
        time.sleep(0.3)
        gate.set()
        assert [f.result() for f in futures] == ["once"] * 8
    assert computed == [1]


def test_a_shard_under_ray_tls_without_certificates_opens_no_port(monkeypatch):
    from omnicache_cluster.actors._wire_server import WireServer

    monkeypatch.setenv("RAY_USE_TLS", "1")
    monkeypatch.setenv("RAY_TLS_SERVER_CERT", "/nonexistent/cert.pem")
    assert asyncio.run(WireServer().wire_endpoint()) is None
    monkeypatch.delenv("RAY_USE_TLS")
    monkeypatch.setenv("OMNICACHE_FAST_PATH", "0")
    assert asyncio.run(WireServer().wire_endpoint()) is None


def _direct_of(cluster, name: str) -> int:
    """Direct-port data requests one shard has read so far."""
    return next(s["direct_requests"] for s in cluster.stats()["shards"] if s["shard"] == name)


def test_a_client_that_does_not_read_is_read_no_more_and_still_gets_every_reply(cluster):
    """The 64 MiB valve: a client that pipelines gets of a large value and reads no
    reply makes the shard stop reading its connection (bounded replies queued, its
    socket blocks), other clients are served meanwhile, and once it reads, every
    request it sent gets its complete reply."""
    import select

    from omnicache_cluster.actors._wire_server import MAX_UNSENT

    value = os.urandom(4 * 1024 * 1024)  # incompressible: each reply is 4 MiB
    size = len(cluster._ser.dumps(value))
    cluster.set("big", value)
    ring = cluster._state.current_ring(cluster._options)
    owner = ring.owner(cluster.key("big"))
    small = next(f"s{i}" for i in range(1000) if ring.owner(cluster.key(f"s{i}")) == owner)
    cluster.set(small, "still served")
    host, port, token = _endpoint(cluster, owner)
    # What the kernel's socket buffers may hold of the replies (the shard's send buffer,
    # this side's receive buffer), beyond the shard's own queue.
    slack = 16 * 1024 * 1024
    most_read = (MAX_UNSENT + slack) // size + 1  # gets the shard may take in
    n_gets = most_read + 4  # ~100 MiB of replies at most, in one pipelined write
    # Padding: requests the shard answers with a short error, to fill the socket buffers
    # once it stops reading (filling them with gets would ask for GiBs of replies if
    # the valve did not hold). Their cap is far over the kernel's buffers.
    pad = b"p" * (1024 * 1024)
    pad_frames = 64
    total = n_gets + pad_frames
    before = _direct_of(cluster, owner)
    sock = socket.socket()
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1024 * 1024)
        sock.settimeout(5)
        sock.connect((host, port))
        gets = b"".join(wire.pack([i, "get", cluster.key("big")]) for i in range(n_gets))
        sock.sendall(wire.pack(token) + gets)
        # Pad, without reading, until no byte more has gone out for a second.
        sock.setblocking(False)
        sent, rest = n_gets, memoryview(b"")
        last_progress = time.monotonic()
        while sent < total or rest:
            if not rest:
                rest = memoryview(wire.pack([sent, "no-such-method", pad]))
            try:
                k = sock.send(rest)
            except BlockingIOError:
                if time.monotonic() - last_progress > 1.0:
                    break  # the shard reads this connection no more
                select.select([], [sock], [], 0.05)
                continue
            rest = rest[k:]
            last_progress = time.monotonic()
            if not rest:
                sent += 1
        assert sent < total, "the shard kept reading a client that reads no reply"

        # (a) Other clients are served meanwhile (Ray calls, and the same direct port).
        started = time.monotonic()
        read_in = _direct_of(cluster, owner) - before
        assert cluster.get(small) == "still served"
        assert cluster.get("big") == value
        assert time.monotonic() - started < 5.0
        # (b) It stopped reading once about MAX_UNSENT of replies were queued, not
        # after taking in every get it was sent (~n_gets * size of replies).
        assert 0 < read_in <= most_read, (read_in, most_read, n_gets)

        # (c) Reading: every request sent gets its complete reply, matched by id (the
        # protocol does not promise order: requests run concurrently).
        sock.settimeout(10)
        replies: dict[int, list] = {}

        def take(n: int) -> None:
            for _ in range(n):
                rid, status, result = wire.recv_frame(sock)
                assert rid not in replies, rid
                replies[rid] = [status, result]

        take(sent)
        if rest:  # the frame cut short: finish it, now that the shard reads again
            sock.sendall(rest)
            take(1)
            sent += 1
        assert sorted(replies) == list(range(sent))
        for rid in range(n_gets):
            status, result = replies.pop(rid)
            assert status == wire.OK, (rid, result)
            assert cluster._decode(result, None) == value, rid
        for rid, (status, result) in replies.items():
            assert status == wire.ERROR, rid
            assert "not a direct-port method" in result[1]
        # The connection is still in step: one more request, one more reply.
        sock.sendall(wire.pack([sent, "get", cluster.key(small)]))
        rid, status, result = wire.recv_frame(sock)
        assert (rid, status) == (sent, wire.OK)
        assert cluster._decode(result, None) == "still served"
    finally:
        sock.close()
        cluster.delete_many(["big", small])


async def test_a_connection_runs_at_most_max_pending_requests_at_once(monkeypatch):
    """Requests that wait (an L2 read, a moving slot) hold no more than MAX_PENDING of a
    connection: the rest stay unread until one finishes, then all are answered."""
    from omnicache_cluster.actors import _wire_server
    from omnicache_cluster.actors._wire_server import WireServer

    monkeypatch.setattr(_wire_server, "MAX_PENDING", 8)
    gate = asyncio.Event()

    class Slow(WireServer):
        _wire_methods = frozenset({"get"})
        started = 0

        async def get(self, arg):
            self.started += 1
            await gate.wait()
            return arg

    server = Slow()
    host, port, token = await server.wire_endpoint()
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(wire.pack(token))
        writer.write(b"".join(wire.pack([i, "get", i]) for i in range(50)))
        await writer.drain()
        deadline = time.monotonic() + 5
        while server.started < 8 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.2)  # time to read more, were it not held back
        assert server.started == 8
        gate.set()
        replies = {}
        for _ in range(50):
            n = wire.frame_length(await asyncio.wait_for(reader.readexactly(4), 5))
            rid, status, value = wire.unpack(await reader.readexactly(n))
            replies[rid] = (status, value)
        assert replies == {i: (wire.OK, i) for i in range(50)}
        assert server.started == 50
    finally:
        writer.close()
        server._wire_server.close()


# -- TLS: the port follows Ray's RAY_USE_TLS with Ray's certificates --------------------


def _make_ca(name: str):
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    def cert(subject: str, key, issuer=None, issuer_key=None, ca: bool = False):
        now = dt.datetime.now(dt.UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(issuer or x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        return builder.sign(issuer_key or key, hashes.SHA256())

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = cert(name, ca_key, ca=True)
    node_key = ec.generate_private_key(ec.SECP256R1())
    node_cert = cert(f"{name} node", node_key, ca_cert.subject, ca_key)
    return ca_cert, node_cert, node_key


def _write_tls(directory, name: str) -> tuple[str, str, str]:
    """Write a CA and a node certificate signed by it; return (cert, key, ca) paths."""
    from cryptography.hazmat.primitives import serialization

    ca_cert, node_cert, node_key = _make_ca(name)
    paths = [str(directory / f"{name}-{part}.pem") for part in ("cert", "key", "ca")]
    pem = serialization.Encoding.PEM
    with open(paths[0], "wb") as f:
        f.write(node_cert.public_bytes(pem))
    with open(paths[1], "wb") as f:
        f.write(
            node_key.private_bytes(
                pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
    with open(paths[2], "wb") as f:
        f.write(ca_cert.public_bytes(pem))
    return paths[0], paths[1], paths[2]


def _refused(host: str, port: int, token: bytes, tls=None) -> bool:
    """Whether a client that shows ``tls`` (or plaintext) is served nothing."""
    import ssl

    try:
        with socket.create_connection((host, port), timeout=5) as raw:
            sock = tls.wrap_socket(raw) if tls is not None else raw
            sock.sendall(wire.pack(token) + wire.pack([1, "get", "x"]))
            return sock.recv(1) == b""
    except (ssl.SSLError, ConnectionError, TimeoutError):
        return True


async def test_under_ray_tls_the_port_speaks_mutual_tls(monkeypatch, tmp_path):
    import ssl

    from omnicache_cluster._wire import Endpoint
    from omnicache_cluster.actors._wire_server import WireServer

    cert, key, ca = _write_tls(tmp_path, "ray")
    monkeypatch.setenv("RAY_USE_TLS", "1")
    monkeypatch.setenv("RAY_TLS_SERVER_CERT", cert)
    monkeypatch.setenv("RAY_TLS_SERVER_KEY", key)
    monkeypatch.setenv("RAY_TLS_CA_CERT", ca)
    assert wire.enabled_here()

    class Echo(WireServer):
        _wire_methods = frozenset({"get"})

        async def get(self, arg):
            return arg

    server = Echo()
    host, port, token = await server.wire_endpoint()
    endpoint = Endpoint("echo", host, port, token)
    try:
        assert await endpoint.acall("get", {"a": [1, 2]}, 5) == {"a": [1, 2]}
        assert await asyncio.to_thread(endpoint.call, "get", b"bytes", 5) == b"bytes"
        assert server.wire_requests == 2
        # Plaintext, a TLS client without a certificate, and one whose certificate
        # another CA signed: none is served, even with the right token.
        assert await asyncio.to_thread(_refused, host, port, token)
        bare = ssl.create_default_context(cafile=ca)
        bare.check_hostname = False
        assert await asyncio.to_thread(_refused, host, port, token, bare)
        rogue_cert, rogue_key, _ = _write_tls(tmp_path, "rogue")
        rogue = ssl.create_default_context(cafile=ca)
        rogue.check_hostname = False
        rogue.load_cert_chain(rogue_cert, rogue_key)
        assert await asyncio.to_thread(_refused, host, port, token, rogue)
        assert server.wire_requests == 2
    finally:
        endpoint.close()
        server._wire_server.close()
