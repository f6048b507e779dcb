"""Holdfast frames (docs/PROTOCOL.md) over a `websockets` connection, shared by the WebSocket
test scripts next to this file (ws_conformance.py, wss_session.py). They are run by path
(`python3 tests/e2e/<script>.py`), so Python finds this module in the script's own folder.
"""

import asyncio
import json
import struct
import urllib.request

# Seconds any one wait (a message, a close, an HTTP call) may take.
TIMEOUT_S = 5

HELLO, WELCOME, PING, PONG, ECHO, PUSH, SUBSCRIBE, ACK, ERROR, GOODBYE = 1, 2, 3, 4, 5, 9, 10, 12, 13, 14


def hf_frame(kind, frame_id, payload=b"", flags=0):
    return struct.pack("<IBBHQ", 16 + len(payload), 1, kind, flags, frame_id) + payload


def hf_topics(topics):
    """A Subscribe payload: [names][TopicName x n][root]."""
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


def hf_split(stream):
    """Splits a byte stream into (kind, id, payload) frames; returns (frames, rest)."""
    frames = []
    while len(stream) >= 16:
        length, version, kind, flags, frame_id = struct.unpack("<IBBHQ", stream[:16])
        if len(stream) < length:
            break
        frames.append((kind, frame_id, stream[16:length]))
        stream = stream[length:]
    return frames, stream


def hf_push(payload):
    """(topic, seq, payload) of a Push payload: root of 24 bytes at the end."""
    root = len(payload) - 24
    t_off, t_len, seq, p_off, p_len = struct.unpack("<iIQiI", payload[root:])
    topic = payload[root + t_off : root + t_off + t_len].decode()
    body = payload[root + 16 + p_off : root + 16 + p_off + p_len]
    return topic, seq, body


class Session:
    """A Holdfast session over a `websockets` connection. It answers the server's heartbeat
    Pings itself unless told not to."""

    def __init__(self, ws, answer_pings=True):
        self.ws = ws
        self.rest = b""
        self.answer_pings = answer_pings

    async def frame(self):
        """The next Holdfast frame (kind, id, payload)."""
        while True:
            frames, self.rest = hf_split(self.rest)
            if frames:
                first = frames[0]
                # Put the others back in front of what is left.
                self.rest = b"".join(hf_frame(k, i, p) for k, i, p in frames[1:]) + self.rest
                if first[0] == PING and self.answer_pings:
                    await self.ws.send(hf_frame(PONG, first[1]))
                    continue
                return first
            message = await asyncio.wait_for(self.ws.recv(), TIMEOUT_S)
            assert isinstance(message, bytes), "Holdfast messages are binary"
            self.rest += message

    async def hello(self):
        await self.ws.send(hf_frame(HELLO, 1))
        kind, frame_id, _ = await self.frame()
        assert (kind, frame_id) == (WELCOME, 1), (kind, frame_id)


def publish(admin, topic, payload):
    """Publishes `payload` (a string) to `topic` through the admin listener's POST /publish."""
    body = json.dumps({"target": "topic", "topic": topic, "payload": payload}).encode()
    request = urllib.request.Request(f"http://{admin}/publish", data=body, method="POST")
    with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
        assert response.status in (200, 202), response.status
