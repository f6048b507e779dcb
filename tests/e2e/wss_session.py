"""A Holdfast session over wss:// on the TLS listener (`tls_listen`), as a browser makes one:
Python's `websockets` with an ssl context that trusts the test certificate and offers ALPN
`http/1.1`, the Upgrade on `ws_path`, Hello inside a binary message, echoes, a push.

Run by tests/e2e/ws.rs as
    python3 wss_session.py WSS_URL CA_FILE ADMIN_ADDR
and prints `alpn=<chosen> ok` on success; exits non-zero (with a traceback) otherwise.
"""

import asyncio
import ssl
import sys

import websockets

from holdfast_ws import ACK, ECHO, PUSH, SUBSCRIBE, TIMEOUT_S, Session, hf_frame, hf_push, hf_topics, publish

WSS_URL, CA_FILE, ADMIN = sys.argv[1], sys.argv[2], sys.argv[3]


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
        await session.hello()
        for i in range(10):
            echo = hf_frame(ECHO, 100 + i, f"over wss {i}".encode() * (1 + i * 500))
            await ws.send(echo)
            assert await session.frame() == (ECHO, 100 + i, echo[16:]), i
        await ws.send(hf_frame(SUBSCRIBE, 5, hf_topics(["wss-news"]), flags=1))
        assert (await session.frame())[:2] == (ACK, 5)
        for i in range(3):
            publish(ADMIN, "wss-news", f"item {i}")
        for i in range(3):
            kind, _, payload = await session.frame()
            assert kind == PUSH, kind
            assert hf_push(payload) == ("wss-news", i + 1, f"item {i}".encode()), hf_push(payload)
    print(f"alpn={alpn} ok")


asyncio.run(main())
