"""`rocket profile cka|grad|projector|importance`: the paper's four analyses on a checkpoint.

Thin wiring: the flags of each kind are generated from its settings dataclass in
:mod:`rocket_vla.analysis.profile_config`, whose ``run`` writes the JSON/PNG; this prints
where they went (and, for CKA, the recommended pairs as flags and YAML for `rocket train`).
"""

from __future__ import annotations

from collections.abc import Sequence

HELP = "diagnostics: CKA layer map, gradient conflict, projector, importance"


def main(argv: Sequence[str]) -> int:
    from rocket_vla.analysis.profile_config import PROFILES
    from rocket_vla.config_cli import format_pairs, parse_kind

    kind, cfg = parse_kind(argv, PROFILES, "rocket profile")
    data = cfg.run()
    out = cfg.out_dir
    if kind == "cka":
        print(f"# CKA map ({data['estimator']}, {data['num_samples']} samples, "
              f"{data['num_batches']} batches) -> {out}/cka.json, {out}/cka.png")
        for method, pairs in data["pairs"].items():
            print(f"# {method} pairing (index k = stream after block k)")
            print(format_pairs(pairs["student_layers"], pairs["teacher_layers"], "flags"))
            print(format_pairs(pairs["student_layers"], pairs["teacher_layers"], "yaml"))
    elif kind == "grad":
        for r in data["checkpoints"]:
            print(f"{r['label']}: mean inter-pair gradient cosine {r['mean_inter_pair_cosine']:+.3f} "
                  f"over {r['num_params']} parameters, {r['num_batches']} batches")
        print(f"# -> {out}/grad.json, {out}/grad.png")
    elif kind == "projector":
        for r in data["checkpoints"]:
            fit = ", ".join(f"{v:.3f}" for v in r["fit"])
            print(f"{r['label']}: cos(projected, teacher) per pair [{fit}]")
        print(f"# -> {out}/projector.json, {out}/projector_*.png")
    else:
        print(f"# -> {out}/importance.json, {out}/importance.png")
    return 0
