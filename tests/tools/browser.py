"""Open a report in a real headless Chromium with the network blocked and check what it did.

Used by the tests (and usable by hand: ``python -m tests.tools.browser report.html shot.png``). Chromium
is driven over the DevTools protocol on a pipe (``--remote-debugging-pipe``: no port, no extra
package): every request the page makes is recorded (``Network.requestWillBeSent``), the rendered DOM
is inspected (images decoded, tables, headings) and a full-page screenshot is taken. The network is
blocked twice over: a proxy on a closed local port and a host resolver that resolves nothing.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

BLOCK_NETWORK = ["--proxy-server=http://127.0.0.1:9", "--proxy-bypass-list=<-loopback>",
                 "--host-resolver-rules=MAP * ~NOTFOUND"]  # fmt: skip
BASE_FLAGS = ["--headless", "--disable-gpu", "--no-sandbox", "--no-first-run", "--no-default-browser-check",
              "--disable-extensions", "--disable-background-networking", "--disable-sync",
              "--disable-component-update", "--disable-default-apps", "--mute-audio", "--hide-scrollbars",
              "--metrics-recording-only", "--disable-dev-shm-usage"]  # fmt: skip

# what the page reports about itself once loaded
_PROBE = """(() => {
  const imgs = [...document.images].map(i => ({src: i.src.slice(0, 40), ok: i.complete && i.naturalWidth > 0,
                                               w: i.naturalWidth, h: i.naturalHeight}));
  const tables = [...document.querySelectorAll('table')].map(t => ({id: t.id, rows: t.rows.length}));
  const h = [...document.querySelectorAll('h1,h2')].map(e => e.textContent.trim());
  const ext = [...document.querySelectorAll('[src],[href]')].map(e => e.getAttribute('src') || e.getAttribute('href'))
               .filter(u => /^(https?:|\\/\\/|ws)/i.test(u));
  return {imgs, tables, headings: h, external: ext, text: document.body.innerText.length,
          width: document.documentElement.scrollWidth, height: document.documentElement.scrollHeight};
})()"""


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return None


@dataclass
class PageCheck:
    requests: list[str] = field(default_factory=list)  # every URL the page asked for
    failed: list[str] = field(default_factory=list)  # requests that failed (blocked)
    dom: dict = field(default_factory=dict)
    console: list[str] = field(default_factory=list)
    screenshot: Path | None = None

    @property
    def network_requests(self) -> list[str]:
        """Requests that would have left the machine (anything but file:, data:, about:, blob:)."""
        local = ("file:", "data:", "about:", "blob:", "chrome:", "devtools:")
        return [u for u in self.requests if not u.lower().startswith(local)]


class _Pipe:
    def __init__(self, proc: subprocess.Popen, rfd: int, wfd: int):
        self.proc, self.r, self.w = proc, rfd, wfd
        self.buf = b""
        self.next_id = 0
        self.events: list[dict] = []

    def send(self, method: str, params: dict | None = None, session: str | None = None, timeout: float = 30) -> dict:
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self.w, json.dumps(msg).encode() + b"\0")
        want = self.next_id
        deadline = time.time() + timeout
        while time.time() < deadline:
            for m in self._read(deadline):
                if m.get("id") == want:
                    if "error" in m:
                        raise RuntimeError(f"{method}: {m['error']}")
                    return m.get("result", {})
                self.events.append(m)
        raise TimeoutError(f"no answer to {method} in {timeout} s")

    def wait_event(self, name: str, timeout: float = 30) -> dict:
        deadline = time.time() + timeout
        while time.time() < deadline:
            for i, e in enumerate(self.events):
                if e.get("method") == name:
                    return self.events.pop(i)
            self.events.extend(self._read(deadline))
        raise TimeoutError(f"no {name} in {timeout} s")

    def _read(self, deadline: float) -> list[dict]:
        import select

        out = []
        while b"\0" not in self.buf:
            left = deadline - time.time()
            if left <= 0:
                return out
            ready, _, _ = select.select([self.r], [], [], min(left, 0.5))
            if ready:
                chunk = os.read(self.r, 1 << 20)
                if not chunk:
                    raise RuntimeError("chromium closed the DevTools pipe")
                self.buf += chunk
            elif self.proc.poll() is not None:
                raise RuntimeError(f"chromium exited with {self.proc.returncode}")
        while b"\0" in self.buf:
            raw, self.buf = self.buf.split(b"\0", 1)
            if raw:
                out.append(json.loads(raw))
        return out


def check_page(
    html: str | Path, screenshot: str | Path | None = None, width: int = 1200, block_network: bool = True,
    chromium: str | None = None, settle_s: float = 0.5, timeout: float = 60,
) -> PageCheck:  # fmt: skip
    """Load `html` in headless Chromium (network blocked), record requests, probe the DOM, screenshot."""
    exe = chromium or find_chromium()
    if not exe:
        raise FileNotFoundError("no chromium on PATH (Debian: apt-get install chromium)")
    url = Path(html).resolve().as_uri()
    profile = tempfile.mkdtemp(prefix="cosim-chromium-")
    # the DevTools pipe: chromium reads commands on fd 3 and writes answers on fd 4
    to_chrome_r, to_chrome_w = os.pipe()
    from_chrome_r, from_chrome_w = os.pipe()

    def child_fds():  # in the child, before exec: move the pipe ends to 3 and 4 (dup2 clears close-on-exec)
        import fcntl

        r = fcntl.fcntl(to_chrome_r, fcntl.F_DUPFD, 10)  # out of the way first: they may sit on 3 or 4
        w = fcntl.fcntl(from_chrome_w, fcntl.F_DUPFD, 10)
        os.dup2(r, 3)
        os.dup2(w, 4)

    args = [exe, *BASE_FLAGS, *(BLOCK_NETWORK if block_network else []), f"--user-data-dir={profile}",
            "--remote-debugging-pipe", f"--window-size={width},900", "about:blank"]  # fmt: skip
    # close_fds=False: the child must keep 3 and 4; Python's own descriptors are close-on-exec anyway
    proc = subprocess.Popen(args, close_fds=False, preexec_fn=child_fds,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    os.close(to_chrome_r)
    os.close(from_chrome_w)
    pipe = _Pipe(proc, from_chrome_r, to_chrome_w)
    out = PageCheck()
    try:
        targets = pipe.send("Target.getTargets", timeout=timeout)["targetInfos"]
        page = next(t for t in targets if t["type"] == "page")
        session = pipe.send("Target.attachToTarget", {"targetId": page["targetId"], "flatten": True})["sessionId"]
        for domain in ("Network", "Page", "Runtime", "Log"):
            pipe.send(f"{domain}.enable", session=session)
        pipe.send("Emulation.setDeviceMetricsOverride",
                  {"width": width, "height": 900, "deviceScaleFactor": 1, "mobile": False}, session=session)  # fmt: skip
        pipe.send("Page.navigate", {"url": url}, session=session)
        pipe.wait_event("Page.loadEventFired", timeout=timeout)
        time.sleep(settle_s)  # late requests (fonts, lazy images) would show up by now
        out.dom = pipe.send("Runtime.evaluate", {"expression": _PROBE, "returnByValue": True}, session=session)["result"]["value"]
        if screenshot:
            h = int(out.dom.get("height") or 900)
            shot = pipe.send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True,
                             "clip": {"x": 0, "y": 0, "width": width, "height": h, "scale": 1}}, session=session)  # fmt: skip
            import base64

            Path(screenshot).write_bytes(base64.b64decode(shot["data"]))
            out.screenshot = Path(screenshot)
        try:
            pipe.send("Browser.close", timeout=5)
        except (TimeoutError, RuntimeError):
            pass
        for e in pipe.events:
            m, p = e.get("method"), e.get("params", {})
            if m == "Network.requestWillBeSent":
                out.requests.append(p["request"]["url"][:200])
            elif m == "Network.loadingFailed":
                out.failed.append(p.get("errorText", ""))
            elif m == "Log.entryAdded":
                out.console.append(p.get("entry", {}).get("text", ""))
            elif m == "Runtime.consoleAPICalled":
                out.console.append(" ".join(str(a.get("value")) for a in p.get("args", [])))
    finally:
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        os.close(from_chrome_r)
        os.close(to_chrome_w)
        shutil.rmtree(profile, ignore_errors=True)
    return out


def dump_dom(html: str | Path, chromium: str | None = None, timeout: float = 60) -> str:
    """The rendered DOM from ``chromium --headless --dump-dom`` with the network blocked."""
    exe = chromium or find_chromium()
    if not exe:
        raise FileNotFoundError("no chromium on PATH")
    with tempfile.TemporaryDirectory(prefix="cosim-chromium-") as profile:
        r = subprocess.run([exe, *BASE_FLAGS, *BLOCK_NETWORK, f"--user-data-dir={profile}", "--dump-dom",
                            Path(html).resolve().as_uri()], capture_output=True, text=True, timeout=timeout)  # fmt: skip
    return r.stdout


if __name__ == "__main__":
    import sys

    res = check_page(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else None)
    print(json.dumps({"requests": res.requests, "network_requests": res.network_requests, "dom": res.dom}, indent=1))
