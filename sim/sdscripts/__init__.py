"""Stand-in for kohya-ss sd-scripts (pinned v0.10.1) used by tests and the sandbox.

Run as ``python -m sim.sdscripts <train_network.py|sdxl_train_network.py|flux_train_network.py> ARGS``
(like ``python train_network.py ARGS``) or as
``python -m sim.sdscripts accelerate launch [--num_cpu_threads_per_process N ...] <script> ARGS``
(like ``accelerate launch``: the script runs as a child process and any failure becomes accelerate's
``CalledProcessError`` traceback and exit status 1). See ``trainer`` for the failure-mode knobs.
"""
