"""The simulator's GPU catalogue: real RunPod GPU ids, memory and on-demand prices.

Ids and memory follow RunPod's GPU-types reference; prices (USD per GPU-hour) are the newest dated
figures in ``shared/reference/runpod_cloudinary.md`` §3. ``None`` means the cloud does not offer the
GPU (the API reports ``null`` and ``secureCloud``/``communityCloud`` false). Spot prices are not
researched; they are set a little under on-demand, as the console shows them.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from decimal import Decimal


@dataclass(frozen=True)
class GpuSpec:
    """One GPU type as RunPod lists it (``gpuTypes``)."""

    id: str
    display_name: str
    memory_gb: int
    cuda_cores: int
    secure_price: Decimal | None
    community_price: Decimal | None
    secure_spot_price: Decimal | None = None
    community_spot_price: Decimal | None = None
    max_gpu_count: int = 8
    manufacturer: str = "Nvidia"
    # What a pod on this GPU gets per GPU (the pod query's vcpuCount / memoryInGb).
    vcpus_per_gpu: int = 8
    ram_gb_per_gpu: int = 46

    @property
    def secure_cloud(self) -> bool:
        return self.secure_price is not None

    @property
    def community_cloud(self) -> bool:
        return self.community_price is not None

    def with_prices(self, *, secure: Decimal | None, community: Decimal | None) -> GpuSpec:
        return replace(self, secure_price=secure, community_price=community)


def _d(value: str | None) -> Decimal | None:
    return None if value is None else Decimal(value)


DEFAULT_CATALOG: tuple[GpuSpec, ...] = (
    GpuSpec(
        "NVIDIA RTX A5000",
        "RTX A5000",
        24,
        8192,
        _d("0.27"),
        _d("0.16"),
        _d("0.14"),
        _d("0.11"),
        vcpus_per_gpu=9,
        ram_gb_per_gpu=25,
    ),
    GpuSpec(
        "NVIDIA GeForce RTX 4090",
        "RTX 4090",
        24,
        16384,
        _d("0.59"),
        _d("0.34"),
        _d("0.35"),
        _d("0.20"),
        vcpus_per_gpu=6,
        ram_gb_per_gpu=41,
    ),
    GpuSpec(
        "NVIDIA A40", "A40", 48, 10752, _d("0.44"), None, _d("0.26"), None, vcpus_per_gpu=9, ram_gb_per_gpu=50
    ),
    GpuSpec(
        "NVIDIA L40S",
        "L40S",
        48,
        18176,
        _d("0.86"),
        _d("0.79"),
        _d("0.52"),
        _d("0.47"),
        vcpus_per_gpu=16,
        ram_gb_per_gpu=62,
    ),
    GpuSpec(
        "NVIDIA A100 80GB PCIe",
        "A100 PCIe",
        80,
        6912,
        _d("1.79"),
        _d("1.19"),
        _d("1.05"),
        _d("0.72"),
        vcpus_per_gpu=8,
        ram_gb_per_gpu=117,
    ),
    GpuSpec(
        "NVIDIA A100-SXM4-80GB",
        "A100 SXM",
        80,
        6912,
        _d("1.79"),
        _d("1.39"),
        _d("1.05"),
        _d("0.83"),
        vcpus_per_gpu=16,
        ram_gb_per_gpu=125,
    ),
    GpuSpec(
        "NVIDIA H100 PCIe",
        "H100 PCIe",
        80,
        14592,
        _d("2.89"),
        _d("1.99"),
        _d("1.70"),
        _d("1.20"),
        vcpus_per_gpu=16,
        ram_gb_per_gpu=188,
    ),
    GpuSpec(
        "NVIDIA H100 80GB HBM3",
        "H100 SXM",
        80,
        16896,
        _d("3.99"),
        _d("2.69"),
        _d("2.40"),
        _d("1.60"),
        vcpus_per_gpu=20,
        ram_gb_per_gpu=125,
    ),
    GpuSpec(
        "NVIDIA H100 NVL",
        "H100 NVL",
        94,
        16896,
        _d("3.19"),
        _d("2.59"),
        _d("1.90"),
        _d("1.55"),
        vcpus_per_gpu=16,
        ram_gb_per_gpu=94,
    ),
)
