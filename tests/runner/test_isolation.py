"""Execution isolation: the execution user, the bubblewrap wrapper and its reachability logic."""

from __future__ import annotations

import logging
import os
import shutil
import stat
import subprocess
from pathlib import Path

import orjson
import pytest

from hookrun.runner.isolation import (
    ExecutionUser,
    Isolation,
    IsolationError,
    build_isolation,
    probe,
    resolve_user,
)
from hookrun.runner.specs import ExecutionSpec
from hookrun.runner.workdirs import Workdirs

NOBODY = ExecutionUser("nobody", 65534, 65534)
BWRAP = shutil.which("bwrap")
SETPRIV = shutil.which("setpriv")
as_root_with_bwrap = pytest.mark.skipif(
    os.geteuid() != 0 or BWRAP is None or SETPRIV is None,
    reason="needs root, bwrap and setpriv (make setup-sandbox)",
)


def test_the_execution_user_is_nobody_for_a_root_runner_and_none_otherwise() -> None:
    assert resolve_user(None, 0) is not None and resolve_user(None, 0).uid != 0  # type: ignore[union-attr]
    assert resolve_user(None, 1000) is None
    assert resolve_user("", 0) is None
    assert resolve_user("root", 0) is None  # switching to root isolates nothing
    assert resolve_user("4242", 0) == ExecutionUser("4242", 4242, 4242)
    with pytest.raises(IsolationError, match="needs a runner running as root"):
        resolve_user("nobody", 1000)
    with pytest.raises(IsolationError, match="no such user"):
        resolve_user("no-such-user-here", 0)


def _options(argv: list[str]) -> list[tuple[str, str]]:
    """The mounts of a bwrap argv, in order: (option, path)."""
    found = []
    i = 0
    while i < len(argv) and argv[i] != "--":
        opt = argv[i]
        if opt in ("--ro-bind", "--bind"):
            found.append((opt, argv[i + 2]))
            i += 3
        elif opt in ("--tmpfs", "--dir", "--chdir", "--dev", "--proc", "--perms"):
            if opt != "--perms":
                found.append((opt, argv[i + 1]))
            i += 2
        else:
            i += 1
    return found


def _outermost_closed(path: Path) -> Path:
    """The outermost ancestor of ``path`` that others cannot traverse (pytest's 0700 base)."""
    for anc in reversed(path.parents):
        if not os.stat(anc).st_mode & stat.S_IXOTH:
            return anc
    raise AssertionError(f"every ancestor of {path} is open")


def test_the_wrapper_makes_closed_ancestors_reachable_and_hides_other_executions(
    tmp_path: Path,
) -> None:
    # As a CI checkout in a `mktemp -d` directory: a 0700 directory holds the config and the
    # data dir. /var/tmp plays /tmp, so the 0700 pytest directories count as closed ones.
    home = tmp_path / "home"
    (home / "repo" / "examples").mkdir(parents=True)
    home.chmod(0o700)
    data, cfg = home / "repo" / ".hookrun" / "data", home / "repo" / "examples"
    data.mkdir(parents=True)
    iso = Isolation(
        user=NOBODY,
        bwrap="/usr/bin/bwrap",
        setpriv="/usr/bin/setpriv",
        data_dir=data,
        config_dir=cfg,
        private_tmp="/var/tmp",
    )
    base = f"{data}/executions/ex-1"
    argv = iso.command(["python3", f"{cfg}/step.py"], base)
    options = _options(argv)
    closed = _outermost_closed(tmp_path)
    # the outermost closed ancestor gets an open tmpfs; below it, bwrap's mount points are
    # created open (it would make them 0700)
    assert ("--tmpfs", str(closed)) in options
    assert ("--dir", str(home)) in options and ("--dir", str(home / "repo")) in options
    assert ("--dir", str(data / "executions")) in options
    assert options[-2:] == [("--bind", base), ("--chdir", f"{base}/work")]
    assert ("--ro-bind", str(cfg)) in options and ("--tmpfs", str(data)) in options
    # a mount on a path comes after every mount on its ancestors
    paths = [Path(p) for opt, p in options if opt not in ("--chdir", "--dev", "--proc")]
    for i, path in enumerate(paths):
        assert not any(path in later.parents for later in paths[:i] if later != path), path
    tail = argv[argv.index("--") + 1 :]
    assert tail == [
        "/usr/bin/setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "--no-new-privs",
        "--",
        "python3",
        f"{cfg}/step.py",
    ]
    assert iso.unreachable == []


