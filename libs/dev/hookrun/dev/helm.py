"""The helm binary the chart's tests use, built once from the Go module proxy into the cache.

``python -m hookrun.dev.helm install`` (``make setup-helm``) runs ``go install`` of
``helm.sh/helm/v4/cmd/helm`` at :data:`HELM_VERSION` into ``<cache>/helm-<version>/``
(``HOOKRUN_CACHE_DIR`` or ~/.cache/hookrun, shared by every clone), and prints its path.
No release download site is reachable here: the module proxy is how helm gets installed.
"""

from __future__ import annotations

import argparse
import logging
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from hookrun.dev.kafka_dist import cache_dir

log = logging.getLogger("hookrun.dev.helm")

HELM_VERSION = "v4.3.2"
HELM_MODULE = "helm.sh/helm/v4/cmd/helm"
#: Where Go is when it is not on PATH (the official archive's place).
GO_FALLBACK = Path("/usr/local/go/bin/go")


class HelmError(RuntimeError):
    """helm cannot be had: Go is missing or ``go install`` failed."""


def helm_binary(version: str = HELM_VERSION) -> Path:
    """The cached helm of ``version`` (it may not be built yet)."""
    return cache_dir() / f"helm-{version}" / "helm"


def go_binary() -> Path | None:
    """The go command: on PATH, else the official archive's place, else None."""
    found = shutil.which("go")
    if found is not None:
        return Path(found)
    return GO_FALLBACK if GO_FALLBACK.exists() else None


def install(version: str = HELM_VERSION) -> Path:
    """Build helm ``version`` into the cache unless it is there; return its path.

    Raises HelmError when Go is missing or the build fails (with the end of Go's output).
    """
    target = helm_binary(version)
    if target.exists():
        return target
    go = go_binary()
    if go is None:
        raise HelmError(
            f"Go is not on PATH (nor at {GO_FALLBACK}): it is needed once to build helm"
        )
    target.parent.parent.mkdir(parents=True, exist_ok=True)
    # Build into a private folder and rename it at the end, so an interrupted or concurrent
    # build never leaves a half-written binary that a later run would take for helm.
    tmp = target.parent.parent / f".{target.parent.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}"
    tmp.mkdir()
    try:
        # GOTOOLCHAIN=local: build with the Go that is here, never fetch another toolchain.
        env = {**os.environ, "GOBIN": str(tmp), "GOTOOLCHAIN": "local"}
        log.info("building helm %s with %s into %s (once)", version, go, target.parent)
        started = time.monotonic()
        result = subprocess.run(
            [str(go), "install", f"{HELM_MODULE}@{version}"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        if result.returncode != 0:
            tail = "\n".join(result.stdout.splitlines()[-30:])
            raise HelmError(f"go install {HELM_MODULE}@{version} failed:\n{tail}")
        log.info("built helm %s in %.0f s", version, time.monotonic() - started)
        try:
            tmp.rename(target.parent)
        except OSError:
            if not target.exists():  # not a concurrent build that won the rename
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; return the process exit code."""
    parser = argparse.ArgumentParser(
        prog="python -m hookrun.dev.helm",
        description=f"The helm {HELM_VERSION} the chart's tests use, built once into the cache.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("install", help="build helm with Go unless it is cached; print its path")
    sub.add_parser("path", help="print where the cached helm is (built or not)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="helm: %(message)s", stream=sys.stderr)
    if args.command == "path":
        print(helm_binary())
        return 0
    try:
        print(install())
    except HelmError as exc:
        log.error("%s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
