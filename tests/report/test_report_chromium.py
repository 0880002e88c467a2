"""The report in a real headless Chromium: no console errors, no network requests, every
figure visible, hostile persona text shown as text and never run.

Chromium is driven through the DevTools protocol over ``--remote-debugging-pipe``
(file descriptors 3 and 4, NUL-separated JSON messages), so no extra package is
needed. The test skips when Chromium is not installed; CI installs Debian's
``chromium``. Two reports are loaded: a hostile-outcome study (the whole page is
screenshotted) and the paper's reproduction (``pcollapse reproduce`` on ../shared;
skipped without it), whose top of page and figures section are screenshotted. The
screenshots are saved next to each report and, when ``PCOLLAPSE_ARTIFACT_DIR`` is set,
copied there as CI artifacts.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import select
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from _report_helpers import HOSTILE_FAMILY, HOSTILE_PERSONA

from persona_collapse.study import StudyOutcome

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
TIMEOUT_S = 60.0
SEVERE = ("error", "warning", "assert")


def _browser() -> str:
    for name in CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    pytest.skip(
        "Chromium not found (looked for: " + ", ".join(CANDIDATES) + "); "
        "install it (Debian: apt-get install chromium) to check the report in a browser"
    )


class DevTools:
    """A minimal DevTools-protocol session over Chromium's pipe transport."""

    def __init__(self, executable: str, profile: Path) -> None:
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()

        def wire_pipes() -> None:  # runs in the child before exec
            os.dup2(to_browser_r, 3)
            os.dup2(from_browser_w, 4)

        self.process = subprocess.Popen(
            [
                executable,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-extensions",
                "--hide-scrollbars",
                f"--user-data-dir={profile}",
                "--remote-debugging-pipe",
                "about:blank",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=wire_pipes,
            pass_fds=(3, 4),
        )
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict[str, Any]] = []

    def _read_message(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no answer from Chromium")
            ready, _, _ = select.select([self._from_browser], [], [], left)
            if ready:
                chunk = os.read(self._from_browser, 1 << 20)
                if not chunk:
                    raise EOFError("Chromium closed the DevTools pipe")
                self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        message: dict[str, Any] = json.loads(raw)
        return message

    def send(
        self, method: str, params: dict[str, Any] | None = None, session: str | None = None
    ) -> Any:
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session is not None:
            message["sessionId"] = session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + TIMEOUT_S
        while True:
            reply = self._read_message(deadline)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_for(self, method: str, timeout: float = TIMEOUT_S) -> dict[str, Any]:
        for i, event in enumerate(self.events):
            if event.get("method") == method:
                return self.events.pop(i)
        deadline = time.monotonic() + timeout
        while True:
            event = self._read_message(deadline)
            if event.get("method") == method:
                return event
            self.events.append(event)

    def drain(self, seconds: float) -> None:
        """Collect the events that arrive within ``seconds``."""
        deadline = time.monotonic() + seconds
        while True:
            try:
                self.events.append(self._read_message(deadline))
            except TimeoutError:
                return

    def close(self) -> None:
        with contextlib.suppress(OSError, EOFError, TimeoutError, RuntimeError):
            self.send("Browser.close")
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
        os.close(self._to_browser)
        os.close(self._from_browser)


CHECKS_JS = """
(() => {
  // Collapsed tables count as shown once the reader opens them.
  document.querySelectorAll('details').forEach(d => { d.open = true; });
  const figures = [...document.querySelectorAll('figure')].map(fig => {
    const svg = fig.querySelector('svg');
    const box = svg ? svg.getBoundingClientRect() : null;
    const style = svg ? getComputedStyle(svg) : null;
    return {
      id: fig.id,
      width: box ? box.width : 0,
      height: box ? box.height : 0,
      shown: !!style && style.display !== 'none' && style.visibility !== 'hidden'
             && parseFloat(style.opacity) > 0,
      drawn: svg ? svg.querySelectorAll('path, use').length : 0,
    };
  });
  return {
    title: document.title,
    pwned: window.__pwned === undefined ? null : window.__pwned,
    scripts: document.querySelectorAll('script').length,
    images: document.querySelectorAll('img').length,
    text: document.body.innerText,
    pageWidth: document.documentElement.scrollWidth,
    pageHeight: document.documentElement.scrollHeight,
    figures,
  };
})()
"""


SECTION_BOX_JS = """
(() => {
  const el = document.getElementById(%s);
  if (!el) { return null; }
  const box = el.getBoundingClientRect();
  return {x: box.left + window.scrollX, y: box.top + window.scrollY,
          width: box.width, height: box.height};
})()
"""


def load_report(
    report: Path, profile: Path, *, width: int = 1200, section: str | None = None
) -> dict[str, Any]:
    """Open ``report`` in headless Chromium: what the page reported (:data:`CHECKS_JS`),
    the DevTools events, a screenshot of the whole page (``full``, PNG bytes), of its
    top (``top``: the first screen) and, given ``section``, of that section."""
    executable = _browser()
    url = report.resolve().as_uri()
    tools = DevTools(executable, profile)
    shots: dict[str, bytes] = {}
    try:
        targets = tools.send("Target.getTargets")["targetInfos"]
        page = next(t for t in targets if t["type"] == "page")
        attached = tools.send(
            "Target.attachToTarget", {"targetId": page["targetId"], "flatten": True}
        )
        session = attached["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            tools.send(f"{domain}.enable", session=session)
        tools.events.clear()
        tools.send("Emulation.setDeviceMetricsOverride",
                   {"width": width, "height": 900, "deviceScaleFactor": 1, "mobile": False},
                   session=session)  # fmt: skip
        tools.send("Page.navigate", {"url": url}, session=session)
        tools.wait_for("Page.loadEventFired")
        tools.drain(0.5)  # late errors or requests, if any

        def capture(clip: dict[str, Any] | None = None) -> bytes:
            params: dict[str, Any] = {"format": "png"}
            if clip is not None:
                params.update(clip=clip, captureBeyondViewport=True)
            return base64.b64decode(
                tools.send("Page.captureScreenshot", params, session=session)["data"]
            )

        shots["top"] = capture()  # before the tables are opened: what a reader sees first
        box = None
        if section is not None:
            box = tools.send(
                "Runtime.evaluate",
                {"expression": SECTION_BOX_JS % json.dumps(section), "returnByValue": True},
                session=session,
            )["result"].get("value")
        checks = tools.send(
            "Runtime.evaluate", {"expression": CHECKS_JS, "returnByValue": True}, session=session
        )["result"]["value"]
        height = min(int(checks["pageHeight"]), 16000)
        tools.send("Emulation.setDeviceMetricsOverride",
                   {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
                   session=session)  # fmt: skip
        shots["full"] = capture()
        if box is not None:
            shots["section"] = capture(
                {"x": box["x"], "y": box["y"], "width": box["width"],
                 "height": min(box["height"], 6000), "scale": 1}
            )  # fmt: skip
        events = list(tools.events)
    finally:
        tools.close()
    return {"url": url, "checks": checks, "events": events, "shots": shots, "section": box}


def save_artifact(path: Path, data: bytes) -> Path:
    """Write a screenshot next to the report and, when ``PCOLLAPSE_ARTIFACT_DIR`` is set,
    copy it there (a CI artifact)."""
    path.write_bytes(data)
    artifacts = os.environ.get("PCOLLAPSE_ARTIFACT_DIR")
    if artifacts:
        Path(artifacts).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(artifacts) / path.name)
    return path


@pytest.fixture(scope="module")
def browser_run(
    hostile_outcome: StudyOutcome, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    """Load the report once; return what the page reported, the events and the screenshot."""
    run = load_report(hostile_outcome.files.html, tmp_path_factory.mktemp("chromium-profile"))
    screenshot = save_artifact(
        hostile_outcome.output_dir / "report-screenshot.png", run["shots"]["full"]
    )
    return {**run, "screenshot": screenshot}


def test_loads_without_console_errors(browser_run: dict[str, Any]) -> None:
    problems = []
    for event in browser_run["events"]:
        method, params = event.get("method"), event.get("params", {})
        if method == "Runtime.exceptionThrown":
            problems.append(params["exceptionDetails"].get("text"))
        elif method == "Runtime.consoleAPICalled" and params.get("type") in SEVERE:
            problems.append(params.get("args"))
        elif method == "Log.entryAdded" and params["entry"]["level"] in ("error", "warning"):
            problems.append(params["entry"].get("text"))
    assert problems == []


def test_makes_no_network_request(browser_run: dict[str, Any]) -> None:
    requested = [
        e["params"]["request"]["url"]
        for e in browser_run["events"]
        if e.get("method") == "Network.requestWillBeSent"
    ]
    assert requested == [browser_run["url"]]  # the page itself, nothing else
    failed = [e for e in browser_run["events"] if e.get("method") == "Network.loadingFailed"]
    assert failed == []


def test_every_figure_is_visible(
    browser_run: dict[str, Any], hostile_outcome: StudyOutcome
) -> None:
    figures = browser_run["checks"]["figures"]
    assert [f["id"] for f in figures] == [f.key for f in hostile_outcome.files.figures]
    assert len(figures) >= 8
    page_width = browser_run["checks"]["pageWidth"]
    for fig in figures:
        assert fig["shown"], fig
        assert fig["width"] > 200 and fig["height"] > 100, fig
        assert fig["width"] <= page_width, fig
        assert fig["drawn"] > 10, fig  # the SVG holds the drawing, not an empty box


def test_hostile_text_is_shown_and_never_runs(browser_run: dict[str, Any]) -> None:
    checks = browser_run["checks"]
    assert checks["pwned"] is None
    assert checks["title"] == "persona-collapse report: hostile"
    assert checks["scripts"] == 0 and checks["images"] == 0
    text = checks["text"]
    assert "<script>window.__pwned = 1;" in text
    assert HOSTILE_PERSONA.split(" who signs")[0] in text
    assert HOSTILE_FAMILY in text


def test_screenshot_is_saved(browser_run: dict[str, Any]) -> None:
    data = browser_run["screenshot"].read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 50_000


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


@pytest.fixture(scope="module")
def reproduce_run(
    reproduced_report: StudyOutcome, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    """The paper's reproduced report in Chromium, with the top of the page and the
    figures section saved as screenshots (and as CI artifacts)."""
    run = load_report(
        reproduced_report.files.html,
        tmp_path_factory.mktemp("chromium-reproduce"),
        section="figures",
    )
    out = reproduced_report.output_dir
    run["top_png"] = save_artifact(out / "reproduce-top.png", run["shots"]["top"])
    run["figures_png"] = save_artifact(out / "reproduce-figures.png", run["shots"]["section"])
    return run


def test_reproduce_report_loads_clean_with_its_figures(
    reproduce_run: dict[str, Any], reproduced_report: StudyOutcome
) -> None:
    test_loads_without_console_errors(reproduce_run)
    test_makes_no_network_request(reproduce_run)
    text = reproduce_run["checks"]["text"]
    for family in reproduced_report.results.families:
        assert family in text
    figures = reproduce_run["checks"]["figures"]
    assert [f["id"] for f in figures] == [f.key for f in reproduced_report.files.figures]
    for fig in figures:
        assert fig["shown"] and fig["drawn"] > 10, fig


def test_reproduce_screenshots_show_the_top_and_the_figures(
    reproduce_run: dict[str, Any],
) -> None:
    top = reproduce_run["top_png"].read_bytes()
    assert _png_size(top) == (1200, 900)
    box = reproduce_run["section"]
    assert box is not None and box["height"] > 300  # the figures section was found
    figures = reproduce_run["figures_png"].read_bytes()
    width, height = _png_size(figures)
    assert abs(width - box["width"]) <= 1 and abs(height - min(box["height"], 6000)) <= 1
    assert len(figures) > 50_000  # drawn figures, not a blank strip
    if os.environ.get("PCOLLAPSE_ARTIFACT_DIR"):
        saved = Path(os.environ["PCOLLAPSE_ARTIFACT_DIR"])
        assert (saved / "reproduce-top.png").read_bytes() == top
        assert (saved / "reproduce-figures.png").read_bytes() == figures
