"""WebSocket conformance of a running Holdfast `ws_listen`, in the categories of the Autobahn
test suite: handshake, framing, pings, reserved bits and opcodes, fragmentation, UTF-8 and
text, close handling, limits, masking, compression not negotiated, and Holdfast sessions
(echo, push with sequence numbers, heartbeats) carried in binary messages.

Conforming traffic goes through Python's `websockets` library (an independent client: its own
handshake, framing, masking and close handshake checks); frames no conforming client would send
(unmasked, reserved bits, bad close codes) are written as raw bytes after a handshake made here.

Run by tests/e2e/ws.rs as
    python3 ws_conformance.py WS_URL ADMIN_ADDR MAX_FRAME_BYTES
and prints one line per case, then `N passed, M failed`; exits 1 if any case failed.
"""

import asyncio
import base64
import os
import struct
import sys
import time
import traceback

import websockets
from websockets.exceptions import ConnectionClosed

from holdfast_ws import (
    ACK,
    ECHO,
    ERROR,
    HELLO,
    PING,
    PONG,
    PUSH,
    SUBSCRIBE,
    TIMEOUT_S,
    WELCOME,
    Session,
    hf_frame,
    hf_push,
    hf_split,
    hf_topics,
    publish,
)

WS_URL, ADMIN, MAX_FRAME_BYTES = sys.argv[1], sys.argv[2], int(sys.argv[3])
HOST_PORT = WS_URL.split("//", 1)[1].split("/", 1)[0]
HOST, PORT = HOST_PORT.rsplit(":", 1)
PATH = "/" + WS_URL.split("//", 1)[1].split("/", 1)[1]
SUBPROTOCOL = "holdfast.v1"


def connect(**kwargs):
    options = dict(subprotocols=[SUBPROTOCOL], compression=None, open_timeout=TIMEOUT_S, max_size=None)
    options.update(kwargs)
    return websockets.connect(WS_URL, **options)


async def expect_close(ws, code):
    """Waits for the server's close frame; checks its code."""
    try:
        while True:
            await asyncio.wait_for(ws.recv(), TIMEOUT_S)
    except ConnectionClosed as closed:
        received = closed.rcvd.code if closed.rcvd is not None else None
        assert received == code, f"closed with {received}, expected {code}"
        return
    raise AssertionError("no close")


def refused_status(error):
    # websockets 10 (InvalidStatusCode.status_code) and 11+ (InvalidStatus.response).
    status = getattr(error, "status_code", None)
    if status is None and getattr(error, "response", None) is not None:
        status = error.response.status_code
    return status


async def expect_refused(status, **kwargs):
    try:
        async with connect(**kwargs):
            pass
    except Exception as error:  # noqa: BLE001 - the library's class differs by version
        got = refused_status(error)
        assert got == status, f"refused with {got!r} ({error!r}), expected {status}"
        return
    raise AssertionError("handshake was accepted")


# ---- raw frames ----


class Raw:
    """A hand-made client: its own handshake, any frame bytes."""

    async def open(self, protocol=SUBPROTOCOL):
        self.reader, self.writer = await asyncio.open_connection(HOST, int(PORT))
        key = base64.b64encode(os.urandom(16)).decode()
        request = (
            f"GET {PATH} HTTP/1.1\r\nHost: {HOST_PORT}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: {protocol}\r\n\r\n"
        )
        self.writer.write(request.encode())
        head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), TIMEOUT_S)
        assert head.startswith(b"HTTP/1.1 101 "), head
        return self

    def send(self, data):
        self.writer.write(data)

    async def frame(self):
        b0, b1 = await asyncio.wait_for(self.reader.readexactly(2), TIMEOUT_S)
        assert b1 & 0x80 == 0, "server frames are not masked"
        length = b1 & 0x7F
        if length == 126:
            (length,) = struct.unpack(">H", await self.reader.readexactly(2))
        elif length == 127:
            (length,) = struct.unpack(">Q", await self.reader.readexactly(8))
        payload = await self.reader.readexactly(length)
        return b0 & 0x0F, bool(b0 & 0x80), payload

    async def expect_close(self, code):
        while True:
            opcode, fin, payload = await self.frame()
            if opcode == 0x8:
                got = struct.unpack(">H", payload[:2])[0] if payload else None
                assert got == code, f"closed with {got}, expected {code}"
                payload[2:].decode("utf-8")
                # The server then ends the TCP connection.
                rest = await asyncio.wait_for(self.reader.read(), TIMEOUT_S)
                assert rest == b"", rest
                return
            assert opcode in (0x2, 0xA), f"unexpected opcode {opcode}"

    def close(self):
        self.writer.close()


