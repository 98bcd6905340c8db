"""`nestbed web NAME [--port P]`: serve the experiment's web view on 127.0.0.1 until Ctrl-C (nestbed.web)."""
from __future__ import annotations

from typing import Any

import typer


def register(app: typer.Typer, out: Any, err: Any) -> None:
    @app.command()
    def web(name: str = typer.Argument(..., help="experiment"),
            port: int = typer.Option(0, "--port", min=0, max=65535, help="port on 127.0.0.1 (default 0: a free "
                                                                         "one)")) -> None:
        """Serve a running experiment's web view on 127.0.0.1; prints the URL with this run's token."""
        from nestbed.errors import PreflightError
        try:
            from nestbed.web.server import serve
        except ImportError as error:          # a nestbed installed without its web dependencies
            raise PreflightError(f"nestbed web needs {error.name or 'aiohttp'}: pip install aiohttp") from None

        def say(url: str) -> None:
            print(url, flush=True)            # the first line: a script (or a test) reads the URL from it
            err.print(f"serving {name}'s web view on 127.0.0.1 only; Ctrl-C stops", highlight=False)
        serve(name, port, say)
