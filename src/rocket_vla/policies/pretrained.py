"""Loading a local transformers checkpoint folder as a student's network, checked.

Why a module of its own: every transformers-backed student (pi0, the OFT-style VLMs) loads its
``--student_path`` the same way, and the checks below are what keep a wrong or incomplete
folder from silently training a partly random model.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from pathlib import Path
from typing import Any

from rocket_vla.errors import RocketError


def load_local_pretrained(model_cls: Any, path: str, what: str, fix: str,
                          model_types: Collection[str] | None = None) -> Any:
    """``model_cls.from_pretrained(path, local_files_only=True)`` (nothing is downloaded), checked.

    Why the checks: transformers builds whatever ``config.json`` describes and fills every
    weight the folder lacks with random values, printing only a warning. A folder of another
    model (a Llama given as pi0) would build a random model of that size and train it; a
    badly converted checkpoint would train with random layers. So the folder's ``model_type``
    must be one of ``model_types`` (read before any weight is allocated), and every weight the
    model has must come from the folder with nothing left over (after transformers' own key
    renaming, e.g. LeRobot's ``paligemma_with_expert.*`` names for pi0).
    """
    folder = Path(path)
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise RocketError(f"{folder} has no config.json, so it is not a transformers checkpoint "
                          f"folder; {fix}")
    try:
        model_type = json.loads(config_file.read_text()).get("model_type")
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        raise RocketError(f"{config_file} is not a valid JSON object; re-download or re-export the "
                          f"checkpoint ({fix})") from None
    if model_types is not None and model_type not in model_types:
        raise RocketError(f"{folder} holds a {model_type!r} model, not {what} (model_type must be "
                          f"{' or '.join(repr(t) for t in sorted(model_types))}); {fix}")
    try:
        # mismatched shapes are collected (not raised) so that one message lists every difference
        model, info = model_cls.from_pretrained(path, local_files_only=True, output_loading_info=True,
                                                ignore_mismatched_sizes=True)
    except (OSError, ValueError) as err:
        raise RocketError(f"cannot load {what} from {path} ({type(err).__name__}: {err}); {fix}") from None
    problems = []
    for label, key in (("missing", "missing_keys"), ("unexpected", "unexpected_keys"),
                       ("of another shape", "mismatched_keys")):
        names = sorted(str(k[0] if isinstance(k, tuple) else k) for k in info.get(key) or ())
        if names:
            shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
            problems.append(f"{len(names)} weights {label} ({shown})")
    if problems:
        raise RocketError(f"{folder} does not hold a complete {what}: {'; '.join(problems)}; convert "
                          "the checkpoint to the transformers layout or point --student_path at the "
                          "right folder.")
    return model
