"""The web view: an aiohttp server on 127.0.0.1 (token per run) showing a running experiment."""
