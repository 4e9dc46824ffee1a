"""RunPod simulator: the GraphQL API as the ``runpod`` SDK sends it, pods that boot, and the pod proxy."""

from sim.runpod.billing import Meter
from sim.runpod.catalog import DEFAULT_CATALOG, GpuSpec
from sim.runpod.clock import SimClock
from sim.runpod.process import PodLauncher, worker_command, worker_launcher
from sim.runpod.server import (
    GENERIC_ERROR,
    NO_CAPACITY,
    NO_CAPACITY_DISK,
    GraphQLCall,
    ProxyCall,
    RunPodSim,
    SimPod,
)

__all__ = [
    "DEFAULT_CATALOG",
    "GENERIC_ERROR",
    "NO_CAPACITY",
    "NO_CAPACITY_DISK",
    "GpuSpec",
    "GraphQLCall",
    "Meter",
    "PodLauncher",
    "ProxyCall",
    "RunPodSim",
    "SimClock",
    "SimPod",
    "worker_command",
    "worker_launcher",
]