def raw_frame(opcode, payload=b"", fin=True, rsv=0, mask=True, length_override=None):
    b0 = (0x80 if fin else 0) | (rsv << 4) | opcode
    n = len(payload) if length_override is None else length_override
    mask_bit = 0x80 if mask else 0
    if n < 126:
        head = bytes([b0, mask_bit | n])
    elif n < 65536:
        head = bytes([b0, mask_bit | 126]) + struct.pack(">H", n)
    else:
        head = bytes([b0, mask_bit | 127]) + struct.pack(">Q", n)
    if not mask:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


# ---- cases ----

CASES = []


def case(fn):
    CASES.append(fn)
    return fn


@case
async def handshake_agrees_on_holdfast_v1_and_no_extension():
    async with connect(compression="deflate") as ws:
        assert ws.subprotocol == SUBPROTOCOL
        assert not ws.extensions, "permessage-deflate is not negotiated"
        await Session(ws).hello()


@case
async def handshake_without_the_subprotocol_is_refused_400():
    await expect_refused(400, subprotocols=["chat"])


@case
async def handshake_from_an_origin_not_allowed_is_refused_403():
    await expect_refused(403, origin="https://evil.example")


@case
async def handshake_from_an_allowed_origin_is_accepted():
    async with connect(origin="https://app.example") as ws:
        await Session(ws).hello()


@case
async def handshake_on_another_path_is_refused_404():
    global WS_URL
    saved = WS_URL
    WS_URL = saved.rsplit("/", 1)[0] + "/elsewhere"
    try:
        await expect_refused(404)
    finally:
        WS_URL = saved


@case
async def framing_binary_messages_of_every_length_class_echo():
    # 7-bit, 16-bit and 64-bit lengths (Autobahn 1.2.x), Holdfast Echo frames inside.
    async with connect() as ws:
        session = Session(ws)
        await session.hello()
        for size in [0, 1, 109, 110, 111, 65519, 65520, 65521, MAX_FRAME_BYTES - 16]:
            body = os.urandom(size)
            await ws.send(hf_frame(ECHO, size + 2, body))
            kind, frame_id, payload = await session.frame()
            assert (kind, frame_id, payload) == (ECHO, size + 2, body), (size, kind, frame_id)


@case
async def framing_many_holdfast_frames_in_one_message_and_one_across_messages():
    async with connect() as ws:
        session = Session(ws)
        await session.hello()
        await ws.send(b"".join(hf_frame(ECHO, 100 + i, bytes([i]) * i) for i in range(10)))
        for i in range(10):
            assert await session.frame() == (ECHO, 100 + i, bytes([i]) * i)
        frame = hf_frame(ECHO, 200, b"split over three messages")
        for part in (frame[:5], frame[5:20], frame[20:]):
            await ws.send(part)
        assert await session.frame() == (ECHO, 200, b"split over three messages")


@case
async def pings_get_pongs_with_their_payload():
    async with connect() as ws:
        for payload in (b"", b"x", os.urandom(125)):
            waiter = await ws.ping(payload)
            await asyncio.wait_for(waiter, TIMEOUT_S)
        await Session(ws).hello()


@case
async def ping_over_125_bytes_closes_1002():
    raw = await Raw().open()
    raw.send(raw_frame(0x9, b"p" * 126))
    await raw.expect_close(1002)


@case
async def unsolicited_pong_is_ignored():
    raw = await Raw().open()
    raw.send(raw_frame(0xA, b"unsolicited"))
    raw.send(raw_frame(0x2, hf_frame(HELLO, 1)))
    opcode, fin, payload = await raw.frame()
    assert opcode == 0x2 and fin
    assert hf_split(payload)[0][0][0] == WELCOME
    raw.close()