def test_a_config_dir_holding_the_data_dir_is_bound_before_the_data_dir_is_hidden(
    tmp_path: Path,
) -> None:
    # the tests' layout: hookrun.yaml and step.py in tmp_path, the data dir in tmp_path/data
    iso = Isolation(
        user=NOBODY, bwrap="/usr/bin/bwrap", setpriv="/usr/bin/setpriv",
        data_dir=tmp_path / "data", config_dir=tmp_path,
    )  # fmt: skip
    options = _options(iso.command(["true"], f"{tmp_path}/data/executions/ex-1"))
    order = [p for _, p in options]
    assert order.index(str(tmp_path)) < order.index(str(tmp_path / "data"))
    assert ("--ro-bind", str(tmp_path)) in options and (
        "--tmpfs",
        str(tmp_path / "data"),
    ) in options
    # pytest makes tmp_path 0700: steps could not read their files there, which is said at start
    assert iso.unreachable and str(tmp_path) in iso.unreachable[0]


def test_without_a_user_switch_or_sandbox_only_the_parent_death_wrapper_remains() -> None:
    iso = Isolation(setpriv="/usr/bin/setpriv")
    assert iso.command(["true"], "/x") == ["true"]
    assert not iso.wraps()
    assert iso.command(["true"], "/x", pdeathsig=True) == [
        "/usr/bin/setpriv", "--pdeathsig", "KILL", "--", "true",
    ]  # fmt: skip
    switched = Isolation(user=NOBODY, setpriv="/usr/bin/setpriv")
    argv = switched.command(["true"], "/x", pdeathsig=True)
    assert argv[0] == "/usr/bin/setpriv" and argv.count("/usr/bin/setpriv") == 1  # one exec
    assert "--pdeathsig" in argv and "--reuid=65534" in argv


def test_a_step_may_ask_for_no_network() -> None:
    iso = Isolation(user=NOBODY, bwrap="/usr/bin/bwrap", setpriv="/s", data_dir=Path("/d"))
    assert "--unshare-net" not in iso.command(["true"], "/d/executions/x")
    assert "--unshare-net" in iso.command(["true"], "/d/executions/x", network=False)


@as_root_with_bwrap
def test_the_wrapper_runs_a_step_from_a_closed_checkout_as_nobody(tmp_path: Path) -> None:
    home = tmp_path / "home"
    cfg = home / "repo" / "examples"
    cfg.mkdir(parents=True)
    home.chmod(0o700)
    (cfg / "step.py").write_text(
        "import json, os\n"
        "json.dump({'uid': os.getuid(), 'cwd': os.getcwd(),"
        " 'seen': os.listdir(os.path.dirname(os.path.dirname(os.getcwd())))},"
        " open(os.environ['HOOKRUN_OUTPUT'], 'w'))\n"
    )
    data = home / "repo" / ".hookrun" / "data"
    (data / "executions" / "other").mkdir(parents=True)
    iso = Isolation(
        user=NOBODY, bwrap=BWRAP, setpriv=SETPRIV, data_dir=data, config_dir=cfg,
        private_tmp="/var/tmp",
    )  # fmt: skip
    assert probe(iso, data, os.environ) is None
    workdirs = Workdirs(data, max_output_bytes=4096, max_json_depth=8, owner=iso.owner)
    spec = _spec(["python3", f"{cfg}/step.py"])
    base, env = workdirs.prepare(spec, {})
    done = subprocess.run(
        iso.command(spec.argv, base), cwd=f"{base}/work", env=env, capture_output=True, check=False
    )
    assert done.returncode == 0, done.stderr
    output = orjson.loads(Path(f"{base}/output.json").read_bytes())
    assert output == {"uid": 65534, "cwd": f"{base}/work", "seen": ["ex-1"]}


