"""End to end: the explain / manifold artifacts of a train run, seen in the MLflow UI.

Builds a tiny SynthFACS set and a random model, runs the ``explain`` and ``manifold`` stage
cores against a train run in a private sqlite store, starts ``mlflow server`` on a free local
port and drives Debian's headless chromium over the DevTools protocol (a minimal stdlib
websocket client; no browser download, no extra package): open the run's artifacts page,
expand ``explain/`` and ``manifold/``, open the Grad-CAM grid and a manifold plot, check that
the preview images decoded, and save screenshots (to ``$FACELENS_E2E_ARTIFACTS`` when set,
else the test's tmp dir; the paths are printed). With the same UI: two runs that logged images
under the same keys show them side by side in the experiment's chart view, and a
``facelens compare`` report of the two runs renders its thumbnails offline and links each to
the full-size figure that UI serves.

With ``FACELENS_DOCS_SCREENSHOTS=<dir>`` (``docs`` for the README) the chart view, one card
of it expanded (the two runs side by side) and the compare report's Grad-CAM section are also
written there, downscaled to a 256-colour palette (each under 300 kB).

Skipped only when chromium is missing and ``CI`` is unset; in CI it must run (``.ci/run``
installs chromium).
"""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import mlflow
import pytest

from facelens.config import Params
from facelens.constants import EXPRESSIONS
from facelens.data.params import DataParams, SplitParams
from facelens.data.prepare import prepare_dataset
from facelens.data.split import split_prepared
from facelens.data.synthfacs.params import SynthParams
from facelens.explain.params import ExplainParams
from facelens.manifold.params import ManifoldParams
from facelens.models.build import build_model
from facelens.models.export import export_model
from facelens.models.meta import ModelMeta
from facelens.models.params import ModelParams
from facelens.stages.explain import run as explain_stage
from facelens.stages.manifold import run as manifold_stage
from facelens.tracking.runs import configure, tracked_run

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

SIZE = 32
WINDOW = (1400, 1000)
#: README screenshots (``FACELENS_DOCS_SCREENSHOTS``): width in pixels and size limit.
DOCS_WIDTH = 1000
DOCS_MAX_BYTES = 300_000
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--no-first-run",
    f"--window-size={WINDOW[0]},{WINDOW[1]}",
)


def _chromium() -> str:
    found = shutil.which("chromium") or (
        "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None
    )
    if found:
        return found
    if os.environ.get("CI"):
        pytest.fail("CI is set but /usr/bin/chromium is missing: .ci/run must install chromium")
    pytest.skip("chromium not installed (apt-get install chromium); CI unset, so skipping")


# ----------------------------------------------------------------------- DevTools client


