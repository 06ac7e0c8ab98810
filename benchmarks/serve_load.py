"""Load test of `infofusion serve` on loopback, and the Predictor's offline throughput.

Trains a small model on the embedded synthetic data (or takes ``--run DIR``), starts ``infofusion serve``
on 127.0.0.1 on a free port in a subprocess, and sends a bounded number of requests with httpx from
``--concurrency`` threads (loopback only; every scenario also stops at ``--time-cap`` seconds):

- ``/predict``, 1-utterance dialogues;
- ``/predict``, 10-utterance dialogues;
- session utterances: one utterance per request; each worker's session restarts after 10 utterances,
  so a request carries 1 to 10 utterances of context (a dialogue model re-reads the history);
- one long session: ``--session-turns`` (1,000) utterances, one per request, from one client; latency of
  its first and last 50 turns (a turn sees at most ``--session-context`` earlier utterances, so the two
  should match), and the server's RSS before the load, after the session and after its DELETE.

Prints requests/s and p50/p95/p99 latency per scenario, then the Predictor's offline throughput in
utterances/s: batched (``--batch-size`` dialogues per forward pass) against one dialogue per call. The
server is stopped at the end, also on errors or Ctrl-C.

    python benchmarks/serve_load.py                       # bc_lstm, 200 requests, 4 workers
    python benchmarks/serve_load.py --run runs/mmmie --requests 500 --concurrency 8
"""

from __future__ import annotations

import argparse
import gc
import itertools
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

HOST = "127.0.0.1"  # loopback only: nothing leaves the machine
CONTEXT = 10  # utterances per session before it restarts, and per long /predict dialogue


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--run", default=None, help="a finished run folder (default: train a small one)")
    parser.add_argument("--model", default="bc_lstm", help="model to train when --run is not given")
    parser.add_argument("--requests", type=int, default=200, help="requests per scenario")
    parser.add_argument("--concurrency", type=int, default=4, help="client threads")
    parser.add_argument("--time-cap", type=float, default=60.0, help="seconds per scenario at most")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads of the server and the predictor"
    )
    parser.add_argument("--batch-size", type=int, default=32, help="offline batched throughput: batch size")
    parser.add_argument("--startup-timeout", type=float, default=120.0)
    parser.add_argument("--session-turns", type=int, default=1000, help="utterances of the long session")
    return parser.parse_args(argv)


def rss_mib(pid: int) -> float:
    """Resident memory of process ``pid`` (Linux /proc), MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def percentiles(latencies: list[float]) -> dict[str, float]:
    done = np.array(latencies) * 1000.0
    return {f"p{q}": float(np.percentile(done, q)) if done.size else float("nan") for q in (50, 95, 99)}


def long_session(base: str, stream: list[dict], turns: int, time_cap: float) -> dict:
    """One session of ``turns`` utterances, one per request; per-turn latencies and the status codes."""
    import httpx

    latencies, codes = [], []
    deadline = time.monotonic() + time_cap
    with httpx.Client(base_url=base, timeout=60.0) as client:
        for turn in range(turns):
            if time.monotonic() > deadline:
                break
            started = time.perf_counter()
            response = client.post(
                "/sessions/long/utterances", json={"utterances": [stream[turn % len(stream)]]}
            )
            latencies.append(time.perf_counter() - started)
            codes.append(response.status_code)
    return {"latencies": latencies, "errors": sum(code != 200 for code in codes)}


def delete_session(base: str, name: str) -> int:
    import httpx

    return httpx.delete(f"{base}/sessions/{name}", timeout=30.0).status_code


# -- setup ------------------------------------------------------------------------------------------------
def train_small(model: str, folder: Path, threads: int) -> Path:
    from infofusion.config import resolve_config
    from infofusion.training.build import trainer_for_config

    settings = [
        "train.epochs=2",
        f"train.threads={threads}",
        "data.dialogues={train: 40, valid: 10, test: 30}",
    ]
    config = resolve_config(model, None, settings)
    trainer_for_config(config, folder, echo=lambda _: None).fit()
    return folder


def request_dialogues(predictor) -> list:
    """The synthetic data the run's config describes (its own generator, so dims match)."""
    from infofusion.data import load_dataset

    options = dict(predictor.config["data"])
    if options.get("spec") != "synthetic":
        raise SystemExit(
            "serve_load.py makes requests from synthetic data: give a run trained on 'synthetic'"
        )
    dataset = load_dataset("synthetic", options)
    return [d for split in ("test", "valid", "train") for d in dataset.splits.get(split, [])]


