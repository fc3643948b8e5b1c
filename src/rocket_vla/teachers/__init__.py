"""Frozen teachers (VGGT, transformers backbones) and the teacher-feature cache.

Every teacher implements :class:`Teacher`: ``features(frames, layers)`` returns one
``[B, S, h, w, C]`` tensor per requested layer, with the project's layer-index
convention (``k`` = after block ``k``, ``0`` = embeddings, ``-1`` = last block).
"""

from rocket_vla.teachers.base import Teacher, TeacherInput
from rocket_vla.teachers.build import TeacherConfig, build_teacher, teacher_from_spec
from rocket_vla.teachers.cache import FeatureCache
from rocket_vla.teachers.cache_format import CacheSpec, spec_for
from rocket_vla.teachers.fill import FillReport, fill_cache
from rocket_vla.teachers.hf import HFTeacher
from rocket_vla.teachers.tiny import load_tiny_teacher
from rocket_vla.teachers.vggt import VGGTConfig, VGGTTeacher

__all__ = [
    "CacheSpec",
    "FeatureCache",
    "FillReport",
    "HFTeacher",
    "Teacher",
    "TeacherConfig",
    "TeacherInput",
    "VGGTConfig",
    "VGGTTeacher",
    "build_teacher",
    "fill_cache",
    "load_tiny_teacher",
    "spec_for",
    "teacher_from_spec",
]
