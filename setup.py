"""The one compiled part of loraops; everything else is declared in pyproject.toml.

``bot.faces._dlib_resize``: dlib's bilinear resize, to the bit, for the HOG pyramid
(bot/faces/dlib_hog.py). -O3 vectorises its inner loop (3.5x faster than -O2); -ffp-contract=off keeps
every multiply and add separate, as dlib's are, so the pixels stay dlib's.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "bot.faces._dlib_resize",
            sources=["bot/faces/_dlib_resize.c"],
            extra_compile_args=["-O3", "-ffp-contract=off"],
        )
    ]
)
