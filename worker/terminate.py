"""Self-termination through the RunPod SDK (``terminate_pod`` with the pod-scoped key).

The SDK reads ``RUNPOD_API_BASE_URL`` on every call, so the simulator and the tests redirect it with
the environment alone. ``terminate_pod`` takes no api_key argument; it uses the module-global
``runpod.api_key``. A failure is logged and ignored: the worker exits anyway, and the bot's own
terminate call and the hard deadline are the other two guarantees (design §5).
"""

from __future__ import annotations

import asyncio
import logging

log = logging.getLogger(__name__)

TERMINATE_TIMEOUT_SECONDS = 45.0


def _terminate(pod_id: str, api_key: str) -> None:
    import runpod  # heavy-ish import, only needed at the very end

    runpod.api_key = api_key
    runpod.terminate_pod(pod_id)


async def terminate_self(pod_id: str | None, api_key: str | None) -> bool:
    """True when RunPod accepted the terminate call."""
    if not pod_id or not api_key:
        log.warning("not terminating the pod: RUNPOD_POD_ID or RUNPOD_API_KEY is not set")
        return False
    try:
        await asyncio.wait_for(asyncio.to_thread(_terminate, pod_id, api_key), TERMINATE_TIMEOUT_SECONDS)
    except Exception as exc:  # any SDK, network or timeout error: log it and exit anyway
        log.error("pod self-termination failed (%s: %s); exiting anyway", type(exc).__name__, exc)
        return False
    log.info("pod %s: terminate requested", pod_id)
    return True
