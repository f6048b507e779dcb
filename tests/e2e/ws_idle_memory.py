"""Idle session memory, by hand (docs/PERFORMANCE.md, "Idle WebSocket sessions"): opens N
sessions (Upgrade if ws, then Hello/Welcome) on one transport of a running server and prints
its RSS before and after.

    python3 tests/e2e/ws_idle_memory.py plain|ws HOST PORT SERVER_PID N
"""
import asyncio, base64, os, struct, sys, time
kind, host, port, pid, n = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
def rss_kb():
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"): return int(line.split()[1])
HELLO = struct.pack("<IBBHQ", 16, 1, 1, 0, 1)
def ws_frame(payload):
    key = os.urandom(4)
    return bytes([0x82, 0x80 | len(payload)]) + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))
async def one():
    r, w = await asyncio.open_connection(host, port)
    if kind == "ws":
        key = base64.b64encode(os.urandom(16)).decode()
        w.write(f"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: holdfast.v1\r\n\r\n".encode())
        await r.readuntil(b"\r\n\r\n")
        w.write(ws_frame(HELLO))
        await r.readexactly(2 + 40)
    else:
        w.write(HELLO)
        await r.readexactly(40)
    return r, w
async def main():
    await asyncio.sleep(0.5)
    before = rss_kb()
    conns = []
    for i in range(0, n, 500):
        conns += await asyncio.gather(*[one() for _ in range(min(500, n - i))])
    await asyncio.sleep(1.0)
    after = rss_kb()
    print(f"{kind}: {n} idle sessions, RSS {before} -> {after} KiB, {(after - before) * 1024 / n:.0f} B/session")
asyncio.run(main())
