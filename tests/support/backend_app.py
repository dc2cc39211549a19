"""A small HTTP app the proxy tests put behind proxies: `python backend_app.py [port]`.

Binds `$POD_IP` (default 127.0.0.1) on the given port (default 8080) and answers:
- `GET /` -> `hello from <POD_NAME>`;
- `POST /echo` -> the request body back (any size, chunked or not);
- `GET /status/<code>` -> that status;
- `GET /flaky/<key>` -> 503 the first time a key is seen by this process, 200 after;
- `GET /big?kib=N` -> N KiB streamed in chunks;
- `GET /slow?ms=N` -> waits N ms, then 200;
- `GET /headers` -> the request headers as JSON.
"""

import asyncio
import os
import sys

from aiohttp import web

seen: set[str] = set()
NAME = os.environ.get("POD_NAME", "backend")


async def hello(request: web.Request) -> web.Response:
    return web.Response(text=f"hello from {NAME}\n")


async def echo(request: web.Request) -> web.Response:
    return web.Response(body=await request.read())


async def status(request: web.Request) -> web.Response:
    return web.Response(status=int(request.match_info["code"]), text=f"status {request.match_info['code']}\n")


async def flaky(request: web.Request) -> web.Response:
    key = request.match_info["key"]
    if key not in seen:
        seen.add(key)
        return web.Response(status=503, text=f"{NAME} fails {key} once\n")
    return web.Response(text=f"{NAME} serves {key}\n")


async def big(request: web.Request) -> web.StreamResponse:
    kib = int(request.query.get("kib", "1024"))
    response = web.StreamResponse()
    response.enable_chunked_encoding()
    await response.prepare(request)
    for _ in range(kib):
        await response.write(b"x" * 1024)
    await response.write_eof()
    return response


async def slow(request: web.Request) -> web.Response:
    await asyncio.sleep(int(request.query.get("ms", "100")) / 1000)
    return web.Response(text="slow\n")


def make_app() -> web.Application:
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_get("/", hello)
    app.router.add_post("/echo", echo)
    app.router.add_get("/status/{code}", status)
    app.router.add_get("/flaky/{key}", flaky)
    app.router.add_get("/big", big)
    app.router.add_get("/slow", slow)
    app.router.add_get("/headers", headers)
    return app


async def headers(request: web.Request) -> web.Response:
    return web.json_response({k.lower(): v for k, v in request.headers.items()})


def main() -> None:
    app = make_app()
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 8080
    web.run_app(app, host=os.environ.get("POD_IP", "127.0.0.1"), port=port, print=None,
                access_log=None)


if __name__ == "__main__":
    main()
