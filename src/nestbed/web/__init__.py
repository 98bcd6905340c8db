"""The web view (`nestbed web NAME`): an aiohttp server on 127.0.0.1 behind a per-run token, the page, its SSE feed
of counters and events, and link control. Controller only: cluster/bundle.py leaves this package out of what goes
to hosts. The browser libraries come from npm (package.json, package-lock.json here; `./run` runs `npm ci`) into
node_modules/ here, and are served from it through assets.py's allowlist."""