@case
async def reserved_bits_close_1002():
    for rsv in range(1, 8):
        raw = await Raw().open()
        raw.send(raw_frame(0x2, b"x", rsv=rsv))
        await raw.expect_close(1002)


@case
async def reserved_opcodes_close_1002():
    for opcode in (3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF):
        raw = await Raw().open()
        raw.send(raw_frame(opcode, b""))
        await raw.expect_close(1002)


@case
async def fragmented_message_is_one_stream():
    async with connect() as ws:
        session = Session(ws)
        await session.hello()
        frame = hf_frame(ECHO, 7, b"fragmented " * 50)
        await ws.send([frame[i : i + 37] for i in range(0, len(frame), 37)])
        assert await session.frame() == (ECHO, 7, b"fragmented " * 50)


@case
async def ping_between_fragments_is_answered_and_the_message_completes():
    raw = await Raw().open()
    hello = hf_frame(HELLO, 1)
    raw.send(raw_frame(0x2, hello[:6], fin=False))
    raw.send(raw_frame(0x9, b"mid"))
    raw.send(raw_frame(0x0, hello[6:], fin=True))
    opcode, _, payload = await raw.frame()
    assert (opcode, payload) == (0xA, b"mid")
    opcode, _, payload = await raw.frame()
    assert opcode == 0x2 and hf_split(payload)[0][0][0] == WELCOME
    raw.close()


@case
async def fragmented_control_frame_closes_1002():
    raw = await Raw().open()
    raw.send(raw_frame(0x9, b"a", fin=False))
    await raw.expect_close(1002)


@case
async def continuation_without_a_message_closes_1002():
    raw = await Raw().open()
    raw.send(raw_frame(0x0, b"x", fin=True))
    await raw.expect_close(1002)


@case
async def new_message_inside_a_fragmented_one_closes_1002():
    raw = await Raw().open()
    raw.send(raw_frame(0x2, b"x", fin=False))
    raw.send(raw_frame(0x2, b"y", fin=True))
    await raw.expect_close(1002)


@case
async def text_message_closes_1003():
    async with connect() as ws:
        await ws.send("valid UTF-8 text: κόσμε")
        await expect_close(ws, 1003)


