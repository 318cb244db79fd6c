"""The keyframe options that `segment`, `eval` and `benchmark` share, and how they are shown."""

from __future__ import annotations

from typing import Any

from ..segmenter import KeyframePolicy

_DEFAULT = KeyframePolicy()
KEYFRAME_HELP = ("A keyframe every K frames, or auto: a new keyframe where TFC's similarity to the "
                 "keyframe says the scene has changed (a scene cut, fast motion), tuned by the "
                 "four options below.")
MAX_KEYFRAME_HELP = (f"auto: a keyframe at the latest after this many frames "
                     f"(default {_DEFAULT.max_keyframe_interval}).")
MIN_KEYFRAME_HELP = (f"auto: at least this many frames from a keyframe to one chosen by "
                     f"similarity (default {_DEFAULT.min_keyframe_interval}).")
SIMILARITY_HELP = (f"auto: a point has changed when its similarity to the keyframe (cosine, -1..1) "
                   f"is below this (default {_DEFAULT.keyframe_similarity:g}).")
CHANGED_SHARE_HELP = (f"auto: a new keyframe when more than this share (0..1) of the points have "
                      f"changed (default {_DEFAULT.keyframe_changed_share:g}).")

SHOWN = 24  # keyframe indices printed; all of them are in --json


def describe_keyframes(s: dict[str, Any]) -> str:
    """"12 (mode tfc, auto: 3 on a change, 9 at the maximum interval; mean interval 8.4)"."""
    mean = s.get("mean_keyframe_interval")
    mean_text = "-" if mean is None else f"{mean:.1f}"
    policy = s.get("keyframe_policy")
    if policy is None:
        how = f"every {s['keyframe_interval']}"
    else:
        how = (f"auto: {s['keyframes_on_change']} on a change (similarity < {policy['keyframe_similarity']:g} "
               f"on > {policy['keyframe_changed_share']:.0%} of points), at most "
               f"{policy['max_keyframe_interval']} apart")
    return f"{s['keyframes']} (mode {s['mode']}, {how}; mean interval {mean_text})"


def keyframe_list(indices: list[int]) -> str:
    """The first keyframe indices, "0, 16, 21, ... (+40 more, all in --json)"."""
    text = ", ".join(map(str, indices[:SHOWN]))
    if len(indices) > SHOWN:
        text += f", ... (+{len(indices) - SHOWN} more, all in --json)"
    return text or "-"
