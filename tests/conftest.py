"""Shared test settings: deterministic, single-threaded torch for stable timings on CI."""

import os

import torch

os.environ.setdefault("MUJOCO_GL", "egl")
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
