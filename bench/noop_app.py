"""The baseline: a no-op FastAPI POST endpoint served with the gateway's uvicorn settings."""

import os

import uvicorn
from fastapi import FastAPI, Request, Response

app = FastAPI()


@app.post("/noop")
async def noop(request: Request) -> Response:
    await request.body()
    return Response(b'{"ok":true}', 202, media_type="application/json")


@app.get("/healthz")
async def healthz() -> dict[str, bool]:
    return {"ok": True}


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
