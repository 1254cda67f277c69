"""``mlflow models serve`` under load: client processes posting mixed good and bad rows.

    python benchmarks/serving_load.py                       # 2 clients x 200 requests
    python benchmarks/serving_load.py --clients 4 --requests 500

Builds a random 32-px VGG16 expression model (the model is not what is measured), logs it with
``log_pyfunc_model`` into a private sqlite store and starts ``mlflow models serve
--env-manager local`` on 127.0.0.1 (one uvicorn worker, MLflow's default). Each good image of a
small pool is first answered alone (the reference). Then ``--clients`` processes each post
``--requests`` requests of 1 to 4 rows, drawn from the pool and from bad rows with known error
codes (invalid base64, text, a truncated PNG, an 8x8 image, a GIF animation), while this
process polls ``/ping`` every 0.2 s and samples the resident memory of the server's processes.

It prints the latency percentiles of the requests (p50 / p99, seconds, client side), the
largest resident set of the server (sum over its processes, sampled, and the worker's
``VmHWM``), and every discrepancy: a non-200 answer, a lost or extra row, a good row whose label
or probabilities differ from its reference, a bad row without its code, a failed ping.
``tests/e2e/test_model_server.py`` runs :func:`run_load` against its server and asserts that
there are no discrepancies (never the timings).
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

#: Bad rows and the ``error`` each must get (the images are made by :func:`_bad_rows`).
BAD_CODES = ("invalid_base64", "unsupported_format", "truncated", "too_small", "multi_frame")
_POOL = 8
_MAX_ROWS = 4
_PROB_ATOL = 1e-6


@dataclass
class LoadReport:
    """What :func:`run_load` saw."""

    latencies: list[float] = field(default_factory=list)
    requests: int = 0
    good_rows: int = 0
    bad_rows: int = 0
    pings: int = 0
    problems: list[str] = field(default_factory=list)
    max_rss_mb: float = 0.0
    worker_hwm_mb: float = 0.0

    def percentile(self, q: float) -> float:
        """The ``q`` quantile (0..1) of the request latencies, in seconds."""
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


# ------------------------------------------------------------------------------ payloads


def _png(arr, fmt: str = "PNG", **kw: object) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    (arr if isinstance(arr, Image.Image) else Image.fromarray(arr)).save(buf, format=fmt, **kw)
    return buf.getvalue()


def _face(seed: int, side: int):
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(blocks).resize((side, side), Image.Resampling.BILINEAR))


def good_pool() -> list[str]:
    """The base64 good images (small, distinct)."""
    return [base64.b64encode(_png(_face(k, 24 + 4 * k))).decode() for k in range(_POOL)]


def _bad_rows() -> dict[str, str]:
    from PIL import Image

    good = _png(_face(100, 40))
    frames = [Image.fromarray(_face(101 + i, 32)) for i in range(3)]
    gif = _png(frames[0], "GIF", save_all=True, append_images=frames[1:])
    cells = {
        "invalid_base64": "%% not base64 %%",
        "unsupported_format": base64.b64encode(b"just some text, not an image").decode(),
        "truncated": base64.b64encode(good[: len(good) // 2]).decode(),
        "too_small": base64.b64encode(_png(_face(102, 8))).decode(),
        "multi_frame": base64.b64encode(gif).decode(),
    }
    assert tuple(cells) == BAD_CODES
    return cells


# ------------------------------------------------------------------------------ HTTP


def post(url: str, body: dict, timeout: float = 60.0) -> tuple[int, str]:
    """POST a JSON body to ``url``/invocations; (status, text)."""
    req = urllib.request.Request(
        f"{url}/invocations",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return int(resp.status), resp.read().decode()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read().decode()


def ping(url: str, timeout: float = 5.0) -> int:
    """GET ``url``/ping; the status, or 0 when the server did not answer."""
    try:
        with urllib.request.urlopen(f"{url}/ping", timeout=timeout) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except OSError:
        return 0


def _rows(values: list[str]) -> dict:
    return {"dataframe_split": {"columns": ["image"], "data": [[v] for v in values]}}


def references(url: str, pool: list[str]) -> list[dict]:
    """Each good image answered alone: its ``label`` and probabilities."""
    status, text = post(url, _rows(pool))
    if status != 200:
        raise RuntimeError(f"reference request failed with {status}: {text[:300]}")
    rows = json.loads(text)["predictions"]
    if any(r["error"] for r in rows):
        raise RuntimeError(f"a reference image was refused: {[r['message'] for r in rows]}")
    return [{k: v for k, v in r.items() if k == "label" or k.startswith("p_")} for r in rows]


# ------------------------------------------------------------------------------ one client


def client(url: str, n_requests: int, seed: int, refs: list[dict]) -> dict:
    """Post ``n_requests`` mixed requests; latencies, row counts and discrepancies."""
    pool, bad = good_pool(), _bad_rows()
    rng = random.Random(seed)
    out: dict = {"latencies": [], "good": 0, "bad": 0, "problems": []}
    for i in range(n_requests):
        picks = [rng.randrange(_POOL + len(BAD_CODES)) for _ in range(rng.randint(1, _MAX_ROWS))]
        values = [pool[k] if k < _POOL else bad[BAD_CODES[k - _POOL]] for k in picks]
        start = time.perf_counter()
        status, text = post(url, _rows(values))
        out["latencies"].append(time.perf_counter() - start)
        if status != 200:
            out["problems"].append(f"client {seed} request {i}: HTTP {status} {text[:200]}")
            continue
        rows = json.loads(text)["predictions"]
        if len(rows) != len(values):
            out["problems"].append(f"client {seed} request {i}: {len(rows)} rows for {len(values)}")
            continue
        for k, row in zip(picks, rows, strict=True):
            problem = _check_row(k, row, refs)
            if problem:
                out["problems"].append(f"client {seed} request {i}: {problem}")
            out["good" if k < _POOL else "bad"] += 1
    return out


def _check_row(k: int, row: dict, refs: list[dict]) -> str:
    if k >= _POOL:
        code = BAD_CODES[k - _POOL]
        return "" if row["error"] == code else f"bad row got {row['error']!r}, not {code!r}"
    if row["error"]:
        return f"good image {k} got {row['error']!r}"
    ref = refs[k]
    if row["label"] != ref["label"]:
        return f"good image {k} labelled {row['label']!r}, alone {ref['label']!r}"
    worst = max(abs(float(row[name]) - float(ref[name])) for name in ref if name != "label")
    return "" if worst <= _PROB_ATOL else f"good image {k}: probabilities differ by {worst:.2e}"


# ------------------------------------------------------------------------------ the load


def _tree_status(pid: int) -> dict[int, dict[str, float]]:
    """VmRSS / VmHWM (MB) of ``pid`` and its descendants."""
    out: dict[int, dict[str, float]] = {}
    todo = [pid]
    while todo:
        current = todo.pop()
        try:
            text = Path(f"/proc/{current}/status").read_text()
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
        out[current] = {
            key: float(fields[key].split()[0]) / 1024.0
            for key in ("VmRSS", "VmHWM")
            if key in fields
        }
        todo.extend(int(c) for c in children)
    return out


def run_load(url: str, server_pid: int, clients: int = 2, n_requests: int = 200) -> LoadReport:
    """Run ``clients`` client processes of ``n_requests`` requests against ``url``, pinging and
    sampling the memory of the processes under ``server_pid`` meanwhile."""
    report = LoadReport()
    refs = references(url, good_pool())
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            status = ping(url)
            report.pings += 1
            if status != 200:
                report.problems.append(f"/ping answered {status or 'nothing'}")
            tree = _tree_status(server_pid)
            report.max_rss_mb = max(
                report.max_rss_mb, sum(p.get("VmRSS", 0) for p in tree.values())
            )
            report.worker_hwm_mb = max(
                [report.worker_hwm_mb, *(p.get("VmHWM", 0) for p in tree.values())]
            )
            stop.wait(0.2)

    watcher = threading.Thread(target=watch, daemon=True)
    with tempfile.TemporaryDirectory() as tmp:
        refs_file = Path(tmp) / "refs.json"
        refs_file.write_text(json.dumps(refs))
        cmd = [sys.executable, str(Path(__file__).resolve()), "client", "--url", url]
        watcher.start()
        procs = [
            subprocess.Popen(
                [*cmd, "--requests", str(n_requests), "--seed", str(k), "--refs", str(refs_file)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for k in range(clients)
        ]
        results = [p.communicate() for p in procs]
        stop.set()
        watcher.join()
    for proc, (stdout, stderr) in zip(procs, results, strict=True):
        if proc.returncode != 0:
            report.problems.append(f"a client exited with {proc.returncode}: {stderr[-500:]}")
            continue
        got = json.loads(stdout.strip().splitlines()[-1])
        report.latencies += got["latencies"]
        report.requests += len(got["latencies"])
        report.good_rows += got["good"]
        report.bad_rows += got["bad"]
        report.problems += got["problems"]
    if ping(url) != 200:
        report.problems.append("/ping failed after the load")
    return report


# ------------------------------------------------------------------------------ the server


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _logged_model(root: Path, uri: str) -> str:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from facelens.serving.log_model import log_pyfunc_model
    from facelens.tracking.runs import configure, tracked_run
    from serving_memory import export_tiny

    os.environ["MLFLOW_TRACKING_URI"] = uri
    configure(None, "serving-load", artifact_location=str(root / "artifacts"))
    with tracked_run("train"):
        info = log_pyfunc_model(export_tiny(root))
    return info.model_uri


def serve(root: Path, timeout_s: float = 180.0) -> tuple[subprocess.Popen, str]:
    """Log a tiny model under ``root`` and start ``mlflow models serve`` for it; (process,
    base URL) once ``/ping`` answers."""
    uri = f"sqlite:///{root / 'mlflow.db'}"
    model_uri = _logged_model(root, uri)
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": bin_dir + os.pathsep + os.environ.get("PATH", "")}
    env["MLFLOW_TRACKING_URI"] = uri
    port = _free_port()
    cmd = [str(Path(bin_dir) / "mlflow"), "models", "serve", "-m", model_uri]
    cmd += ["--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)]
    log = (root / "server.log").open("wb")
    proc = subprocess.Popen(
        cmd, env=env, cwd=root, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout_s
    while ping(url, timeout=2.0) != 200:
        if proc.poll() is not None or time.monotonic() > deadline:
            stop_server(proc)
            raise RuntimeError(
                f"the server did not start:\n{(root / 'server.log').read_text()[-2000:]}"
            )
        time.sleep(0.5)
    return proc, url


def stop_server(proc: subprocess.Popen) -> None:
    """End the server's session group (the CLI starts uvicorn as a child)."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command")
    one = sub.add_parser("client", help="one client process (run by run_load)")
    one.add_argument("--url", required=True)
    one.add_argument("--requests", type=int, required=True)
    one.add_argument("--seed", type=int, required=True)
    one.add_argument("--refs", type=Path, required=True)
    parser.add_argument("--clients", type=int, default=2)
    parser.add_argument("--requests", type=int, default=200)
    args = parser.parse_args(argv)
    if args.command == "client":
        refs = json.loads(args.refs.read_text())
        print(json.dumps(client(args.url, args.requests, args.seed, refs)))
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        proc, url = serve(Path(tmp))
        try:
            idle = sum(p.get("VmRSS", 0) for p in _tree_status(proc.pid).values())
            start = time.perf_counter()
            report = run_load(url, proc.pid, args.clients, args.requests)
            wall = time.perf_counter() - start
        finally:
            stop_server(proc)
    print(
        f"{args.clients} clients x {args.requests} requests ({report.requests} answered, "
        f"{report.good_rows} good and {report.bad_rows} bad rows) in {wall:.1f} s; "
        f"{report.pings} pings"
    )
    print(
        f"latency p50 {report.percentile(0.5) * 1000:.1f} ms, p99 "
        f"{report.percentile(0.99) * 1000:.1f} ms, mean {statistics.mean(report.latencies) * 1000:.1f} ms"
    )
    print(
        f"server resident memory: idle {idle:.0f} MB, max {report.max_rss_mb:.0f} MB (all its "
        f"processes, sampled every 0.2 s); worker peak VmHWM {report.worker_hwm_mb:.0f} MB"
    )
    print(f"discrepancies: {len(report.problems)}")
    for line in report.problems[:20]:
        print("  " + line)
    return 1 if report.problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
