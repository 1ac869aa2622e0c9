"""Ray itself for the driver: options, joining a cluster or starting one here on 127.0.0.1 only, and
how many workers fit.

Ray is imported only by ``import_ray``, so that a missing Ray is one line naming the extra that
installs it, and so that the variables Ray reads when imported can be set first.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import socket
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from ..errors import RequestError, SettingError, YodaError, setting

LOCAL_ENVIRONMENT = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
"""Set before Ray is imported when the driver starts a Ray itself: no usage report, and a node that
is not part of a cluster, so Ray takes 127.0.0.1 as its address and binds its servers there only."""


@dataclass(frozen=True)
class RayOptions:
    """Where and how wide to run."""

    address: str | None = None
    """None: start a Ray on this machine (127.0.0.1 only); ``auto``, ``HOST:PORT`` or ``ray://HOST:PORT``: join."""
    workers: int | None = None
    """Actors; None: as many as the cluster's GPUs (with ``gpus_per_worker``) or CPUs allow."""
    gpus_per_worker: float = 0.0
    cpus_per_worker: float = 1.0
    retries: int = 2
    """Further attempts of an image whose worker died."""
    in_flight: int = 2
    """Images sent to one worker before it returns one (the next waits there, not on the driver)."""
    debug: bool = False
    """Ray's own log lines and the workers' output on the driver's terminal."""

    def check(self) -> None:
        """Refuse impossible options, naming the setting."""
        if self.workers is not None and self.workers < 1:
            raise SettingError("workers", f"must be at least 1, got {self.workers}")
        if not self.gpus_per_worker >= 0:
            raise SettingError("gpus_per_worker", f"must be 0 or more, got {self.gpus_per_worker}")
        if not self.cpus_per_worker > 0:
            raise SettingError("cpus_per_worker", f"must be more than 0, got {self.cpus_per_worker}")
        if self.retries < 0 or self.in_flight < 1:
            raise SettingError("retries", "retries must be 0 or more, and in_flight at least 1")
        if self.address not in (None, "auto") and self.host_port is None:
            message = f"must be auto or HOST:PORT (ray://HOST:PORT for Ray Client), got {self.address!r}"
            raise SettingError("ray_address", message)

    @property
    def host_port(self) -> tuple[str, int] | None:
        """The host (without IPv6 brackets) and port of a ``HOST:PORT`` address; None otherwise."""
        if self.address is None:
            return None
        host, colon, port = self.address.removeprefix("ray://").rpartition(":")
        host = host.removeprefix("[").removesuffix("]")
        if not colon or not host or not port.isdecimal() or not 0 < int(port) < 65536:
            return None
        return host, int(port)

    @property
    def local(self) -> bool:
        """A Ray on this machine's loopback: started here (no address), or joined at 127.x, ::1 or localhost."""
        if self.address is None:
            return True
        host = self.host_port[0] if self.host_port else ""
        try:
            return host == "localhost" or ipaddress.ip_address(host).is_loopback
        except ValueError:
            return False


def import_ray(local: bool) -> ModuleType:
    """Ray, or a one-line error naming the extra that installs it. ``local`` (a Ray on this machine's
    loopback): set ``LOCAL_ENVIRONMENT`` first (where the variables are unset), since Ray reads them
    when it is imported."""
    if local:
        for name, value in LOCAL_ENVIRONMENT.items():
            os.environ.setdefault(name, value)
    try:
        import ray
    except ImportError:
        raise RequestError("the Ray engine needs Ray: pip install 'yoda-sr[ray]'") from None
    return ray


def _stay_on_loopback() -> None:
    """Keep Ray from trading 127.0.0.1 for this machine's network address (which it does for a node
    that may be part of a cluster): ``LOCAL_ENVIRONMENT``, and ``ray_constants.ENABLE_RAY_CLUSTER``,
    where Ray keeps the answer (set here too in case Ray was imported before the variable was)."""
    for name, value in LOCAL_ENVIRONMENT.items():
        os.environ.setdefault(name, value)
    from ray._private import ray_constants

    ray_constants.ENABLE_RAY_CLUSTER = False


def _quiet(debug: bool) -> dict[str, Any]:
    """``ray.init`` arguments: no dashboard; Ray's log lines and the workers' output only when debugging."""
    return {
        "include_dashboard": False,
        "log_to_driver": debug,
        "logging_level": logging.INFO if debug else logging.ERROR,
    }


def start_local(ray: ModuleType, num_cpus: int | None = None, debug: bool = False) -> None:
    """Start a Ray on this machine whose servers listen on 127.0.0.1 only, or stop with one line.

    Ray binds its servers to every interface unless its node's address is 127.0.0.1, and it keeps
    127.0.0.1 only on a node that is not part of a cluster (``_stay_on_loopback``). The GCS's
    address is checked afterwards."""
    _stay_on_loopback()
    ray.init("local", num_cpus=num_cpus, _node_ip_address="127.0.0.1", **_quiet(debug))  # a new one, always
    gcs = str(ray.get_runtime_context().gcs_address)
    if not gcs.startswith("127."):
        ray.shutdown()
        raise YodaError(f"the Ray started here listens on {gcs}, not on 127.0.0.1 only; give {setting('ray_address')}")


def check_reachable(options: RayOptions) -> None:
    """A ``HOST:PORT`` that nothing answers on is one line at once (Ray itself retries for minutes)."""
    if options.host_port is None:
        return
    try:
        socket.create_connection(options.host_port, timeout=10).close()
    except OSError as error:
        raise YodaError(f"cannot reach the Ray cluster at {options.address}: {error.strerror or error}") from None


def connect(ray: ModuleType, options: RayOptions) -> bool:
    """Join the cluster, or start a Ray on this machine (``start_local``); whether to
    ``ray.shutdown()`` at the end (not when this process was already connected)."""
    if ray.is_initialized():
        return False
    if options.address is None:
        start_local(ray, debug=options.debug)
        return True
    if options.local:
        _stay_on_loopback()
    check_reachable(options)
    try:
        ray.init(address=options.address, **_quiet(options.debug))
    except (ConnectionError, RuntimeError, ValueError, TimeoutError) as error:
        raise YodaError(f"cannot join the Ray cluster at {options.address}: {error}") from None
    return True


def worker_count(ray: ModuleType, options: RayOptions) -> int:
    """``options.workers``, or as many as fit the cluster now; a count that does not fit a Ray this
    driver started is refused (its actors would wait forever)."""
    resources = ray.cluster_resources()
    cpus, gpus = float(resources.get("CPU", 0)), float(resources.get("GPU", 0))
    fit = int(cpus // options.cpus_per_worker)
    if options.gpus_per_worker:
        fit = min(fit, int(gpus // options.gpus_per_worker))
    wanted = options.workers
    if wanted is None and fit >= 1:
        return fit
    if wanted is None or (wanted > fit and options.address is None):
        size = f"{options.cpus_per_worker:g} CPU and {options.gpus_per_worker:g} GPU"
        raise SettingError(
            "workers", f"{wanted or 1} workers of {size} do not fit this Ray ({cpus:g} CPUs, {gpus:g} GPUs)"
        )
    return wanted
