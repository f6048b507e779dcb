"""The JS client page in a real browser: headless Chromium opens the page the admin listener
serves (`GET /`, clients/js/index.html built into the binary; the WebSocket address in its
query string), the page connects to Holdfast's ws_listen and subscribes; this script publishes through POST /publish and reads the page's DOM over the
DevTools protocol until every push is shown, checks they arrived in order with no gap, and
saves a screenshot.

Run by tests/e2e/ws.rs as
    python3 ws_browser.py WS_URL ADMIN_ADDR SCREENSHOT_PATH
Prints `1 passed, 0 failed` on success; exits 1 with the reason otherwise.
"""

import asyncio
import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

import websockets

WS_URL, ADMIN, SCREENSHOT = sys.argv[1:4]
TOPIC = "browser-news"
PUSHES = 12
TIMEOUT_S = 20


class DevTools:
    def __init__(self, ws):
        self.ws = ws
        self.next_id = 0

    async def call(self, method, **params):
        self.next_id += 1
        call_id = self.next_id
        await self.ws.send(json.dumps({"id": call_id, "method": method, "params": params}))
        while True:
            message = json.loads(await asyncio.wait_for(self.ws.recv(), TIMEOUT_S))
            if message.get("id") == call_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message["result"]

    async def evaluate(self, expression):
        result = await self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def wait_for(self, expression, what):
        deadline = time.monotonic() + TIMEOUT_S
        while time.monotonic() < deadline:
            if await self.evaluate(expression):
                return
            await asyncio.sleep(0.05)
        log = await self.evaluate("document.getElementById('log')?.textContent")
        status = await self.evaluate("document.getElementById('status')?.textContent")
        raise AssertionError(f"timed out waiting for {what}; status {status!r}; page log:\n{log}")


def publish(payload):
    body = json.dumps({"target": "topic", "topic": TOPIC, "payload": payload}).encode()
    request = urllib.request.Request(f"http://{ADMIN}/publish", data=body, method="POST")
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.status in (200, 202), response.status


async def run(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=5) as response:
        targets = json.load(response)
    page = next(t for t in targets if t["type"] == "page")
    async with websockets.connect(page["webSocketDebuggerUrl"], max_size=None, compression=None) as ws:
        tools = DevTools(ws)
        await tools.call("Runtime.enable")
        await tools.wait_for(
            "document.getElementById('status')?.dataset.state === 'open' && "
            "document.getElementById('log').textContent.includes('subscribed')",
            "the page to connect and subscribe",
        )
        for i in range(PUSHES):
            publish(f"browser push {i}")
        await tools.wait_for(
            f"document.querySelectorAll('#pushes tr').length >= {PUSHES}", f"{PUSHES} pushes on the page"
        )
        rows = await tools.evaluate(
            "[...document.querySelectorAll('#pushes tr')].map(r => "
            "[r.dataset.topic, Number(r.dataset.seq), Number(r.dataset.gap), r.querySelector('.payload').textContent])"
        )
        assert len(rows) == PUSHES, rows
        first = rows[0][1]
        expected = [[TOPIC, first + i, 0, f"browser push {i}"] for i in range(PUSHES)]
        assert rows == expected, f"pushes out of order or with gaps:\n{rows}"
        assert await tools.evaluate("document.getElementById('count').textContent") == str(PUSHES)
        assert await tools.evaluate("document.getElementById('missed').textContent") == "0"
        shot = await tools.call("Page.captureScreenshot", format="png")
        os.makedirs(os.path.dirname(SCREENSHOT), exist_ok=True)
        with open(SCREENSHOT, "wb") as f:
            f.write(base64.b64decode(shot["data"]))


def main():
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "chromium is not installed (Debian package chromium, see run.sh)"
    profile = tempfile.mkdtemp(prefix="holdfast-chromium-")
    query = urllib.parse.urlencode({"server": WS_URL, "topic": TOPIC})
    url = f"http://{ADMIN}/?{query}"
    browser = subprocess.Popen(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            f"--user-data-dir={profile}",
            "--remote-debugging-address=127.0.0.1",
            "--remote-debugging-port=0",
            "--window-size=900,700",
            url,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        port_file = os.path.join(profile, "DevToolsActivePort")
        deadline = time.monotonic() + TIMEOUT_S
        while not (os.path.exists(port_file) and open(port_file).read().strip()):
            assert browser.poll() is None, f"chromium exited with {browser.returncode}"
            assert time.monotonic() < deadline, "chromium did not open its DevTools port"
            time.sleep(0.05)
        port = int(open(port_file).read().split()[0])
        asyncio.run(asyncio.wait_for(run(port), 60))
    finally:
        browser.terminate()
        try:
            browser.wait(10)
        except subprocess.TimeoutExpired:
            browser.kill()
            browser.wait()
        shutil.rmtree(profile, ignore_errors=True)
    print("ok   browser_page_shows_pushes_in_order")
    print("1 passed, 0 failed")


if __name__ == "__main__":
    try:
        main()
    except Exception as error:  # noqa: BLE001 - one case: report and fail
        import traceback

        traceback.print_exc(file=sys.stdout)
        print("FAIL browser_page_shows_pushes_in_order")
        print("0 passed, 1 failed")
        sys.exit(1)
