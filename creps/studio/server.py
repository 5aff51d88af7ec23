"""Running the studio: uvicorn on one port, the address printed once it listens."""

from __future__ import annotations

import socket

import torch

from creps.errors import UserError
from creps.studio.app import Studio, create_app
from creps.studio.paths import Sources


def address(host: str, port: int) -> str:
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    return f"http://[{shown}]:{port}/" if ":" in shown else f"http://{shown}:{port}/"


def serve(sources: Sources, device: torch.device, host: str = "127.0.0.1", port: int = 8000,
          cache_size: int = 3) -> None:
    """Serve until interrupted (Ctrl-C) or terminated: uvicorn then shuts down in order (a render in
    progress stops at its next piece) and, as servers do, ends by the signal it received."""
    import uvicorn

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as err:
        sock.close()
        raise UserError(f"cannot listen on {host}:{port} ({err.strerror}); choose another --port or --host") from None
    port = sock.getsockname()[1]
    studio = Studio(sources, device, cache_size=cache_size)
    served = ", ".join(s.given for s in sources)
    print(f"creps studio: serving {served} (rendering on {device})", flush=True)
    print(f"open {address(host, port)}  (Ctrl-C stops it)", flush=True)
    class Server(uvicorn.Server):
        def handle_exit(self, sig, frame) -> None:
            studio.worker.stop()  # a render in progress ends at its next piece, so shutting down is quick
            super().handle_exit(sig, frame)

    config = uvicorn.Config(create_app(studio), log_level="warning", access_log=False, timeout_graceful_shutdown=5)
    try:
        Server(config).run(sockets=[sock])
    finally:
        studio.close()
