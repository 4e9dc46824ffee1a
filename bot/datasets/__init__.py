"""Datasets: gathering (sources, zips, ingest, dedupe), contact sheets and exclusions.

Creating and listing datasets (name rules) lives in ``bot.datasets.manage``.
"""
