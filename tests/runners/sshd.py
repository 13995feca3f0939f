"""A real OpenSSH server on 127.0.0.1 for tests: own host key, own authorized key, own port."""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def keygen(path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)


@dataclass
class SshServer:
    root: Path
    port: int
    user: str
    host_pub: str
    client_key: Path
    process: subprocess.Popen

    def client_config(self, alias: str = "edgekd-test-device", known_hosts: Path | None = None,
                      key: Path | None = None) -> Path:
        """An ssh_config file (used with ssh -F) whose alias points at this server."""
        if known_hosts is None:
            known_hosts = self.root / "known_hosts"
            known_hosts.write_text(f"[127.0.0.1]:{self.port} {self.host_pub}\n")
        path = self.root / f"ssh_config_{alias}"
        path.write_text(
            f"Host {alias}\n"
            f"  HostName 127.0.0.1\n  Port {self.port}\n  User {self.user}\n"
            f"  IdentityFile {key or self.client_key}\n  IdentitiesOnly yes\n"
            f"  UserKnownHostsFile {known_hosts}\n  GlobalKnownHostsFile /dev/null\n"
        )
        return path

    def target_toml(self, name: str, workdir: str, config: Path | None = None, alias: str = "edgekd-test-device",
                    python: str | None = None) -> str:
        py = f'python = "{python}"\n' if python else ""
        return (
            f'name = "{name}"\ndescription = "OpenSSH server on 127.0.0.1 started by the test"\nkind = "linux"\n'
            f'[transport]\ntype = "ssh"\nhost = "{alias}"\nworkdir = "{workdir}"\n'
            f'ssh_config = "{config or self.client_config(alias)}"\nconnect_timeout_s = 5\n{py}'
            f'[runtime]\nengine = "tflite"\nformats = ["tflite-int8", "tflite-fp32"]\nthreads = 1\n'
        )

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()


def start_sshd(root: Path) -> SshServer:
    if not os.path.exists(SSHD):
        raise RuntimeError("sshd not installed (apt-get install openssh-server; `make test` does it)")
    root.mkdir(parents=True, exist_ok=True)
    os.chmod(root, 0o700)
    keygen(root / "host_key")
    keygen(root / "client_key")
    (root / "authorized_keys").write_text((root / "client_key.pub").read_text())
    os.chmod(root / "authorized_keys", 0o600)
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # privilege-separation directory
    port = free_port()
    config = root / "sshd_config"
    config.write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {root / 'host_key'}\nPidFile {root / 'sshd.pid'}\n"
        f"AuthorizedKeysFile {root / 'authorized_keys'}\nPubkeyAuthentication yes\n"
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\n"
        "StrictModes no\nUsePAM no\nLogLevel ERROR\n"
    )
    proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"sshd exited: {proc.stderr.read().decode(errors='replace')}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                break
        except OSError:
            time.sleep(0.1)
    else:
        proc.kill()
        raise RuntimeError("sshd did not start listening within 15 s")
    host_pub = " ".join((root / "host_key.pub").read_text().split()[:2])
    return SshServer(root, port, getpass.getuser(), host_pub, root / "client_key", proc)
