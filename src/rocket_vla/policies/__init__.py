"""Students: the built-in MiniVLA (and, later, adapters for real VLA backbones)."""

from rocket_vla.policies.minivla import MiniVLA, MiniVLAConfig, action_l1, tokenize

__all__ = ["MiniVLA", "MiniVLAConfig", "action_l1", "tokenize"]
