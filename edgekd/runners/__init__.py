"""Transports that reach a target; `open_transport` picks one from the target's spec."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from edgekd.runners.base import Transport
    from edgekd.targets import TargetSpec


def open_transport(spec: TargetSpec) -> Transport:
    """A command transport for a linux/host target (local or ssh)."""
    from edgekd.errors import UsageError

    t = spec.transport
    if t.type == "local":
        from edgekd.runners.local import LocalTransport

        return LocalTransport(workdir=t.workdir, python=t.python)
    if t.type == "ssh":
        from edgekd.runners.ssh import SshTransport

        return SshTransport(
            host=t.host, user=t.user, port=t.port, identity_file=t.identity_file,
            ssh_config=t.ssh_config, connect_timeout_s=t.connect_timeout_s, python=t.python,
        )
    raise UsageError(
        f"target '{spec.name}' uses a {t.type} transport, which runs firmware, not commands",
        hint="use a linux or host target here",
    )
