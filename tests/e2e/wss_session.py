"""A Holdfast session over wss:// on the TLS listener (`tls_listen`), as a browser makes one:
Python's `websockets` with an ssl context that trusts the test certificate and offers ALPN
`http/1.1`, the Upgrade on `ws_path`, Hello inside a binary message, echoes, a push.

Run by tests/e2e/ws.rs as
    python3 wss_session.py WSS_URL CA_FILE ADMIN_ADDR
and prints `alpn=<chosen> ok` on success; exits non-zero (with a traceback) otherwise.
"""

import asyncio
import json
import ssl
import struct
import sys
import urllib.request

import websockets

WSS_URL, CA_FILE, ADMIN = sys.argv[1], sys.argv[2], sys.argv[3]
TIMEOUT_S = 5
HELLO, WELCOME, PING, PONG, ECHO, PUSH, SUBSCRIBE, ACK = 1, 2, 3, 4, 5, 9, 10, 12


def hf_frame(kind, frame_id, payload=b"", flags=0):
    return struct.pack("<IBBHQ", 16 + len(payload), 1, kind, flags, frame_id) + payload


def hf_topics(topics):
    """A Subscribe payload: [names][TopicName x n][root] (docs/PROTOCOL.md)."""
    data = b""
    positions = []
    for topic in topics:
        positions.append((len(data), len(topic.encode())))
        data += topic.encode()
    array_at = len(data)
    for at, length in positions:
        field = len(data)
        data += struct.pack("<iI", at - field, length)
    root = len(data)
    data += struct.pack("<iI", array_at - root, len(topics))
    return data


def hf_push(payload):
    """(topic, seq, payload) of a Push payload: root of 24 bytes at the end."""
    root = len(payload) - 24
    t_off, t_len, seq, p_off, p_len = struct.unpack("<iIQiI", payload[root:])
    topic = payload[root + t_off : root + t_off + t_len].decode()
    body = payload[root + 16 + p_off : root + 16 + p_off + p_len]
    return topic, seq, body


class Session:
    def __init__(self, ws):
        self.ws = ws
        self.rest = b""

    async def frame(self):
        """The next Holdfast frame (kind, id, payload), answering heartbeat Pings."""
        while True:
            if len(self.rest) >= 16:
                length, _, kind, _, frame_id = struct.unpack("<IBBHQ", self.rest[:16])
                if len(self.rest) >= length:
                    payload, self.rest = self.rest[16:length], self.rest[length:]
                    if kind == PING:
                        await self.ws.send(hf_frame(PONG, frame_id))
                        continue
                    return kind, frame_id, payload
            message = await asyncio.wait_for(self.ws.recv(), TIMEOUT_S)
            assert isinstance(message, bytes), "Holdfast messages are binary"
            self.rest += message


async def main():
    context = ssl.create_default_context(cafile=CA_FILE)
    context.set_alpn_protocols(["http/1.1"])
    async with websockets.connect(
        WSS_URL,
        ssl=context,
        server_hostname="localhost",
        subprotocols=["holdfast.v1"],
        compression=None,
        open_timeout=TIMEOUT_S,
    ) as ws:
        alpn = ws.transport.get_extra_info("ssl_object").selected_alpn_protocol()
        assert alpn == "http/1.1", alpn
        assert ws.subprotocol == "holdfast.v1", ws.subprotocol
        session = Session(ws)
        await ws.send(hf_frame(HELLO, 1))
        assert (await session.frame())[:2] == (WELCOME, 1)
        for i in range(10):
            echo = hf_frame(ECHO, 100 + i, f"over wss {i}".encode() * (1 + i * 500))
            await ws.send(echo)
            assert await session.frame() == (ECHO, 100 + i, echo[16:]), i
        await ws.send(hf_frame(SUBSCRIBE, 5, hf_topics(["wss-news"]), flags=1))
        assert (await session.frame())[:2] == (ACK, 5)
        for i in range(3):
            body = json.dumps({"target": "topic", "topic": "wss-news", "payload": f"item {i}"})
            request = urllib.request.Request(
                f"http://{ADMIN}/publish", data=body.encode(), method="POST"
            )
            with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
                assert response.status in (200, 202), response.status
        for i in range(3):
            kind, _, payload = await session.frame()
            assert kind == PUSH, kind
            assert hf_push(payload) == ("wss-news", i + 1, f"item {i}".encode()), hf_push(payload)
    print(f"alpn={alpn} ok")


asyncio.run(main())