def utterance_json(utterance, modalities: list[str]) -> dict:
    return {
        "speaker": utterance.speaker,
        "features": {m: utterance.features[m].tolist() for m in modalities},
    }


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


def start_server(run: Path, port: int, threads: int, timeout: float) -> subprocess.Popen:
    import httpx

    command = [sys.executable, "-m", "infofusion", "serve", str(run), "--host", HOST, "--port", str(port)]
    command += ["--threads", str(threads), "--log-level", "warning", "--max-sessions", "10000"]
    environment = dict(os.environ, OMP_NUM_THREADS=str(threads))
    server = subprocess.Popen(command, env=environment)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"the server exited with code {server.returncode} before answering")
        try:
            if httpx.get(f"http://{HOST}:{port}/health", timeout=2.0).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    stop_server(server)
    raise SystemExit(f"the server did not answer /health within {timeout:g} s")


def stop_server(server: subprocess.Popen) -> None:
    if server.poll() is None:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=15)


# -- load -----------------------------------------------------------------------------------------------
def run_load(
    base: str, send: Callable[[object, int], object], requests: int, concurrency: int, time_cap: float
) -> dict:
    """``send(client, number)`` ``requests`` times from ``concurrency`` threads; latencies in seconds."""
    import httpx

    counter = itertools.count()
    lock = threading.Lock()
    latencies: list[float] = []
    errors: list[str] = []
    deadline = time.monotonic() + time_cap

    def worker(_: int) -> None:
        with httpx.Client(base_url=base, timeout=60.0) as client:
            while time.monotonic() < deadline:
                with lock:
                    number = next(counter)
                if number >= requests:
                    return
                started = time.perf_counter()
                try:
                    response = send(client, number)
                    ok = response.status_code == 200
                    problem = "" if ok else f"{response.status_code}: {response.text[:200]}"
                except httpx.HTTPError as error:
                    ok, problem = False, f"{type(error).__name__}: {error}"
                elapsed = time.perf_counter() - started
                with lock:
                    (latencies.append(elapsed) if ok else errors.append(problem))

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        list(pool.map(worker, range(concurrency)))
    wall = time.perf_counter() - started
    done = np.array(latencies) * 1000.0
    return {
        "requests": len(latencies),
        "errors": len(errors),
        "first_error": errors[0] if errors else "",
        "rps": len(latencies) / wall if wall > 0 else 0.0,
        "p50": float(np.percentile(done, 50)) if done.size else float("nan"),
        "p95": float(np.percentile(done, 95)) if done.size else float("nan"),
        "p99": float(np.percentile(done, 99)) if done.size else float("nan"),
        "capped": time.monotonic() >= deadline,
    }


def offline_throughput(predictor, dialogues: list, batch_size: int, time_cap: float) -> dict[str, float]:
    """Utterances per second of ``Predictor.predict``: batched, and one dialogue per call."""
    utterances = sum(len(d) for d in dialogues)
    predictor.predict(dialogues[:2])  # warm-up
    rates = {}
    for name, size, per_call in (("batched", batch_size, False), ("one dialogue per call", 1, True)):
        started = time.perf_counter()
        done = 0
        if per_call:
            for dialogue in dialogues:
                predictor.predict([dialogue], batch_size=1)
                done += len(dialogue)
                if time.perf_counter() - started > time_cap:
                    break
        else:
            predictor.predict(dialogues, batch_size=size)
            done = utterances
        rates[name] = done / (time.perf_counter() - started)
    return rates


