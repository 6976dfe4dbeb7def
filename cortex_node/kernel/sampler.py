"""Real host figures from psutil: cpu percent (not load average), memory, disk of the data
directory's filesystem, and the daemon's own cpu time."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import psutil

from cortex_node.contracts import HostLoad

MB = 1024 * 1024


@dataclass
class HostSample:
    load: HostLoad  # the machine
    own_cpu_ms: float  # the daemon itself
    own_rss_mb: float


class HostSampler:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self._proc = psutil.Process()
        psutil.cpu_percent(interval=None)  # primes the counter: the first reading is since now

    def sample(self) -> HostSample:
        vm = psutil.virtual_memory()
        try:
            disk = psutil.disk_usage(str(self.data_dir))
            disk_used, disk_total = disk.used / MB, disk.total / MB
        except OSError:
            disk_used = disk_total = 0.0
        with self._proc.oneshot():
            times = self._proc.cpu_times()
            rss = self._proc.memory_info().rss
        load = HostLoad(
            cpu_percent=float(psutil.cpu_percent(interval=None)),
            memory_used_mb=round((vm.total - vm.available) / MB, 1),
            memory_total_mb=round(vm.total / MB, 1),
            disk_used_mb=round(disk_used, 1),
            disk_total_mb=round(disk_total, 1),
        )
        return HostSample(load=load, own_cpu_ms=(times.user + times.system) * 1000.0, own_rss_mb=rss / MB)
