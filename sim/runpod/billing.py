"""What the simulated RunPod bills: GPU time and storage, per second, as RunPod's pricing pages state it.

- GPU: the pod's ``costPerHr`` from the moment it is rented (image pull included) until it stops,
  exits, dies or is terminated.
- Container disk: $0.10 per GB-month while the pod runs (booting included); it is wiped on stop.
- Volume disk: $0.10 per GB-month while the pod runs, $0.20 per GB-month while it is stopped (exited
  or dead), until it is terminated.
- Network volumes: $0.07 per GB-month (the part over 1 TB at $0.05), always, pods or not.

Source: docs.runpod.io "Storage options" (pods/storage/types) and "manage pods" ("you only pay for the
container disk when the pod is running"; "you pay for volume storage even when the pod is stopped").
A month is 730 hours (365 × 24 / 12): RunPod quotes storage per month and bills it in small steps.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

HOURS_PER_MONTH = Decimal(730)
CONTAINER_DISK_GB_MONTH = Decimal("0.10")
VOLUME_RUNNING_GB_MONTH = Decimal("0.10")
VOLUME_STOPPED_GB_MONTH = Decimal("0.20")
NETWORK_VOLUME_GB_MONTH = Decimal("0.07")
NETWORK_VOLUME_LARGE_GB_MONTH = Decimal("0.05")
NETWORK_VOLUME_TIER_GB = 1000


def storage_per_hour(*, container_gb: int, volume_gb: int, running: bool) -> Decimal:
    """USD per hour for a pod's own disks in that state (``running`` covers booting too)."""
    if running:
        per_month = container_gb * CONTAINER_DISK_GB_MONTH + volume_gb * VOLUME_RUNNING_GB_MONTH
    else:
        per_month = volume_gb * VOLUME_STOPPED_GB_MONTH
    return per_month / HOURS_PER_MONTH


def network_volume_per_hour(size_gb: int) -> Decimal:
    small = min(size_gb, NETWORK_VOLUME_TIER_GB)
    large = max(0, size_gb - NETWORK_VOLUME_TIER_GB)
    return (small * NETWORK_VOLUME_GB_MONTH + large * NETWORK_VOLUME_LARGE_GB_MONTH) / HOURS_PER_MONTH


@dataclass(frozen=True)
class Meter:
    """Money billed so far, split the way RunPod's billing page splits it."""

    compute: Decimal = Decimal(0)
    storage: Decimal = Decimal(0)

    @property
    def total(self) -> Decimal:
        return self.compute + self.storage

    def __add__(self, other: Meter) -> Meter:
        return Meter(self.compute + other.compute, self.storage + other.storage)


@dataclass
class RateMeter:
    """Accrues two hourly rates over the simulator's clock; call :meth:`set_rates` at every change."""

    compute_per_hour: Decimal = Decimal(0)
    storage_per_hour: Decimal = Decimal(0)
    since: float | None = None
    settled: Meter = Meter()

    def read(self, now: float) -> Meter:
        if self.since is None:
            return self.settled
        hours = Decimal(str(max(0.0, now - self.since))) / 3600
        return self.settled + Meter(self.compute_per_hour * hours, self.storage_per_hour * hours)

    def set_rates(self, now: float, *, compute: Decimal, storage: Decimal) -> None:
        self.settled = self.read(now)
        self.since = now
        self.compute_per_hour = compute
        self.storage_per_hour = storage
