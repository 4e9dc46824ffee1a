"""The one compiled part of loraops; everything else is declared in pyproject.toml.

``bot.faces._native``: dlib's bilinear resize, to the bit, for the HOG pyramid (bot/faces/dlib_hog.py),
and the two-nearest Hamming search of the same-picture check (bot/faces/pictures.py). -O3 vectorises
the resize's inner loop (3.5x faster than -O2); -ffp-contract=off keeps every multiply and add
separate, as dlib's are, so the pixels stay dlib's.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "bot.faces._native",
            sources=["bot/faces/_native.c"],
            extra_compile_args=["-O3", "-ffp-contract=off"],
        )
    ]
)
