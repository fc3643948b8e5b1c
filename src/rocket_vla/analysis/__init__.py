"""Diagnostics behind the method: CKA layer maps, gradient conflict, projector similarity,
layer importance, and their plots. Everything works on plain tensors (tapped student
states, teacher features), so any student/teacher pair the library supports can be
profiled; :mod:`rocket_vla.commands.profile` wires it to checkpoints and data.
"""

from rocket_vla.analysis.cka import (
    CKAResult,
    StreamingCKA,
    batch_sizes,
    cka_from_grams,
    hsic_matrix,
    linear_cka,
    sample_gram,
)
from rocket_vla.analysis.grad_conflict import (
    GradConflict,
    ParamGroup,
    average,
    cosine_matrix,
    grad_conflict,
    gradient_matrix,
    pair_losses,
)
from rocket_vla.analysis.importance import LayerImportance
from rocket_vla.analysis.pairs import hungarian_k, recommend_pairs
from rocket_vla.analysis.projector_sim import ProjectorSimilarity

__all__ = [
    "CKAResult", "GradConflict", "LayerImportance", "ParamGroup", "ProjectorSimilarity",
    "StreamingCKA", "average", "batch_sizes", "cka_from_grams", "cosine_matrix",
    "grad_conflict", "gradient_matrix", "hsic_matrix", "hungarian_k", "linear_cka",
    "pair_losses", "recommend_pairs", "sample_gram",
]
