"""SshTransport: the system OpenSSH client, with the user's keys, agent and ~/.ssh/config.

Host keys are always verified (StrictHostKeyChecking=yes): an unknown host is an error with the
command to accept it, never trusted silently. BatchMode makes a missing key fail at once instead
of waiting for a password prompt. Remote commands are built with shlex.join from argument lists.
"""

from __future__ import annotations

import shlex
import shutil
import socket
import subprocess
from collections.abc import Sequence
from pathlib import Path

from edgekd.errors import DeviceError, MissingDependencyError, TransportTimeout
from edgekd.runners.base import Transport

SSH_ERROR = 255  # ssh's own exit status for connection/authentication failures


class SshTransport(Transport):
    name = "ssh"

    def __init__(
        self,
        host: str,
        user: str | None = None,
        port: int | None = None,
        identity_file: str | None = None,
        ssh_config: str | None = None,
        connect_timeout_s: float = 10.0,
        python: str = "python3",
    ):
        if shutil.which("ssh") is None:
            raise MissingDependencyError("the OpenSSH client 'ssh' is not installed", hint="apt-get install openssh-client")
        self.host, self.user, self.port = host, user, port
        self.identity_file, self.ssh_config = identity_file, ssh_config
        self.connect_timeout_s = connect_timeout_s
        self._python = python
        self._home: str | None = None

    # ------------------------------------------------------------ options

    def ssh_options(self) -> list[str]:
        opts: list[str] = []
        if self.ssh_config:
            opts += ["-F", str(Path(self.ssh_config).expanduser())]
        opts += [
            "-o", "BatchMode=yes",
            "-o", "StrictHostKeyChecking=yes",
            "-o", f"ConnectTimeout={max(1, int(round(self.connect_timeout_s)))}",
            "-o", "LogLevel=ERROR",
        ]
        if self.port:
            opts += ["-p", str(self.port)]
        if self.user:
            opts += ["-l", self.user]
        if self.identity_file:
            opts += ["-i", str(Path(self.identity_file).expanduser())]
        return opts

    def describe(self) -> str:
        who = f"{self.user}@" if self.user else ""
        return f"ssh {who}{self.host}" + (f":{self.port}" if self.port else "")

    def python(self) -> str:
        return self._python

    def resolved_endpoint(self) -> tuple[str, int]:
        """(hostname, port) after ~/.ssh/config aliases, from `ssh -G`."""
        argv = ["ssh", "-G"] + self.ssh_options() + [self.host]
        try:
            out = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False).stdout
        except subprocess.TimeoutExpired:
            out = ""
        host, port = self.host, self.port or 22
        for line in out.splitlines():
            key, _, value = line.partition(" ")
            if key == "hostname" and value:
                host = value.strip()
            elif key == "port" and value.strip().isdigit():
                port = int(value)
        return host, port

    def probe_tcp(self) -> None:
        """Open and close a TCP connection to the SSH port; raise DeviceError if it fails."""
        host, port = self.resolved_endpoint()
        try:
            with socket.create_connection((host, port), timeout=self.connect_timeout_s):
                return
        except socket.timeout:
            raise TransportTimeout(
                f"{self.describe()}: no answer from {host}:{port} within {self.connect_timeout_s:g} s",
                hint="is the device on and on this network? check the address, the port and any firewall",
            ) from None
        except OSError as exc:
            raise DeviceError(
                f"{self.describe()}: cannot connect to {host}:{port}: {exc.strerror or exc}",
                hint="check the address and port in the target file, and that sshd runs on the device",
            ) from None

    # ------------------------------------------------------------ commands

    def wrap(self, argv: Sequence[str]) -> list[str]:
        return ["ssh"] + self.ssh_options() + ["--", self.host, shlex.join(str(a) for a in argv)]

    def failure(self, returncode: int, stderr: str) -> DeviceError | None:
        return self._classify(stderr) if returncode == SSH_ERROR else None

    def remote_home(self) -> str:
        if self._home is None:
            res = self.run(["sh", "-c", 'printf %s "$HOME"'], timeout_s=self.connect_timeout_s + 20)
            self._home = res.stdout.strip() or "."
        return self._home

    def expand(self, path: str) -> str:
        """Expand a leading ~ on the device (quoting would otherwise keep it literal)."""
        if path == "~" or path.startswith("~/"):
            return self.remote_home() + path[1:]
        return path

    def put(self, local: Path, remote: str, timeout_s: float = 60.0) -> None:
        dest = self.expand(remote)
        # "$1.part.$$": the remote shell's pid keeps two puts of the same file apart
        script = 'mkdir -p -- "$(dirname -- "$1")" && cat > "$1.part.$$" && mv -f -- "$1.part.$$" "$1"'
        res = self.run(["sh", "-c", script, "sh", dest], timeout_s=timeout_s, stdin=Path(local).read_bytes())
        if not res.ok:
            raise DeviceError(
                f"{self.describe()}: could not write {dest}: {res.stderr.strip() or 'exit ' + str(res.returncode)}",
                hint="check free space and permissions of the target's workdir",
            )

    def _classify(self, stderr: str) -> DeviceError:
        text = stderr.strip()
        who = self.describe()
        lowered = text.lower()
        if "remote host identification has changed" in lowered:
            return DeviceError(
                f"{who}: the host key has CHANGED since you last connected",
                hint=f"if the device was reinstalled, remove the old key with: ssh-keygen -R {self.host}; otherwise do not connect",
            )
        if "host key verification failed" in lowered or "no host key is known" in lowered:
            port = f"-p {self.port} " if self.port else ""
            return DeviceError(
                f"{who}: the device's host key is not in known_hosts (edgekd never trusts an unknown host)",
                hint=f"connect once by hand to check and accept it: ssh {port}{self.host}   "
                f"(or: ssh-keyscan {port}{self.host} >> ~/.ssh/known_hosts after checking the fingerprint)",
            )
        if "permission denied" in lowered or "too many authentication failures" in lowered:
            return DeviceError(
                f"{who}: authentication refused",
                hint=f"install your public key on the device: ssh-copy-id {self.host}; or set identity_file in the target",
            )
        if "could not resolve hostname" in lowered or "name or service not known" in lowered:
            return DeviceError(f"{who}: unknown host name '{self.host}'", hint="check the host in the target file or ~/.ssh/config")
        if "timed out" in lowered:
            return TransportTimeout(
                f"{who}: connection timed out ({text.splitlines()[-1] if text else 'no reply'})",
                hint="is the device on and reachable? check the address, port and firewall",
            )
        if "connection refused" in lowered or "no route to host" in lowered or "network is unreachable" in lowered:
            return DeviceError(f"{who}: {text.splitlines()[-1]}", hint="check that the device is up and sshd listens on that port")
        return DeviceError(f"{who}: ssh failed: {text or 'exit 255'}", hint="run the same ssh command by hand with -v to see why")
