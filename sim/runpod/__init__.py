"""RunPod simulator: the GraphQL API as the ``runpod`` SDK sends it, pods that boot, and the pod proxy."""

from sim.runpod.catalog import DEFAULT_CATALOG, GpuSpec
from sim.runpod.clock import SimClock
from sim.runpod.process import PodLauncher, worker_command, worker_launcher
from sim.runpod.server import (
    NO_CAPACITY,
    GraphQLCall,
    ProxyCall,
    RunPodSim,
    SimPod,
)

__all__ = [
    "DEFAULT_CATALOG",
    "NO_CAPACITY",
    "GpuSpec",
    "GraphQLCall",
    "PodLauncher",
    "ProxyCall",
    "RunPodSim",
    "SimClock",
    "SimPod",
    "worker_command",
    "worker_launcher",
]
