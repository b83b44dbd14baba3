"""The ingest baseline: a bare FastAPI endpoint that only parses JSON and answers 200.

Shaped like the webhook route was before issue 14 (a sync handler in the
threadpool, the body read by an async dependency; kept so ratios compare
across runs) and served on the same stack (``uvicorn.run`` in one process,
which picks httptools and uvloop as ``serve`` does, access log off), so the
ratio real / bare is the cost of what the service does: authentication,
validation, the durable outbox commit.

    python -m bench.bare --port 8001
"""

from __future__ import annotations

import argparse
import json
from typing import Annotated

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse


async def _body(request: Request) -> bytes:
    return await request.body()


def create_app() -> FastAPI:
    app = FastAPI()

    @app.post("/api/bookings/incoming")
    def incoming(body: Annotated[bytes, Depends(_body)]) -> JSONResponse:
        raw = json.loads(body)
        return JSONResponse({"success": True, "bookingId": raw.get("bookingId")})

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(
        create_app(),
        host="127.0.0.1",
        port=args.port,
        log_level="warning",
        access_log=False,
        log_config=None,
    )


if __name__ == "__main__":
    main()
