"""Students: the :class:`Student` interface, its registry, and the built-in MiniVLA.

pi0 and OFT-style students are listed in :data:`REGISTRY` and imported on first use
(they need transformers' VLM classes)."""

from rocket_vla.policies.minivla import MiniVLA, MiniVLAConfig, action_l1, tokenize
from rocket_vla.policies.student import (
    REGISTRY,
    Student,
    apply_lora,
    build_student,
    load_student,
    student_class,
)

__all__ = ["REGISTRY", "MiniVLA", "MiniVLAConfig", "Student", "action_l1", "apply_lora", "build_student",
           "load_student", "student_class", "tokenize"]
