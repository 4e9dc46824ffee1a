"""Training: presets, config rendering, estimates, the job state machine, pods, worker client, money."""