def main(argv: list[str] | None = None) -> int:
    args = parse_arguments(argv)
    import torch

    torch.set_num_threads(args.threads)
    from infofusion.inference import Predictor

    with tempfile.TemporaryDirectory(prefix="serve-load-") as scratch:
        if args.run is None:
            print(f"training a small {args.model} on synthetic data ...", flush=True)
            run = train_small(args.model, Path(scratch) / args.model, args.threads)
        else:
            run = Path(args.run)
        predictor = Predictor.from_run(run)
        dialogues = request_dialogues(predictor)
        modalities = predictor.info.modalities
        singles = [[utterance_json(u, modalities)] for d in dialogues for u in d.utterances]
        longs = [
            [utterance_json(u, modalities) for u in d.utterances[:CONTEXT]]
            for d in dialogues
            if len(d) >= CONTEXT
        ]
        stream = [utterance_json(u, modalities) for d in dialogues for u in d.utterances]

        def predict_one(client, number: int):
            return client.post("/predict", json={"utterances": singles[number % len(singles)]})

        def predict_long(client, number: int):
            return client.post("/predict", json={"utterances": longs[number % len(longs)]})

        sessions: dict[int, tuple[str, int]] = {}
        session_lock = threading.Lock()

        def session_utterance(client, number: int):
            # One session per worker thread, restarted every CONTEXT utterances.
            worker = threading.get_ident()
            finished = None
            with session_lock:
                name, count = sessions.get(worker, (f"w{worker}-0", 0))
                if count == CONTEXT:
                    finished, name, count = name, f"w{worker}-{number}", 0
                sessions[worker] = (name, count + 1)
            if finished is not None:
                client.delete(f"/sessions/{finished}")  # part of the measured request: a client's real cost
            return client.post(
                f"/sessions/{name}/utterances", json={"utterances": [stream[number % len(stream)]]}
            )

        # This process holds torch and the predictor too: without this its own full garbage collections
        # (~80 ms) stall all client threads at once and show up as server latency at p99.
        gc.collect()
        gc.freeze()
        port = free_port()
        base = f"http://{HOST}:{port}"
        print(f"serving {run} ({predictor.model_name}) on {base} ...", flush=True)
        server = start_server(run, port, args.threads, args.startup_timeout)
        results = {}
        memory: dict[str, float] = {}
        try:
            memory["before the load"] = rss_mib(server.pid)
            run_load(base, predict_one, 10, 1, 30.0)  # warm-up, not measured
            scenarios = (
                ("/predict, 1 utterance", predict_one),
                (f"/predict, {CONTEXT} utterances", predict_long),
                (f"session utterance (1-{CONTEXT} of context)", session_utterance),
            )
            for name, send in scenarios:
                results[name] = run_load(base, send, args.requests, args.concurrency, args.time_cap)
            memory["after the load"] = rss_mib(server.pid)
            session = long_session(base, stream, args.session_turns, args.time_cap * 5)
            memory[f"after a {len(session['latencies'])}-turn session"] = rss_mib(server.pid)
            delete_session(base, "long")
            memory["after its DELETE"] = rss_mib(server.pid)
        finally:
            stop_server(server)
        offline = offline_throughput(predictor, dialogues, args.batch_size, args.time_cap)

    utterances = sum(len(d) for d in dialogues)
    print(
        f"\n{predictor.model_name} ({predictor.info.task}, {len(modalities)} modalities), {args.concurrency} "
        f"client threads, server torch threads {args.threads}, loopback\n"
    )
    print("| scenario | requests | errors | requests/s | p50 ms | p95 ms | p99 ms |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name, row in results.items():
        capped = " (time cap)" if row["capped"] else ""
        print(
            f"| {name} | {row['requests']}{capped} | {row['errors']} | {row['rps']:.1f} | {row['p50']:.1f} | "
            f"{row['p95']:.1f} | {row['p99']:.1f} |"
        )
    turns = session["latencies"]
    for label, part in (("first 50", turns[:50]), ("last 50", turns[-50:]), ("all", turns)):
        row, rate = percentiles(part), len(part) / max(sum(part), 1e-9)
        print(
            f"| long session, {label} turns of {len(turns)} | {len(part)} | {session['errors']} "
            f"| {rate:.1f} | "
            f"{row['p50']:.1f} | {row['p95']:.1f} | {row['p99']:.1f} |"
        )
    print("\n| server RSS | MiB |\n| --- | --- |")
    for label, value in memory.items():
        print(f"| {label} | {value:.1f} |")
    for name, row in results.items():
        if row["first_error"]:
            print(f"first error in '{name}': {row['first_error']}")
    print(f"\nPredictor offline, {len(dialogues)} dialogues / {utterances} utterances:\n")
    print("| mode | utterances/s |")
    print("| --- | --- |")
    for name, rate in offline.items():
        unit = "utterances" if predictor.utterance_level else "dialogues"
        label = f"batched ({args.batch_size} {unit} per pass)" if name == "batched" else name
        print(f"| {label} | {rate:.0f} |")
    return 1 if any(row["errors"] for row in results.values()) or session["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
