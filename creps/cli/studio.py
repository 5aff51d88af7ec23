"""`creps studio [PATH ...]`: explore networks and watch training runs in the browser."""

from __future__ import annotations

import os
import sys
from typing import Optional, Sequence

from creps.cli.common import Parser, run_cli
from creps.errors import UserError

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


def build_parser(prog: str = "creps studio"):
    p = Parser(prog=prog, description="Explore networks and watch training runs in the browser: a local web "
                                      "server that renders through creps and reads run directories.",
               epilog="example: creps studio ~/training-runs   (then open the address it prints; from another "
                      "machine: ssh -L 8000:localhost:8000 HOST, and open http://localhost:8000)")
    p.add_argument("paths", nargs="*", metavar="PATH",
                   help="run directories, folders of runs, network snapshots or published .pkl files, by path "
                        "or URL, and projected_w.npz files (default: the current folder)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default: 127.0.0.1, this machine only; 0.0.0.0 for every "
                        "interface, which lets anyone who reaches this machine see your runs)")
    p.add_argument("--port", type=int, default=8000, help="port to listen on (default: 8000; 0 picks a free one)")
    p.add_argument("--device", default=None, help="cuda, cpu, cuda:1 ... (default: cuda if present)")
    p.add_argument("--cache", type=int, default=3, metavar="N", help="networks kept loaded (default: 3)")
    return p


def require_extra() -> None:
    try:
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        raise UserError('the studio needs Starlette and uvicorn: pip install -e ".[studio]"') from None


def studio(argv: Optional[Sequence[str]] = None, prog: str = "creps studio") -> int:
    def body() -> int:
        args = build_parser(prog).parse_args(argv)
        if not 0 <= args.port <= 65535:
            raise UserError(f"--port={args.port}: choose a port from 1 to 65535 (or 0 for a free one)")
        if args.cache < 1:
            raise UserError("--cache: keep at least 1 network loaded")
        require_extra()
        import torch

        from creps.studio.paths import Sources
        from creps.studio.server import serve

        sources = Sources(args.paths or [os.getcwd()])
        try:
            device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        except RuntimeError as err:
            raise UserError(f"--device={args.device}: {err}") from None
        if device.type == "cuda" and not torch.cuda.is_available():
            raise UserError(f"--device={args.device}: no CUDA device here; use --device=cpu")
        if args.host not in LOCAL_HOSTS:
            print(f"warning: listening on {args.host}: anyone who can reach this machine on port {args.port} can "
                  "see your runs and render with its GPU; on a shared server prefer the default (127.0.0.1) "
                  "and ssh -L", file=sys.stderr)
        serve(sources, device, host=args.host, port=args.port, cache_size=args.cache)
        return 0

    return run_cli(body)


def main(argv: Optional[Sequence[str]] = None) -> int:
    return studio(argv)