class _Cdp:
    """The Chrome DevTools protocol over a minimal RFC 6455 websocket (text frames only)."""

    def __init__(self, ws_url: str, timeout: float = 60.0) -> None:
        url = urlparse(ws_url)
        self._sock = socket.create_connection((url.hostname, url.port), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        self._sock.sendall(
            (
                f"GET {url.path} HTTP/1.1\r\nHost: {url.hostname}:{url.port}\r\n"
                "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = self._sock.recv(4096)
            if not chunk:
                raise ConnectionError("DevTools websocket closed during the handshake")
            buf += chunk
        head, self._pending = buf.split(b"\r\n\r\n", 1)
        if b" 101 " not in head.split(b"\r\n", 1)[0]:
            raise ConnectionError(f"DevTools websocket handshake refused: {head[:200]!r}")
        self._next_id = 0

    def _read(self, n: int) -> bytes:
        while len(self._pending) < n:
            chunk = self._sock.recv(1 << 16)
            if not chunk:
                raise ConnectionError("DevTools websocket closed")
            self._pending += chunk
        out, self._pending = self._pending[:n], self._pending[n:]
        return out

    def _send(self, text: str) -> None:
        data = text.encode()
        mask = os.urandom(4)
        n = len(data)
        if n < 126:
            header = struct.pack("!BB", 0x81, 0x80 | n)
        elif n < 1 << 16:
            header = struct.pack("!BBH", 0x81, 0x80 | 126, n)
        else:
            header = struct.pack("!BBQ", 0x81, 0x80 | 127, n)
        body = bytes(b ^ mask[i % 4] for i, b in enumerate(data))
        self._sock.sendall(header + mask + body)

    def _message(self) -> dict[str, Any]:
        parts: list[bytes] = []
        while True:
            b1, b2 = self._read(2)
            n = b2 & 0x7F
            if n == 126:
                (n,) = struct.unpack("!H", self._read(2))
            elif n == 127:
                (n,) = struct.unpack("!Q", self._read(8))
            mask = self._read(4) if b2 & 0x80 else b""
            payload = self._read(n)
            if mask:
                payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
            opcode = b1 & 0x0F
            if opcode == 0x8:
                raise ConnectionError("the browser closed the DevTools websocket")
            if opcode in (0x9, 0xA):  # ping / pong
                continue
            parts.append(payload)
            if b1 & 0x80:  # FIN
                return json.loads(b"".join(parts))

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self._next_id += 1
        my_id = self._next_id
        self._send(json.dumps({"id": my_id, "method": method, "params": params}))
        while True:  # skip events until our answer
            msg = self._message()
            if msg.get("id") == my_id:
                if "error" in msg:
                    raise RuntimeError(f"{method} failed: {msg['error']}")
                return msg.get("result", {})

    def js(self, expression: str) -> Any:
        res = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in res:
            raise RuntimeError(f"JS error in {expression!r}: {res['exceptionDetails']}")
        return res["result"].get("value")

    def wait_for(self, expression: str, what: str, timeout: float = 90.0) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.js(expression)
            if value:
                return value
            time.sleep(0.5)
        text = self.js("document.body ? document.body.innerText.slice(0, 1500) : '<no body>'")
        raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}; page:\n{text}")

    def screenshot(self, path: Path) -> Path:
        data = self.call("Page.captureScreenshot", format="png")["data"]
        path.write_bytes(base64.b64decode(data))
        return path

    def close(self) -> None:
        self._sock.close()


# ------------------------------------------------------------------------- processes


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Stop a process started in its own session, and its children (uvicorn workers)."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=15)


@pytest.fixture
def tracked_artifacts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """A train run whose ``explain/`` and ``manifold/`` artifacts come from the stage cores."""
    db = tmp_path / "mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{db}")
    configure(None, "facelens", artifact_location=str(tmp_path / "artifacts"))
    prepared, splits = tmp_path / "prepared", tmp_path / "splits"
    prepare_dataset(DataParams(image_size=SIZE, synth=SynthParams(n_identities=6)), prepared)
    split_prepared(prepared, splits, SplitParams(val_fraction=0.2, test_fraction=0.4))
    model, source = build_model(ModelParams(input_size=SIZE, weights="none"), num_outputs=7)
    meta = ModelMeta.for_model(
        model,
        task="expression",
        output_names=EXPRESSIONS,
        input_size=SIZE,
        weights_source=source,
        norm=((0.5, 0.5, 0.5), (0.25, 0.25, 0.25)),
    )
    export_model(model.eval(), meta, tmp_path / "model")
    with tracked_run("train expression") as run:
        mlflow.log_metric("best_val_metric", 0.5)
    params = Params(
        explain=ExplainParams(methods=("gradcam",), per_class=1, removal_fractions=(0.5,)),
        manifold=ManifoldParams(methods=("pca",), max_points=20, anchors=10),
    )
    reports = tmp_path / "reports"
    common = (params, prepared, splits, tmp_path / "model", run.info.run_id)
    explain_stage(
        *common,
        figures_dir=reports / "explain/figures",
        maps_dir=reports / "explain/maps",
        metrics_path=reports / "explain/faithfulness.json",
    )
    manifold_stage(
        *common,
        plots_dir=reports / "manifold/plots",
        metrics_path=reports / "manifold/metrics.json",
        reference_dir=tmp_path / "cache/manifold_reference",
    )
    # A second train run of the same model: its explain stage logs images under the same keys.
    with tracked_run("train expression") as run2:
        mlflow.log_metric("best_val_metric", 0.6)
    explain_stage(
        params,
        prepared,
        splits,
        tmp_path / "model",
        run2.info.run_id,
        figures_dir=tmp_path / "reports2/explain/figures",
        maps_dir=tmp_path / "reports2/explain/maps",
        metrics_path=tmp_path / "reports2/explain/faithfulness.json",
    )
    return {
        "uri": f"sqlite:///{db}",
        "experiment_id": run.info.experiment_id,
        "run_id": run.info.run_id,
        "run_id_2": run2.info.run_id,
        "reports": str(reports),
    }


@pytest.fixture
def mlflow_server(tracked_artifacts: dict[str, str], tmp_path: Path) -> Iterator[str]:
    port = _free_port()
    log = (tmp_path / "mlflow-server.log").open("wb")
    exe = Path(sys.executable).with_name("mlflow")
    proc = subprocess.Popen(
        [
            str(exe) if exe.exists() else "mlflow",
            "server",
            "--backend-store-uri",
            tracked_artifacts["uri"],
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        cwd=tmp_path,  # the default artifact root (./mlartifacts) stays in tmp
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            if proc.poll() is not None:
                raise AssertionError(
                    f"mlflow server exited with {proc.returncode}:\n"
                    + (tmp_path / "mlflow-server.log").read_text()[-3000:]
                )
            try:
                with urllib.request.urlopen(f"{base}/health", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError("mlflow server did not answer /health within 180 s")
            time.sleep(0.5)
        yield base
    finally:
        _stop(proc)
        log.close()


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[_Cdp]:
    exe = _chromium()
    profile = tmp_path / "chromium-profile"
    profile.mkdir()
    # chromium keeps its singleton socket in $TMPDIR and aborts when that path is over 107
    # bytes, which tmp_path-based folders can be: a short folder of its own in /tmp
    short_tmp = tempfile.mkdtemp(prefix="fl-chromium-", dir="/tmp")
    proc = subprocess.Popen(
        [
            exe,
            *CHROMIUM_FLAGS,
            f"--user-data-dir={profile}",
            "--remote-debugging-port=0",
            "about:blank",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        env={**os.environ, "TMPDIR": short_tmp},
    )
    cdp: _Cdp | None = None
    try:
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not (port_file.is_file() and port_file.read_text().strip()):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"chromium did not start (exit code {proc.poll()})")
            time.sleep(0.2)
        port = port_file.read_text().split()[0]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as resp:
            targets = json.load(resp)
        page = next(t for t in targets if t.get("type") == "page")
        cdp = _Cdp(page["webSocketDebuggerUrl"])
        cdp.call("Page.enable")
        width, height = WINDOW  # a fixed viewport, whatever the headless window chrome takes
        cdp.call(
            "Emulation.setDeviceMetricsOverride",
            width=width,
            height=height,
            deviceScaleFactor=1,
            mobile=False,
        )
        yield cdp
    finally:
        if cdp is not None:
            cdp.close()
        _stop(proc)
        shutil.rmtree(short_tmp, ignore_errors=True)


# ------------------------------------------------------------------------------ the test

_NODE = '[data-testid="artifact-tree-node"][artifact-name="{}"]'
#: The query that opens MLflow 3.17's UI in its model-training view (README: "MLflow UI").
_TRAINING_VIEW = "workflowType=machine_learning"


def _open(cdp: _Cdp, name: str) -> None:
    """Click an artifact-tree node (a folder toggles open, a file opens its preview)."""
    selector = json.dumps(_NODE.format(name))
    cdp.wait_for(f"!!document.querySelector({selector})", f"artifact tree node {name!r}")
    cdp.js(f"document.querySelector({selector}).click()")


def _previewed_image(cdp: _Cdp, path: str) -> dict[str, Any]:
    """Wait until the preview pane shows ``path`` and its image has decoded."""
    expr = f"""(() => {{
        if (!document.body.innerText.includes({json.dumps(path)})) return null;
        const imgs = Array.from(document.querySelectorAll('img'))
            .filter(i => i.complete && i.naturalWidth > 100 && !i.src.startsWith('data:'));
        return imgs.length ? {{w: imgs[0].naturalWidth, h: imgs[0].naturalHeight}} : null;
    }})()"""
    return cdp.wait_for(expr, f"the preview of {path}")


def test_run_artifacts_page_chart_view_and_compare_report(
    browser: _Cdp, tracked_artifacts: dict[str, str], mlflow_server: str, tmp_path: Path
) -> None:
    # ``browser`` first: without chromium (and CI unset) the test skips before any setup.
    from PIL import Image

    out = Path(os.environ.get("FACELENS_E2E_ARTIFACTS") or tmp_path / "screenshots")
    out.mkdir(parents=True, exist_ok=True)
    exp, run = tracked_artifacts["experiment_id"], tracked_artifacts["run_id"]

    # The experiment opens on its runs (the model-training view), not the GenAI overview:
    # facelens tags it custom_model_development, and MLflow 3.17's UI, which picks the view
    # from its sidebar switch, takes the README's link (?workflowType=machine_learning).
    tags = mlflow.MlflowClient(tracked_artifacts["uri"]).get_experiment(exp).tags
    assert tags["mlflow.experimentKind"] == "custom_model_development"
    browser.call("Page.navigate", url=f"{mlflow_server}/#/experiments/{exp}?{_TRAINING_VIEW}")
    browser.wait_for(
        "document.title.startsWith('Runs') && document.body.innerText.includes('train expression')",
        "the experiment's runs table with the train run",
    )
    assert "Token Usage" not in browser.js("document.body.innerText")  # no GenAI overview
    landing = browser.screenshot(out / "mlflow_experiment_runs.png")
    print(f"screenshot: {landing}")

    browser.call("Page.navigate", url=f"{mlflow_server}/#/experiments/{exp}/runs/{run}/artifacts")

    _open(browser, "explain")
    _open(browser, "cam_grid_gradcam.png")
    grid = _previewed_image(browser, "explain/cam_grid_gradcam.png")
    shot = browser.screenshot(out / "mlflow_explain_cam_grid_gradcam.png")
    print(f"screenshot: {shot}")
    with Image.open(
        Path(tracked_artifacts["reports"]) / "explain/figures/cam_grid_gradcam.png"
    ) as im:
        expected = im.size
    assert (grid["w"], grid["h"]) == expected  # the UI decoded our grid, pixel for pixel

    _open(browser, "manifold")
    _open(browser, "penultimate_pca.png")
    plot = _previewed_image(browser, "manifold/penultimate_pca.png")
    shot2 = browser.screenshot(out / "mlflow_manifold_penultimate_pca.png")
    print(f"screenshot: {shot2}")
    assert plot["w"] > 100 and plot["h"] > 100
    tree = browser.js(
        "Array.from(document.querySelectorAll('[data-testid=\"artifact-tree-node\"]'))"
        ".map(e => e.getAttribute('artifact-name'))"
    )
    assert {"faithfulness.json", "manifold.html", "metrics.json"} <= set(tree)

    # One UI start: the second run's images beside the first's, then the compare report.
    _two_runs_side_by_side(browser, tracked_artifacts, mlflow_server, out, tmp_path)

    for path in (landing, shot, shot2):
        with Image.open(path) as img:
            assert img.size == WINDOW
            colours = img.convert("RGB").getcolors(maxcolors=1 << 16)
            assert colours is None or len(colours) > 50  # a rendered page, not a blank one


def _chart_view_images(cdp: _Cdp, mlflow_server: str, exp: str) -> dict[str, set[str]]:
    """Open the experiment's chart view; image key -> run ids whose image decoded there."""
    from urllib.parse import parse_qs

    cdp.call("Page.navigate", url=f"{mlflow_server}/#/experiments/{exp}?{_TRAINING_VIEW}")
    switch = json.dumps('input[name="runs-view-mode"][value="CHART"]')
    cdp.wait_for(f"!!document.querySelector({switch})", "the runs table's chart-view switch")
    cdp.js(f"document.querySelector({switch}).click()")
    # Cards fill in run by run: wait until one key shows images of two runs (or time out).
    srcs = cdp.wait_for(
        """(() => {
            const imgs = Array.from(document.querySelectorAll('img')).filter(i =>
                i.src.includes('/get-artifact?') && i.src.includes('cam~')
                && i.complete && i.naturalWidth > 0);
            const runs = {};
            for (const i of imgs) {
                const q = new URL(i.src).searchParams;
                const key = q.get('path').split('+step+')[0];
                (runs[key] = runs[key] || new Set()).add(q.get('run_uuid'));
            }
            return Object.values(runs).some(r => r.size >= 2) ? imgs.map(i => i.src) : null;
        })()""",
        "decoded image cards of two runs under one key in the chart view",
    )
    keys: dict[str, set[str]] = {}
    for src in srcs:
        query = parse_qs(urlparse(src).query)
        key = query["path"][0].removeprefix("images/").split("+step+")[0].replace("~", "/")
        keys.setdefault(key, set()).add(query["run_uuid"][0])
    return keys


def _compare_report_renders(
    cdp: _Cdp, tracked: dict[str, str], mlflow_server: str, out: Path, tmp: Path
) -> Path:
    """``facelens compare`` of the two runs: every thumbnail decodes in the browser and the
    first one's link serves the full-size figure. Returns the screenshot."""
    from PIL import Image

    from facelens.tracking.compare.report import compare_runs
    from facelens.tracking.compare.thumbs import MAX_REPORT_BYTES

    report = compare_runs(
        [tracked["run_id"], tracked["run_id_2"]],
        tmp / "compare.html",
        tracking_uri=tracked["uri"],
        mlflow_ui=mlflow_server,
    )
    assert report.stat().st_size < MAX_REPORT_BYTES
    cdp.call("Page.navigate", url=report.as_uri())
    state = cdp.wait_for(
        """(() => {
            const imgs = Array.from(document.querySelectorAll('.cell img'));
            if (!imgs.length || !imgs.every(i => i.complete)) return null;
            return {n: imgs.length, decoded: imgs.filter(i => i.naturalWidth > 0).length,
                    href: imgs[0].parentElement.href || null};
        })()""",
        "the comparison report's thumbnails",
    )
    assert state["n"] >= 4 and state["decoded"] == state["n"], state
    assert state["href"] and state["href"].startswith(f"{mlflow_server}/get-artifact?")
    with urllib.request.urlopen(state["href"], timeout=30) as resp:
        full = resp.read()
    with Image.open(io.BytesIO(full)) as im:
        assert im.size[0] > 0  # the UI serves the full-size figure behind the thumbnail
    cdp.js(  # the figures rather than the tables at the top
        "Array.from(document.querySelectorAll('h2'))"
        ".find(h => h.innerText.startsWith('Grad-CAM'))?.scrollIntoView()"
    )
    return cdp.screenshot(out / "facelens_compare_report.png")


def _two_runs_side_by_side(
    browser: _Cdp, tracked_artifacts: dict[str, str], mlflow_server: str, out: Path, tmp: Path
) -> None:
    """The chart view's image cards and the ``facelens compare`` report, for the two runs."""
    runs = {tracked_artifacts["run_id"], tracked_artifacts["run_id_2"]}
    keys = _chart_view_images(browser, mlflow_server, tracked_artifacts["experiment_id"])
    side_by_side = [k for k, ids in keys.items() if ids == runs]
    assert side_by_side, f"no chart-view card showed both runs' images: {keys}"
    assert all(k.startswith("cam/gradcam/") for k in side_by_side)
    # MLflow 3.17 opens its assistant panel beside the charts; close it (when it is there).
    browser.js("document.querySelector('button[aria-label=\"Close\"]')?.click()")
    time.sleep(1)
    shot = browser.screenshot(out / "mlflow_chart_view_two_runs.png")
    print(f"screenshot: {shot}")
    _docs_copy(shot)
    card = _expanded_card(browser, sorted(side_by_side)[0], runs, out)
    print(f"screenshot: {card}")
    shot2 = _compare_report_renders(browser, tracked_artifacts, mlflow_server, out, tmp)
    print(f"screenshot: {shot2}")
    _docs_copy(shot2)


def _expanded_card(cdp: _Cdp, key: str, runs: set[str], out: Path) -> Path:
    """Click the expand icon of ``key``'s card: its dialog shows the runs' images side by side
    (checked: decoded, one per run, left to right). Returns the screenshot (the docs copy is
    cropped to the dialog's images)."""
    title = json.dumps(key)
    cdp.js(f"""(() => {{
        const card = Array.from(document.querySelectorAll(
            '[data-testid="experiment-view-compare-runs-card"]'))
            .find(c => c.innerText.startsWith({title}));
        const buttons = Array.from(card.querySelectorAll('button'));
        const menu = card.querySelector('[data-testid="experiment-view-compare-runs-card-menu"]');
        buttons[buttons.indexOf(menu) - 1].click();  // the expand icon, left of the menu
    }})()""")
    expr = """(() => {
        const d = document.querySelector('[role=dialog]');
        const imgs = d ? Array.from(d.querySelectorAll('img')) : [];
        if (imgs.length < 2 || !imgs.every(i => i.complete && i.naturalWidth > 0)) return null;
        const head = Array.from(d.querySelectorAll('*'))
            .filter(e => (e.innerText || '').trim() === KEY).pop();  // the innermost
        if (!head) return null;
        const box = head.getBoundingClientRect();
        const rects = imgs.map(i => i.getBoundingClientRect());
        return {title: head.innerText, box: [box.left - 24, box.top - 16],
                runs: imgs.map(i => new URL(i.src).searchParams.get('run_uuid')),
                lefts: rects.map(r => Math.round(r.left)), tops: rects.map(r => Math.round(r.top)),
                right: Math.max(...rects.map(r => r.right)),
                bottom: Math.max(...rects.map(r => r.bottom))};
    })()"""
    expr = expr.replace("KEY", title)
    cdp.wait_for(expr, f"the expanded {key} card with every run's image")
    time.sleep(1.5)  # the dialog's opening animation moves the images
    shown = cdp.js(expr)
    assert shown["title"] == key and set(shown["runs"]) == runs, shown
    assert len(set(shown["tops"])) == 1 and len(set(shown["lefts"])) == len(runs), shown
    shot = cdp.screenshot(out / "mlflow_chart_card_two_runs.png")
    box = (*shown["box"], shown["right"] + 24, shown["bottom"] + 24)
    _docs_copy(shot, crop=tuple(round(v) for v in box))
    cdp.js("document.querySelector('[role=dialog] button[aria-label=\"Close\"]')?.click()")
    return shot


def _docs_copy(shot: Path, crop: tuple[int, ...] | None = None) -> Path | None:
    """With ``FACELENS_DOCS_SCREENSHOTS=<dir>`` (e.g. ``docs/``): a copy of ``shot`` for the
    README (``crop``: a ``(left, top, right, bottom)`` box of it), at most 1000 px wide,
    reduced to a 256-colour palette (under 300 kB)."""
    from PIL import Image

    folder = os.environ.get("FACELENS_DOCS_SCREENSHOTS")
    if not folder:
        return None
    dest = Path(folder) / shot.name
    dest.parent.mkdir(parents=True, exist_ok=True)
    with Image.open(shot) as img:
        rgb = img.convert("RGB") if crop is None else img.convert("RGB").crop(crop)
    width = min(DOCS_WIDTH, rgb.width)
    small = rgb.resize((width, round(rgb.height * width / rgb.width)), Image.Resampling.LANCZOS)
    small.quantize(256, method=Image.Quantize.MEDIANCUT).save(dest, optimize=True)
    assert dest.stat().st_size < DOCS_MAX_BYTES, f"{dest}: {dest.stat().st_size} bytes"
    print(f"docs screenshot: {dest}")
    return dest
