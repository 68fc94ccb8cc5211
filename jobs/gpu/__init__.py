"""Generative models on the workers: the model catalogue (plain data, importable by the web
tier without torch), the pipeline loader and cache, and the one small interface the
actions call (``generate_images``, ``generate_frames``).

Only ``loader`` and ``pipeline`` import torch and diffusers, and only on a worker that runs
a generation job; install them with the ``[gpu]`` extra.
"""
