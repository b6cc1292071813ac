"""Execution isolation: executions run as an unprivileged user, in a bubblewrap sandbox where the
machine allows it, so a step cannot read the runner's secrets (docs/decisions/0032).

Built once at start (``build_isolation``), after a probe has run the whole wrapper once: a broken
sandbox is found then, not per execution. ``Isolation.command`` turns an execution's argv into
the argv actually spawned, so spawning stays one ``Popen``::

    bwrap --ro-bind / / --dev /dev --proc /proc --tmpfs /tmp --unshare-pid ... \\
          --tmpfs <data dir> --bind <execution dir> <execution dir> --chdir <its work/> -- \\
      setpriv --reuid=U --regid=G --clear-groups --no-new-privs -- argv...

Without bubblewrap, the ``setpriv`` part alone; without a user switch, the ``bwrap`` part alone.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pwd
import secrets
import shutil
import stat
import subprocess
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from hookrun.runner.specs import ExecutionSpec
from hookrun.runner.workdirs import Workdirs

log = logging.getLogger(__name__)

Sandbox = Literal["auto", "bwrap", "none"]

#: What the start-up probe checks, as the execution user and inside the sandbox, in a real
#: execution directory: it can write its directory, its output and outputs/, read its inputs
#: and parameters (the config dir is checked apart: a warning, not a failure).
_PROBE = (
    'test -w . && : > "$HOOKRUN_OUTPUT" && : > "$HOOKRUN_OUTPUTS/probe"'
    ' && test -r "$HOOKRUN_PARAMETERS" && test -r "$HOOKRUN_INPUTS/probe"'
    ' && test "$(id -u)" = "$1"'
)
PROBE_TIMEOUT_S = 10.0


class IsolationError(Exception):
    """Why the runner refuses to start (one line): an isolation that was asked for explicitly
    cannot be had."""


@dataclass(frozen=True)
class ExecutionUser:
    name: str
    uid: int
    gid: int


def resolve_user(value: str | None, euid: int) -> ExecutionUser | None:
    """HOOKRUN_EXECUTION_USER: unset means `nobody` when the runner is root, else no switch;
    empty means no switch; a name or a numeric uid. Raises IsolationError."""
    if value is None:
        value = "nobody" if euid == 0 else ""
    value = value.strip()
    if not value:
        return None
    if euid != 0:
        raise IsolationError(
            f"HOOKRUN_EXECUTION_USER={value} needs a runner running as root (it runs as uid "
            f"{euid}): unset it, or set it empty"
        )
    try:
        entry = pwd.getpwuid(int(value)) if value.isdigit() else pwd.getpwnam(value)
    except KeyError:
        if not value.isdigit():
            raise IsolationError(f"HOOKRUN_EXECUTION_USER={value}: no such user") from None
        user = ExecutionUser(value, int(value), int(value))  # a uid without a passwd entry
    else:
        user = ExecutionUser(entry.pw_name, entry.pw_uid, entry.pw_gid)
    return None if user.uid == 0 else user


class Isolation:
    """How executions are confined; ``Isolation()`` confines nothing (the process as it was)."""

    def __init__(
        self,
        *,
        user: ExecutionUser | None = None,
        bwrap: str | None = None,
        setpriv: str | None = None,
        data_dir: Path | None = None,
        config_dir: Path | None = None,
        private_tmp: str = "/tmp",
    ) -> None:
        """``private_tmp``: the folder the sandbox replaces by an empty tmpfs (tests move it
        off /tmp, so that pytest's 0700 folders there are closed ancestors as any others)."""
        self.user = user
        self.bwrap = bwrap
        self.setpriv = setpriv or shutil.which("setpriv")
        if user is not None and self.setpriv is None:
            raise IsolationError("switching the execution user needs setpriv (util-linux)")
        self.data_dir = str(data_dir) if data_dir is not None else None
        self.config_dir = str(config_dir) if config_dir is not None else None
        if bwrap is not None and self.data_dir is None:
            raise ValueError("a sandbox needs the data dir")
        self._runner_env = {k: os.environ.get(k) for k in ("HOME", "USER")}
        #: PATH -> the same without what the execution user cannot reach (see environ).
        self._paths: dict[str, str] = {}
        #: Paths the execution user could not reach inside the sandbox, why (warned at start).
        self.unreachable: list[str] = []
        # Computed once: per execution, command() only appends its directory and argv.
        self._sandbox = self._sandbox_args(private_tmp) if bwrap is not None else []
        self._tails = {flag: self._setpriv_args(flag) for flag in (False, True)}

    @property
    def sandboxed(self) -> bool:
        return self.bwrap is not None

    @property
    def owner(self) -> tuple[int, int] | None:
        """Owner of an execution's directory, work/ and outputs/ (None: the runner's)."""
        return (self.user.uid, self.user.gid) if self.user is not None else None

    @property
    def can_pdeathsig(self) -> bool:
        """The wrapper can make an execution die with the runner (bwrap or setpriv)."""
        return self.bwrap is not None or self.setpriv is not None

    def wraps(self, *, pdeathsig: bool = False) -> bool:
        """``command`` puts a wrapper (bwrap, setpriv) before the execution's argv."""
        return bool(self._sandbox or self._tails[pdeathsig])

    def describe_user(self) -> str:
        return self.user.name if self.user else "the runner's user"

    def describe(self) -> str:
        who = f"as {self.user.name} (uid {self.user.uid})" if self.user else "as the runner's user"
        where = "in a bubblewrap sandbox" if self.bwrap else "without a sandbox"
        return f"{who}, {where}"

    def command(
        self, argv: list[str], base: str, *, pdeathsig: bool = False, network: bool = True
    ) -> list[str]:
        """The argv to spawn for ``argv`` run in the execution directory ``base``.

        ``pdeathsig``: the execution must die with the runner (there is no guard).
        ``network``: False gives the execution no network (bwrap only; a step setting later).
        """
        tail = self._tails[pdeathsig]
        if not self._sandbox:
            return [*tail, *argv] if tail else argv
        net = () if network else ("--unshare-net",)
        return [
            *self._sandbox,
            *("--bind", base, base, "--chdir", f"{base}/work", *net, "--"),
            *tail,
            *argv,
        ]

    def environ(self, env: dict[str, str], base: str) -> dict[str, str]:
        """Adjust an execution's environment to its user: the runner's own HOME and USER would
        name a home the execution cannot write (it gets its work/ and its user's name), and
        PATH loses the folders the user cannot reach."""
        if self.user is not None:
            if env.get("HOME") == self._runner_env["HOME"]:
                env["HOME"] = f"{base}/work"
            if env.get("USER") == self._runner_env["USER"]:
                env["USER"] = self.user.name
            if "PATH" in env:
                env["PATH"] = self._reachable_path(env["PATH"])
        return env

    def _reachable_path(self, path: str) -> str:
        """PATH without the folders the execution user cannot reach (the runner's /root/...):
        some kernels let exec through a folder it cannot search, and then the interpreter of a
        script there cannot read it (exit 126) instead of the search going on."""
        kept = self._paths.get(path)
        if kept is None:
            if len(self._paths) > 64:
                self._paths.clear()
            kept = self._paths[path] = os.pathsep.join(
                folder
                for folder in path.split(os.pathsep)
                if not folder.startswith("/")
                or all(self._can(p, os.X_OK) for p in (*_ancestors(folder), folder))
            )
        return kept

    def _setpriv_args(self, pdeathsig: bool) -> list[str]:
        # bwrap's --die-with-parent already kills the sandbox with the runner.
        death = ["--pdeathsig", "KILL"] if pdeathsig and self.bwrap is None else []
        if self.user is None:
            return [self.setpriv, *death, "--"] if death and self.setpriv else []
        assert self.setpriv is not None
        u = self.user
        return [
            self.setpriv,
            f"--reuid={u.uid}",
            f"--regid={u.gid}",
            "--clear-groups",
            "--no-new-privs",  # no setuid binary gives back what the switch took
            *death,
            "--",
        ]

    def _sandbox_args(self, private_tmp: str) -> list[str]:
        """bwrap's options up to the execution's own directory, computed once.

        The system is read-only; /tmp is private; the data dir is an empty tmpfs (other
        executions are hidden) into which the execution's directory is bound; the config dir is
        bound read-only. Ancestors the execution user cannot traverse (a 0700 /root, pytest's
        or mktemp's directories) get a 0755 tmpfs, and directories bwrap would create for a
        mount point (it makes them 0700) are created 0755 first.
        """
        assert self.bwrap is not None and self.data_dir is not None
        data = self.data_dir
        cfg = self.config_dir
        # (kind, path) -> (depth, order, options); sorted by depth, a mount on a path comes
        # after those on its ancestors (the order breaks ties between siblings).
        ops: dict[tuple[str, str], tuple[int, int, list[str]]] = {}
        tmpfs = {private_tmp, data}

        def add(kind: str, path: str, order: int, options: list[str]) -> None:
            ops.setdefault((kind, path), (path.count("/"), order, options))

        bound = False
        if cfg is not None:
            # The config dir is bound only where the sandbox would hide it.
            bound = self._chain(cfg, tmpfs, None, add) or cfg == data
            if bound:
                add("ro-bind", cfg, 2, ["--ro-bind", cfg, cfg])
            if not self._can(cfg, os.R_OK | os.X_OK):
                self.unreachable.append(f"{cfg} ({_mode(cfg)})")
        self._chain(f"{data}/executions/x", tmpfs, cfg if bound else None, add)
        add("tmpfs", data, 3, ["--perms", "0755", "--tmpfs", data])
        args = [
            self.bwrap,
            *("--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc"),
            *("--perms", "1777", "--tmpfs", private_tmp),
            *("--unshare-pid", "--unshare-ipc", "--die-with-parent"),
        ]
        for _, _, options in sorted(ops.values(), key=lambda op: (op[0], op[1])):
            args.extend(options)
        return args

    def _chain(
        self,
        path: str,
        tmpfs: set[str],
        bound: str | None,
        add: Callable[[str, str, int, list[str]], None],
    ) -> bool:
        """Make the ancestors of ``path`` traversable in the sandbox; True if ``path`` lies
        below a tmpfs of ours (so it must be bound to be seen)."""
        hidden = False  # below a tmpfs of ours: created by bwrap, not seen on the host
        for anc in _ancestors(path):
            if anc in tmpfs:
                hidden = True
            elif anc == bound:  # the bound config dir: the host's view again
                hidden = False
                if not self._can(anc, os.X_OK):
                    self.unreachable.append(f"{anc} ({_mode(anc)})")
            elif hidden:
                add("dir", anc, 1, ["--perms", "0755", "--dir", anc])
            elif not self._can(anc, os.X_OK):
                add("tmpfs", anc, 0, ["--perms", "0755", "--tmpfs", anc])
                tmpfs.add(anc)
                hidden = True
        return hidden

    def _can(self, path: str, bits: int) -> bool:
        """The execution user may ``bits`` (os.R_OK/W_OK/X_OK) on ``path`` by its mode bits."""
        if self.user is None:
            return True
        try:
            return _allows(os.stat(path), self.user, bits)
        except OSError:
            return False

    def unreachable_without_sandbox(self) -> list[str]:
        """Paths the execution user cannot reach on the host: every ancestor of the executions'
        directory and of the config dir must be traversable, the config dir readable."""
        if self.user is None or self.data_dir is None:
            return []
        found = []
        paths = [f"{self.data_dir}/executions/x"]
        if self.config_dir is not None:
            paths.append(f"{self.config_dir}/x")
        for path in paths:
            for anc in _ancestors(path):
                if not self._can(anc, os.X_OK):
                    found.append(f"{anc} ({_mode(anc)})")
                    break
        if self.config_dir is not None and not self._can(self.config_dir, os.R_OK | os.X_OK):
            found.append(f"{self.config_dir} ({_mode(self.config_dir)})")
        return list(dict.fromkeys(found))


def _allows(st: os.stat_result, user: ExecutionUser, bits: int) -> bool:
    """Linux's mode-bit check for a process of ``user`` with no supplementary groups."""
    if st.st_uid == user.uid:
        mode = st.st_mode >> 6
    elif st.st_gid == user.gid:
        mode = st.st_mode >> 3
    else:
        mode = st.st_mode
    return mode & bits == bits


def _ancestors(path: str) -> Iterable[str]:
    """``/a/b/c`` -> ``/a``, ``/a/b`` (not ``/``, not the path itself)."""
    parts = path.strip("/").split("/")
    for i in range(1, len(parts)):
        yield "/" + "/".join(parts[:i])


def _mode(path: str) -> str:
    try:
        st = os.stat(path)
    except OSError as exc:
        return exc.strerror or "cannot stat"
    owner = _name(st.st_uid)
    return f"mode {stat.S_IMODE(st.st_mode):04o}, owner {owner}"


def _name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def probe(isolation: Isolation, data_dir: Path, environ: Mapping[str, str]) -> str | None:
    """Run the whole wrapper once in a real execution directory; None, or why it failed."""
    workdirs = Workdirs(data_dir, max_output_bytes=1, max_json_depth=1, owner=isolation.owner)
    spec = ExecutionSpec(
        run_id="probe",
        execution_id=f"probe-{os.getpid()}-{secrets.token_hex(4)}",
        trigger_id="probe",
        step="probe",
        argv=[
            "sh",
            "-c",
            _PROBE,
            "sh",
            str(isolation.user.uid if isolation.user else os.geteuid()),
        ],
        env={"PATH": environ.get("PATH", os.defpath)},
        params={},
        inputs={"probe": b"x"},
        input_dirs=[],
        timeout_s=PROBE_TIMEOUT_S,
        partition=0,
    )
    base = ""
    try:
        base, env = workdirs.prepare(spec, {})
        done = subprocess.run(
            isolation.command(spec.argv, base),
            cwd=f"{base}/work",
            env=isolation.environ(env, base),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=PROBE_TIMEOUT_S,
            start_new_session=True,
            check=False,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return str(exc)
    finally:
        if base:
            with contextlib.suppress(OSError):
                shutil.rmtree(base)
    if done.returncode != 0:
        said = done.stderr.decode("utf-8", "replace").strip().splitlines()
        return f"exit code {done.returncode}" + (f": {said[-1]}" if said else "")
    return None


def build_isolation(
    *,
    user: str | None,
    sandbox: Sandbox,
    data_dir: Path,
    config_dir: Path | None,
    environ: Mapping[str, str] | None = None,
    euid: int | None = None,
) -> Isolation:
    """The isolation executions get, probed; raises IsolationError when one asked for
    explicitly (a user, ``sandbox="bwrap"``) cannot be had. The defaults degrade instead, each
    step with one WARNING saying why and how to fix it."""
    environ = os.environ if environ is None else environ
    euid = os.geteuid() if euid is None else euid
    explicit_user = user is not None and user.strip() != ""
    who = resolve_user(user, euid)
    setpriv = shutil.which("setpriv", path=environ.get("PATH"))
    if who is not None and setpriv is None:
        if explicit_user:
            raise IsolationError(f"HOOKRUN_EXECUTION_USER={user} needs setpriv (util-linux)")
        log.warning("executions run as the runner's user: setpriv (util-linux) is not on PATH")
        who = None
    data_dir = Path(os.path.realpath(data_dir))
    config_dir = Path(os.path.realpath(config_dir)) if config_dir is not None else None
    (data_dir / "executions").mkdir(parents=True, exist_ok=True)

    if sandbox != "none":
        bwrap = shutil.which("bwrap", path=environ.get("PATH"))
        if bwrap is None:
            why = "bwrap (Debian: bubblewrap) is not on PATH; install it (make setup-sandbox)"
        else:
            iso = Isolation(
                user=who, bwrap=bwrap, setpriv=setpriv, data_dir=data_dir, config_dir=config_dir
            )
            failed = probe(iso, data_dir, environ)
            if failed is None:
                if iso.unreachable:
                    log.warning(
                        "executions run as %s and cannot read %s: steps fail on files in it;"
                        " make it readable and traversable (chmod o+rx)",
                        iso.describe_user(),
                        ", ".join(dict.fromkeys(iso.unreachable)),
                    )
                log.info("executions run %s", iso.describe())
                return iso
            why = f"the bwrap probe failed ({failed})"
            if iso.unreachable:
                closed = ", ".join(dict.fromkeys(iso.unreachable))
                why += f"; {iso.describe_user()} cannot read {closed}: chmod o+rx it"
        if sandbox == "bwrap":
            raise IsolationError(f"HOOKRUN_EXECUTION_SANDBOX=bwrap, but {why}")
        log.warning(
            "executions run without a sandbox: %s (or set HOOKRUN_EXECUTION_SANDBOX=none)", why
        )

    if who is not None:
        iso = Isolation(user=who, setpriv=setpriv, data_dir=data_dir, config_dir=config_dir)
        blocked = iso.unreachable_without_sandbox()
        failed = (
            f"{who.name} cannot reach {', '.join(blocked)}"
            if blocked
            else probe(iso, data_dir, environ)
        )
        if failed is None:
            log.info("executions run %s", iso.describe())
            return iso
        if explicit_user:
            raise IsolationError(f"HOOKRUN_EXECUTION_USER={user}: {failed}")
        log.warning(
            "executions run as the runner's user, not %s: %s; make the parents traversable"
            " (chmod o+x) or install bubblewrap (make setup-sandbox)",
            who.name,
            failed,
        )
    iso = Isolation(setpriv=setpriv, data_dir=data_dir, config_dir=config_dir)
    log.info("executions run %s", iso.describe())
    return iso
