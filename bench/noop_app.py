"""The baseline: a no-op FastAPI POST endpoint served with the gateway's uvicorn settings."""

import os
from pathlib import Path

import uvicorn
from fastapi import FastAPI, Request, Response

from hookrun.dev.kafka_net import free_port
from hookrun.dev.procs import ServiceProcess

app = FastAPI()


@app.post("/noop")
async def noop(request: Request) -> Response:
    await request.body()
    return Response(b'{"ok":true}', 202, media_type="application/json")


@app.get("/healthz")
async def healthz() -> dict[str, bool]:
    return {"ok": True}


def noop_process(log_dir: Path) -> tuple[ServiceProcess, int]:
    """The baseline server as a process (not started) and its port; POST /noop answers 202."""
    port = free_port()
    proc = ServiceProcess(
        "bench-noop",
        "bench.noop_app",
        {"PORT": str(port)},
        log_dir,
        health_url=f"http://127.0.0.1:{port}/healthz",
    )
    return proc, port


if __name__ == "__main__":
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=int(os.environ["PORT"]),
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
    )
