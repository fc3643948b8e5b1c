"""Students: the :class:`Student` interface, its registry, and the built-in MiniVLA.

pi0, pi0.5 and OFT-style students register themselves in their own modules, which
:func:`student_class` imports on first use (they need transformers' VLM classes)."""

from rocket_vla.policies.losses import action_l1
from rocket_vla.policies.minivla import MiniVLA, MiniVLAConfig, tokenize
from rocket_vla.policies.student import (
    REGISTRY,
    Student,
    apply_lora,
    build_student,
    discover_students,
    load_student,
    register_student,
    student_class,
)

__all__ = ["REGISTRY", "MiniVLA", "MiniVLAConfig", "Student", "action_l1", "apply_lora", "build_student",
           "discover_students", "load_student", "register_student", "student_class", "tokenize"]
