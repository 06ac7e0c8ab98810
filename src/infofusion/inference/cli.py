"""The inference commands of ``infofusion``: ``serve`` (HTTP) and ``export`` (ONNX).

The main CLI calls :func:`add_inference_parsers` with its subparsers object; each command sets ``handler``
(a function of the parsed arguments returning an exit code). Building the parsers imports nothing heavy:
torch, the Predictor and the serving libraries load when a command runs.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..workflow.cli import _at_least_one


def command_serve(args: argparse.Namespace) -> int:
    """Serve a run over HTTP (FastAPI under uvicorn) until interrupted."""
    from ..extras import require_extra

    require_extra("serve", "infofusion serve")  # one line naming the extra, not an ImportError
    from . import Predictor
    from .http import ServiceLimits, create_app, listening_socket, serve

    # Every limit is checked first (one line naming the flag), then the port, then the model loads.
    limits = ServiceLimits(
        max_utterances=args.max_utterances,
        max_text_chars=args.max_text_chars,
        max_body_bytes=args.max_body_bytes,
        session_ttl=args.session_ttl,
        max_sessions=args.max_sessions,
        max_session_utterances=args.max_session_utterances,
        session_context=args.session_context,
        request_timeout=args.request_timeout,
        max_session_bytes=args.max_session_bytes,
    )
    sockets = [listening_socket(args.host, args.port)]  # a busy or bad port fails before the model loads
    predictor = Predictor.from_run(args.run_dir, batch_size=args.batch_size, threads=args.threads)
    serve(create_app(predictor, limits), sockets, limits, log_level=args.log_level)
    return 0


def command_export(args: argparse.Namespace) -> int:
    from .onnx import export_onnx

    result = export_onnx(Path(args.run_dir), Path(args.output) if args.output else None, opset=args.opset)
    print(json.dumps(result.summary()))
    return 0


def _port(text: str) -> int:
    if not text.strip().isdigit() or not 0 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port number from 0 to 65535, got {text!r}")
    return int(text)


def _add_serve(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("serve", help="serve a run over HTTP: /predict, /sessions, /health")
    parser.add_argument("run_dir", help="run folder written by `infofusion train`")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=_port, default=8000, help="port to listen on (0: any free one)")
    parser.add_argument("--max-utterances", type=int, default=200, help="utterances per request")
    parser.add_argument("--max-text-chars", type=int, default=2000, help="characters per transcript")
    parser.add_argument("--max-body-bytes", type=int, default=8 * 1024 * 1024, help="request body size")
    parser.add_argument(
        "--session-ttl", type=float, default=1800.0, help="seconds of inactivity before expiry"
    )
    parser.add_argument("--max-sessions", type=int, default=1000, help="open sessions at most")
    parser.add_argument("--max-session-utterances", type=int, default=1000, help="utterances per session")
    parser.add_argument(
        "--max-session-bytes",
        type=int,
        default=256 * 1024 * 1024,
        help="bytes all sessions together may hold (256 MiB; docs/serving.md)",
    )
    parser.add_argument("--batch-size", type=int, default=32, help="dialogues (utterances) per forward pass")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument(
        "--session-context",
        type=_at_least_one,
        default=64,
        help="earlier utterances of a session a new turn is predicted with (bounds a turn's cost)",
    )
    parser.add_argument(
        "--request-timeout", type=float, default=10.0, help="seconds to receive a request's headers and body"
    )
    parser.add_argument(
        "--log-level",
        default="info",
        choices=("critical", "error", "warning", "info", "debug"),
        help="uvicorn's log level",
    )
    parser.set_defaults(handler=command_serve)


def _add_export(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("export", help="export a run's model (ONNX) with a JSON sidecar")
    parser.add_argument("run_dir", help="run folder written by `infofusion train`")
    parser.add_argument("--format", default="onnx", choices=("onnx",), help="model format")
    parser.add_argument("--output", default=None, help="model file (default: RUN/model.onnx)")
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset version")
    parser.set_defaults(handler=command_export)


def add_inference_parsers(commands: argparse._SubParsersAction) -> None:
    _add_serve(commands)
    _add_export(commands)