@case
async def invalid_utf8_text_closes_1003_before_reading_it():
    raw = await Raw().open()
    raw.send(raw_frame(0x1, b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80"))
    await raw.expect_close(1003)


@case
async def close_handshake_echoes_the_code():
    async with connect() as ws:
        await Session(ws).hello()
        await ws.close(1000, "done")
        assert ws.close_code == 1000, ws.close_code
    for code in (1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 3999, 4000, 4999):
        async with connect() as ws:
            await ws.close(code, "")
            assert ws.close_code == code, (code, ws.close_code)


@case
async def close_with_no_payload_is_answered():
    raw = await Raw().open()
    raw.send(raw_frame(0x8, b""))
    await raw.expect_close(1000)


@case
async def close_with_one_byte_or_invalid_code_closes_1002():
    raw = await Raw().open()
    raw.send(raw_frame(0x8, b"\x03"))
    await raw.expect_close(1002)
    for code in (0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535):
        raw = await Raw().open()
        raw.send(raw_frame(0x8, struct.pack(">H", code)))
        await raw.expect_close(1002)


@case
async def close_reason_not_utf8_closes_1007_and_123_bytes_of_utf8_is_fine():
    raw = await Raw().open()
    raw.send(raw_frame(0x8, struct.pack(">H", 1000) + b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80"))
    await raw.expect_close(1007)
    raw = await Raw().open()
    raw.send(raw_frame(0x8, struct.pack(">H", 1000) + "é".encode() * 61 + b"x"))
    await raw.expect_close(1000)


@case
async def frames_after_a_close_are_not_read():
    raw = await Raw().open()
    raw.send(raw_frame(0x8, struct.pack(">H", 1000)) + raw_frame(0x2, hf_frame(HELLO, 1)))
    await raw.expect_close(1000)


@case
async def message_at_the_limit_passes_and_one_byte_more_closes_1009():
    async with connect() as ws:
        session = Session(ws)
        await session.hello()
        body = b"L" * (MAX_FRAME_BYTES - 16)
        await ws.send(hf_frame(ECHO, 1, body))
        assert await session.frame() == (ECHO, 1, body)
        await ws.send(hf_frame(ECHO, 2, body) + b"!")
        await expect_close(ws, 1009)
    async with connect() as ws:
        await Session(ws).hello()
        # Fragments that add up to one byte over: the first is a valid start of a frame.
        message = hf_frame(ECHO, 3, body) + b"!"
        half = len(message) // 2
        await ws.send([message[:half], message[half:]])
        await expect_close(ws, 1009)


@case
async def oversized_frame_is_refused_on_its_header():
    raw = await Raw().open()
    # Claims 2^40 bytes, sends none: refused before any payload.
    raw.send(raw_frame(0x2, b"", length_override=1 << 40))
    await raw.expect_close(1009)


@case
async def unmasked_client_frame_closes_1002():
    raw = await Raw().open()
    raw.send(raw_frame(0x2, hf_frame(HELLO, 1), mask=False))
    await raw.expect_close(1002)


@case
async def bad_holdfast_frame_in_a_message_gets_an_error_frame_then_close():
    async with connect() as ws:
        session = Session(ws)
        await ws.send(b"\x10\x00\x00\x00\x07\x01\x00\x00" + b"\x00" * 8)  # version 7
        kind, _, payload = await session.frame()
        assert kind == ERROR, kind
        assert struct.unpack("<H", payload[-10:-8])[0] == 1, "bad_version"
        await expect_close(ws, 1008)


@case
async def pushes_arrive_in_sequence_over_websocket():
    async with connect() as ws:
        session = Session(ws)
        await session.hello()
        await ws.send(hf_frame(SUBSCRIBE, 5, hf_topics(["ws-news"]), flags=1))
        assert (await session.frame())[:2] == (ACK, 5)
        for i in range(5):
            publish(ADMIN, "ws-news", f"item {i}")
        seqs = []
        for i in range(5):
            kind, _, payload = await session.frame()
            assert kind == PUSH, kind
            topic, seq, body = hf_push(payload)
            assert (topic, body) == ("ws-news", f"item {i}".encode()), (topic, body)
            seqs.append(seq)
        assert seqs == list(range(seqs[0], seqs[0] + 5)), seqs


@case
async def holdfast_heartbeat_ping_is_answered_through_the_transport():
    # The server pings a session silent for heartbeat_interval_ms (300 in this test's config).
    async with connect() as ws:
        session = Session(ws, answer_pings=False)
        # Hello payload asking for a 200 ms heartbeat (the test sets the server's floor lower):
        # [versions [1]][root: client_id "", token b"", versions, heartbeat_ms].
        data = b"\x01"
        root = len(data)
        payload = data + struct.pack("<iI", 0 - root, 0) + struct.pack("<iI", 0 - (root + 8), 0)
        payload += struct.pack("<iI", 0 - (root + 16), 1) + struct.pack("<I", 200)
        await ws.send(hf_frame(HELLO, 1, payload))
        kind, _, welcome = await session.frame()
        assert kind == WELCOME, kind
        heartbeat_ms = struct.unpack("<I", welcome[8:12])[0]
        kind, ping_id, _ = await asyncio.wait_for(session.frame(), heartbeat_ms / 1000 + TIMEOUT_S)
        assert kind == PING, kind
        await ws.send(hf_frame(PONG, ping_id))
        await ws.send(hf_frame(ECHO, 9, b"still open"))
        assert await session.frame() == (ECHO, 9, b"still open")


async def main():
    passed = failed = 0
    for fn in CASES:
        started = time.monotonic()
        try:
            await asyncio.wait_for(fn(), 30)
            passed += 1
            print(f"ok   {fn.__name__} ({(time.monotonic() - started) * 1000:.0f} ms)", flush=True)
        except Exception:  # noqa: BLE001 - report every failure and go on
            failed += 1
            print(f"FAIL {fn.__name__}", flush=True)
            traceback.print_exc(file=sys.stdout)
    print(f"{passed} passed, {failed} failed", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
