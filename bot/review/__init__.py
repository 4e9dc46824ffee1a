"""Review of training runs (design §2 steps 6–8): scoring samples, grids, charts, ranking, votes, delivery.

Nothing here imports discord: the cog turns the texts and images made here into messages. Rendering
functions are synchronous and CPU-bound; async callers run them with ``asyncio.to_thread``.
"""
