"""The program that runs inside the RunPod pod. Shares only ``worker.protocol`` with the bot."""
