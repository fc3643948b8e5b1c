"""What a run reads besides its config, fingerprinted, so a resume on other inputs is refused."""

from __future__ import annotations

from typing import Any

from rocket_vla.errors import RocketError
from rocket_vla.train.config import TrainConfig


def input_fingerprints(cfg: TrainConfig, teacher: Any) -> dict[str, str | None]:
    """What the run reads besides its config: the dataset's files (names and sizes -- cheap
    enough for any dataset; the teacher cache compares full contents) and the teacher's
    fingerprint (weights behind a name like ``tiny`` can change). None where unknown."""
    dataset = None
    if cfg.dataset:
        import hashlib

        from rocket_vla.data.episodes import dataset_files

        digest = hashlib.blake2b(digest_size=12)
        for path in dataset_files(cfg.dataset):
            digest.update(f"{path.name}:{path.stat().st_size};".encode())
        dataset = digest.hexdigest()
    fingerprint = None
    if teacher is not None:
        spec = getattr(getattr(teacher, "cache", None), "spec", None)
        inner = getattr(teacher, "teacher", teacher)
        if spec is not None:
            fingerprint = spec.teacher
        elif callable(getattr(inner, "fingerprint", None)):
            fingerprint = str(inner.fingerprint())
    return {"dataset": dataset, "teacher": fingerprint}


def check_same_inputs(saved: dict[str, Any] | None, current: dict[str, Any], ckpt: Any) -> None:
    """Refuse to resume a checkpoint trained on another dataset or teacher (where both known)."""
    changed = [k for k, v in (saved or {}).items() if v is not None and current.get(k) not in (None, v)]
    if changed:
        raise RocketError(
            f"cannot resume {ckpt}: it was trained with another {' and '.join(changed)}; resume with "
            "the same ones, or start a new run (a new --out_dir folder, or --overwrite)."
        )


def dataset_fingerprint(cfg: TrainConfig) -> str | None:
    """Content fingerprint of the training files (what a teacher cache records), if any."""
    if not cfg.dataset:
        return None
    from rocket_vla.data.episodes import dataset_files
    from rocket_vla.teachers.cache import fingerprint_files

    return fingerprint_files(dataset_files(cfg.dataset))