def test_defaults_degrade_with_a_warning_and_explicit_settings_refuse_to_start(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    closed = tmp_path / "closed"
    closed.mkdir(mode=0o700)
    bin_ = tmp_path / "bin"  # setpriv, and no bwrap
    bin_.mkdir()
    if SETPRIV is not None:
        (bin_ / "setpriv").symlink_to(SETPRIV)
    no_bwrap = {"PATH": str(bin_)}
    caplog.set_level(logging.WARNING)
    with pytest.raises(IsolationError, match="HOOKRUN_EXECUTION_SANDBOX=bwrap, but bwrap"):
        build_isolation(
            user=None, sandbox="bwrap", data_dir=closed / "data", config_dir=None, environ=no_bwrap
        )
    iso = build_isolation(
        user=None, sandbox="auto", data_dir=closed / "data", config_dir=None, environ=no_bwrap
    )
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert iso.bwrap is None
    assert any(
        "without a sandbox: bwrap (Debian: bubblewrap) is not on PATH" in w for w in warnings
    )
    if os.geteuid() == 0 and SETPRIV is not None:
        # nobody cannot reach the data dir without a sandbox: not switched, and said so
        assert iso.user is None
        first_closed = str(_outermost_closed(closed / "data"))
        assert any("not nobody" in w and f"reach {first_closed} (mode" in w for w in warnings)
        with pytest.raises(IsolationError, match="HOOKRUN_EXECUTION_USER=nobody: nobody cannot"):
            build_isolation(
                user="nobody", sandbox="none", data_dir=closed / "data", config_dir=None,
                environ=no_bwrap,
            )  # fmt: skip


def test_an_output_or_a_parents_file_that_is_a_symlink_is_not_followed(tmp_path: Path) -> None:
    secret = tmp_path / "secret.json"
    secret.write_text('{"token": "s3cret"}')
    secret.chmod(0o600)
    workdirs = Workdirs(tmp_path, max_output_bytes=4096, max_json_depth=8)
    parent = tmp_path / "parent-outputs"
    parent.mkdir()
    (parent / "kept.txt").write_text("kept")
    (parent / "link.txt").symlink_to(secret)
    os.mkfifo(parent / "fifo")
    spec = _spec(["true"], input_dirs=[parent])
    base, _ = workdirs.prepare(spec, {})
    assert sorted(os.listdir(f"{base}/inputs")) == ["kept.txt", "payload"]
    Path(f"{base}/output.json").symlink_to(secret)
    from hookrun.events.runs import RunStatus

    finished = workdirs.finished(spec, RunStatus.SUCCESS, 0, error=None)
    assert finished.status is RunStatus.FAILURE and finished.output is None
    assert "HOOKRUN_OUTPUT cannot be read" in (finished.error or "")
    os.unlink(f"{base}/output.json")
    os.mkfifo(f"{base}/output.json")  # would block a plain open()
    finished = workdirs.finished(spec, RunStatus.SUCCESS, 0, error=None)
    assert "not a regular file" in (finished.error or "")


def _spec(argv: list[str], *, input_dirs: list[Path] | None = None) -> ExecutionSpec:
    return ExecutionSpec(
        run_id="run-1",
        execution_id="ex-1",
        trigger_id="t",
        step="s",
        argv=argv,
        env={"PATH": "/usr/bin:/bin"},
        params={},
        inputs={"payload": b"{}"},
        input_dirs=input_dirs or [],
        timeout_s=30,
        partition=0,
    )
