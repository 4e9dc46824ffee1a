"""What a pod costs besides its GPU: the disks RunPod bills, and the hourly price when RunPod omits it.

RunPod bills a pod's storage on top of its ``costPerHr`` (docs.runpod.io, "Storage options" and
"manage pods"): container disk $0.10 per GB-month while the pod runs (it is wiped when the pod stops),
volume disk $0.10 per GB-month while it runs and $0.20 per GB-month while it is stopped, until the pod
is terminated; network volumes $0.07 per GB-month always. A month is taken as 730 hours.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

HOURS_PER_MONTH = Decimal(730)
CONTAINER_DISK_GB_MONTH = Decimal("0.10")
VOLUME_RUNNING_GB_MONTH = Decimal("0.10")
VOLUME_STOPPED_GB_MONTH = Decimal("0.20")
NETWORK_VOLUME_GB_MONTH = Decimal("0.07")
NETWORK_VOLUME_LARGE_GB_MONTH = Decimal("0.05")  # the part of a volume over 1 TB
NETWORK_VOLUME_TIER_GB = 1000
# The container disk a job's pod gets when its plan names none (jobs.py sizes it per model family).
DEFAULT_CONTAINER_DISK_GB = 60


@dataclass(frozen=True)
class PodDisks:
    """The disks a job's pod is rented with, in GB."""

    container_gb: int = DEFAULT_CONTAINER_DISK_GB
    volume_gb: int = 0

    @classmethod
    def of(cls, params: Mapping[str, Any] | None) -> PodDisks:
        """From a job's ``params`` (``{"pod": {"container_disk_in_gb": .., "volume_in_gb": ..}}``)."""
        pod = (params or {}).get("pod") or {}
        return cls(
            container_gb=int(pod.get("container_disk_in_gb", DEFAULT_CONTAINER_DISK_GB)),
            volume_gb=int(pod.get("volume_in_gb", 0)),
        )

    def running_per_hour(self) -> Decimal:
        """USD per hour for both disks while the pod runs (pulling its image included)."""
        per_month = self.container_gb * CONTAINER_DISK_GB_MONTH + self.volume_gb * VOLUME_RUNNING_GB_MONTH
        return per_month / HOURS_PER_MONTH

    def stopped_per_hour(self) -> Decimal:
        """USD per hour once the pod has stopped (exited or died) and until it is terminated."""
        return self.volume_gb * VOLUME_STOPPED_GB_MONTH / HOURS_PER_MONTH


def network_volume_per_hour(size_gb: int) -> Decimal:
    """USD per hour for a network volume of ``size_gb``: billed always, with pods or without."""
    small = min(size_gb, NETWORK_VOLUME_TIER_GB)
    large = max(0, size_gb - NETWORK_VOLUME_TIER_GB)
    return (small * NETWORK_VOLUME_GB_MONTH + large * NETWORK_VOLUME_LARGE_GB_MONTH) / HOURS_PER_MONTH


def gpu_price(
    reported: Decimal | None, *, catalogue: Decimal | None, quoted: Decimal | None = None
) -> Decimal | None:
    """The hourly GPU price to bill a pod at: what RunPod reports for the pod, else its catalogue
    price, else what the estimate quoted. ``None`` (no price known) means: do not rent, or stop.

    RunPod has reported ``costPerHr`` as 0 or left it out; a pod is never free, so such a value is
    ignored rather than believed.
    """
    for price in (reported, catalogue, quoted):
        if price is not None and price > 0:
            return price
    return None
