"""Train a small VGGT-architecture geometry teacher on collected LIBERO frames.

Why this exists: offline runs need a teacher whose features carry 3D structure, and the
only way to put 3D structure into a small network without downloading VGGT-1B is to train
it, as VGGT was trained, to predict per-pixel depth and world points for several views of
one scene at once. LIBERO collection (``rocket collect``) records exactly the ground truth
needed: metric depth and camera intrinsics/extrinsics for the agent-view and wrist cameras.

Recipe (what :func:`train_geometry` does):

* **Samples** are the two cameras of one recorded step, stacked as a 2-view input
  ``[agentview, eye_in_hand]`` (VGGT's multi-view setting; view 0 is the reference).
* **Targets** per view: metric depth, and world points expressed in the reference
  (agent-view) camera frame, VGGT's convention. Points come from depth by
  :func:`unproject_depth` (``X_cam = d * K^-1 [u, v, 1]``) and the camera-to-world
  extrinsics (:func:`relative_transform`). Targets are sampled at ``target_size`` (nearest
  pixel centre of the full-resolution maps, so every target is a true surface point);
  the dense heads predict at that size, which keeps the CPU cost in the aggregator.
* **Loss**: :func:`rocket_vla.teachers.vggt_heads.geometry_loss` (confidence-weighted
  depth + point errors). AdamW, linear warm-up then cosine decay, gradient clipping.
* **Input sizes**: the native size is ``input_size`` (112 -> 8x8 patches); every
  ``small_every``-th step runs at ``small_size`` (56 -> 4x4) so that a run that asks the
  teacher for 56-px inputs (the training default) still gets features it was trained on.
* **Held-out split by episode** (seeded), never by frame: neighbouring frames of one
  episode are nearly identical, so a frame split would measure memorisation.
* **Baselines** on the same held-out pixels: the best constant depth per camera fitted on
  the training frames (each metric gets its own optimum, the mean for RMSE and the
  1/d-weighted median for abs-rel, so the baseline is as strong as a constant can be), and a *single-view
  variant*: the same model, recipe and targets (depth, and world points in the agent-view
  frame), but every camera image is its own 1-view sample, so any gain of the teacher over
  it is what seeing the other camera adds.
* **Metrics** per camera and pooled: depth abs-rel and RMSE in each camera's own frame;
  the world-point error (metres, agent-view frame); and the *scene-frame depth*, the
  z-coordinate of the predicted world points (how far each surface lies along the
  agent-view camera's axis). Own-frame depth of LIBERO's fixed cameras is nearly determined
  by one image; where the wrist camera's surfaces lie in the scene depends on the hand's
  pose, which the agent-view image shows, so that is where a second view can pay.
"""

from rocket_vla.teachers.geometry.camera import relative_transform, transform_points, unproject_depth
from rocket_vla.teachers.geometry.card import render_model_card
from rocket_vla.teachers.geometry.config import GeometryTrainConfig
from rocket_vla.teachers.geometry.data import CAMERAS, PairFrames, load_pairs, split_by_episode, view_batch
from rocket_vla.teachers.geometry.evaluate import (
    depth_metrics,
    evaluate_constant,
    evaluate_model,
    fit_constant_depth,
    frame_scale_error,
    frame_scale_ratios,
    predict_frames,
)
from rocket_vla.teachers.geometry.loop import TrainLog, train_model
from rocket_vla.teachers.geometry.model import predict, round_aggregator_fp16
from rocket_vla.teachers.geometry.run import GeometryRun, save_run, train_geometry

__all__ = [
    "CAMERAS",
    "GeometryRun",
    "GeometryTrainConfig",
    "PairFrames",
    "TrainLog",
    "depth_metrics",
    "evaluate_constant",
    "evaluate_model",
    "fit_constant_depth",
    "frame_scale_error",
    "frame_scale_ratios",
    "load_pairs",
    "predict",
    "predict_frames",
    "relative_transform",
    "render_model_card",
    "round_aggregator_fp16",
    "save_run",
    "split_by_episode",
    "train_geometry",
    "train_model",
    "transform_points",
    "unproject_depth",
    "view_batch",
]
