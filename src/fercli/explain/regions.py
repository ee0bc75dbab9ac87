"""How well saliency maps find the features that carry an expression, where those are known.

The built-in synthetic faces are drawn from their brows, eyes and mouth (data/synthetic.py), so the
generator knows where each face's evidence lies (about 12% of the image). Two scores per method:
  mass      share of the map's absolute attribution inside the feature regions, averaged over faces;
            a map spread evenly over the image scores the regions' area share
  pointing  share of faces whose strongest pixel (largest |attribution|) lies inside a region (the
            pointing game of Zhang et al. 2016); a map that points at random scores that area share too
`chance` is the regions' mean area share: both scores should be far above it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from fercli.infer.model import FerModel


def localisation(maps: np.ndarray, regions: np.ndarray, methods: list[str]) -> dict[str, Any]:
    """maps float [B,M,48,48] (explain()'s), regions bool [B,48,48] -> {"chance", "faces", per method
    {"mass", "pointing"}}."""
    strength = np.abs(maps).reshape(len(maps), len(methods), -1)  # [B,M,P]
    inside = regions.reshape(len(regions), 1, -1)
    total = strength.sum(2)
    mass = np.divide((strength * inside).sum(2), total, out=np.zeros_like(total), where=total > 0)  # [B,M]
    top = strength.argmax(2)  # [B,M]: a blank map points at pixel 0, a corner: never inside
    hit = np.take_along_axis(np.broadcast_to(inside, strength.shape), top[..., None], 2)[..., 0] & (total > 0)
    out: dict[str, Any] = {"chance": float(regions.mean()), "faces": int(len(maps))}
    for m, name in enumerate(methods):
        out[name] = {"mass": float(mass[:, m].mean()), "pointing": float(hit[:, m].mean())}
    return out


def localisation_table(scores: dict[str, Any]) -> str:
    """The scores as a Markdown table, methods as rows."""
    lines = ["| method | attribution mass inside the features | pointing game |", "|---|---|---|"]
    for name, s in scores.items():
        if isinstance(s, dict):
            lines.append(f"| {name} | {100 * s['mass']:.1f}% | {100 * s['pointing']:.1f}% |")
    lines.append(f"| (a map spread evenly, or pointing at random) | {100 * scores['chance']:.1f}% | "
                 f"{100 * scores['chance']:.1f}% |")  # fmt: skip
    return "\n".join(lines)


def synthetic_localisation(model: FerModel, data: Any, idx: np.ndarray, faces: int,
                           seed: int) -> tuple[dict[str, Any], np.ndarray]:  # fmt: skip
    """(localisation of every saliency method, the maps [B,M,48,48]) on faces `idx` of a PreparedData made
    by `fer prep --synthetic faces --seed seed` (whose rows say which generated face each one is)."""
    from fercli.data.synthetic import synthetic_faces_and_regions
    from fercli.explain.saliency import METHODS, explain

    regions = synthetic_faces_and_regions(faces, seed)[2][data.rows[idx]]
    res = explain(model, np.array(data.images[idx]), np.array(data.labels[idx]), list(METHODS), "pred")
    return localisation(res["maps"], regions, list(METHODS)), res["maps"]
