"""Procedural face renderer in pure NumPy (no TensorFlow).

Every identity owns a fixed face geometry (face outline, ears, hair shape, eye
spacing and size, brows, nose, mouth, marks, facial hair) and skin/hair colour.
Every image of that identity adds the nuisances real photos have: pose
(in-plane rotation, yaw, scale, shift), lighting and colour cast, expression,
background, clothing, accessories, occluders, blur and noise. Colour and layout
therefore vary within an identity, so identity has to be learned from shape.

Identities come in families of 4-8 members that share skin tone, usually hair
colour, and part of their geometry, like relatives in a photo album.

Shapes are drawn in a canonical face frame ([-1, 1] across the image at scale
1) with soft edges one pixel wide, which anti-aliases without supersampling.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Sequence

import numpy as np

FAMILY_SIZE_RANGE = (4, 8)
# Share of each geometric trait's variance that family members have in common.
FAMILY_RESEMBLANCE = 0.2

# Seed-sequence tags keep the random streams of different purposes apart.
_FAMILY_STREAM = 1
_IDENTITY_STREAM = 2
_IMAGE_STREAM = 3
_PARTITION_STREAM = 4

_LIGHT_SKIN = np.array([0.97, 0.80, 0.68])
_DARK_SKIN = np.array([0.33, 0.20, 0.13])
_HAIR_PALETTE = np.array([
    [0.08, 0.06, 0.05],  # black
    [0.25, 0.15, 0.08],  # dark brown
    [0.50, 0.32, 0.16],  # brown
    [0.85, 0.70, 0.40],  # blond
    [0.60, 0.22, 0.08],  # red
    [0.70, 0.70, 0.70],  # grey
])
_IRIS_PALETTE = np.array([
    [0.30, 0.18, 0.08], [0.12, 0.08, 0.05], [0.25, 0.45, 0.75],
    [0.30, 0.50, 0.30], [0.45, 0.50, 0.55],
])

# Continuous geometric traits: name -> (centre, spread). A trait's value is
# centre + spread * z with z ~ N(0, 1) clipped to +-2.2, z partly shared by a
# family. Units are the canonical frame (image half-width at scale 1).
_GEOMETRY_TRAITS = {
    "face_half_width": (0.50, 0.072),
    "face_half_height": (0.64, 0.072),
    "jaw_exponent": (2.2, 0.59),      # <2 pointed chin, >2 square jaw
    "face_centre_y": (0.02, 0.039),
    "ear_size": (0.11, 0.039),
    "ear_height": (0.0, 0.078),
    "hairline_height": (0.55, 0.29),  # fraction of face half-height above centre
    "hairline_side_drop": (0.5, 0.45),
    "hairline_tilt": (0.0, 0.2),     # side part / asymmetry
    "hair_volume": (0.10, 0.078),
    "hair_length": (0.35, 0.59),      # <0 no back hair, >1 shoulder length
    "hair_wave": (0.0, 0.046),
    "eye_spacing": (0.20, 0.046),     # half the distance between eye centres
    "eye_height": (-0.10, 0.065),
    "eye_half_width": (0.085, 0.022),
    "eye_half_height": (0.042, 0.014),
    "eye_tilt": (0.0, 0.18),          # radians
    "brow_gap": (0.10, 0.033),
    "brow_thickness": (0.04, 0.016),
    "brow_tilt": (0.0, 0.23),
    "brow_curvature": (1.2, 1.6),
    "brow_length": (0.11, 0.029),
    "nose_length": (0.22, 0.065),
    "nose_width": (0.09, 0.033),
    "mouth_y": (0.33, 0.058),
    "mouth_half_width": (0.15, 0.046),
    "mouth_thickness": (0.05, 0.021),
    "mouth_curvature": (0.4, 1.2),
}


@dataclasses.dataclass(frozen=True)
class FamilyTraits:
    """What members of one family have in common."""

    family: int
    skin_tone: float                 # 0 light .. 1 dark
    hair_colour_index: int
    geometry_z: dict                 # trait name -> shared standard-normal draw


@dataclasses.dataclass(frozen=True)
class IdentityParams:
    """Fixed appearance of one identity (all of its images share it)."""

    family: int
    skin_rgb: tuple
    hair_rgb: tuple
    lip_rgb: tuple
    iris_rgb: tuple
    geometry: dict                   # trait name -> value, see _GEOMETRY_TRAITS
    facial_hair: int                 # 0 none, 1 moustache, 2 beard
    mole: tuple | None               # (u, v, radius) on the face, or None
    wears_glasses: bool


@dataclasses.dataclass(frozen=True)
class NuisanceConfig:
    """How strongly each image departs from the identity's canonical look."""

    rotation_deg: float = 8.0
    scale_range: tuple = (0.93, 1.03)
    shift: float = 0.04
    yaw: float = 0.35
    lighting: float = 0.55
    colour_cast: float = 0.06
    expression: float = 0.6
    blur_sigma_px: float = 0.5
    noise_std: float = 0.02
    occluder_prob: float = 0.07
    accessory_prob: float = 0.05
    # Background and clothing colours: 1 = uniformly random, 0 = neutral grey.
    scene: float = 1.0

    def scaled(self, strength: float) -> "NuisanceConfig":
        """Return a copy with all variation multiplied by `strength` (0 = none)."""
        low, high = self.scale_range
        return NuisanceConfig(
            rotation_deg=self.rotation_deg * strength,
            scale_range=(1 - (1 - low) * strength, 1 + (high - 1) * strength),
            shift=self.shift * strength,
            yaw=self.yaw * strength,
            lighting=self.lighting * strength,
            colour_cast=self.colour_cast * strength,
            expression=self.expression * strength,
            blur_sigma_px=self.blur_sigma_px * strength,
            noise_std=self.noise_std * strength,
            occluder_prob=self.occluder_prob * strength,
            accessory_prob=self.accessory_prob * strength,
            scene=self.scene * strength,
        )


DEFAULT_NUISANCE = NuisanceConfig()
NO_NUISANCE = DEFAULT_NUISANCE.scaled(0.0)


@dataclasses.dataclass(frozen=True)
class Nuisance:
    """Concrete per-image nuisance values drawn from a NuisanceConfig."""

    rotation: float
    scale: float
    shift: tuple
    yaw: float
    light_direction: tuple
    light_strength: float
    gain: float
    cast: tuple
    gamma: float
    background: tuple
    background_gradient: tuple
    clothing_rgb: tuple
    smile: float
    mouth_open: float
    eye_openness: float
    brow_raise: float
    glasses: bool
    sunglasses: bool
    hat_rgb: tuple | None
    occluder: tuple | None           # (u, v, half_w, half_h, angle, rgb)
    blur_sigma_px: float
    noise_std: float
    noise_seed: int


@dataclasses.dataclass(frozen=True)
class RenderedSplit:
    """Images of a block of identities, labelled 0..num_identities-1."""

    images: np.ndarray               # (N, S, S, 3) uint8
    labels: np.ndarray               # (N,) int64, identity within the split
    families: np.ndarray             # (N,) int64, family within the split
    identities: list                 # IdentityParams per label


# --------------------------------------------------------------------------
# Identity sampling


def sample_family(rng: np.random.Generator, family: int) -> FamilyTraits:
    """Draw the traits a family's members share."""
    return FamilyTraits(
        family=family,
        skin_tone=float(rng.beta(1.3, 1.3)),
        hair_colour_index=int(rng.integers(len(_HAIR_PALETTE))),
        geometry_z={name: float(rng.standard_normal()) for name in _GEOMETRY_TRAITS},
    )


def sample_identity(rng: np.random.Generator,
                    family: FamilyTraits | None = None) -> IdentityParams:
    """Draw one identity, resembling `family` when given."""
    if family is None:
        family = sample_family(rng, family=0)
    shared = np.sqrt(FAMILY_RESEMBLANCE)
    own = np.sqrt(1.0 - FAMILY_RESEMBLANCE)
    geometry = {}
    for name, (centre, spread) in _GEOMETRY_TRAITS.items():
        z = shared * family.geometry_z[name] + own * rng.standard_normal()
        geometry[name] = centre + spread * float(np.clip(z, -2.2, 2.2))

    tone = float(np.clip(family.skin_tone + rng.normal(0.0, 0.05), 0.0, 1.0))
    skin = (1 - tone) * _LIGHT_SKIN + tone * _DARK_SKIN
    skin = skin * np.exp(rng.normal(0.0, 0.03, size=3))
    # Most relatives share hair colour; some differ (dyed, greying).
    hair_index = family.hair_colour_index if rng.random() < 0.7 else int(
        rng.integers(len(_HAIR_PALETTE)))
    hair = _HAIR_PALETTE[hair_index] * np.exp(rng.normal(0.0, 0.08, size=3))
    lip = skin * np.array([0.85, 0.55, 0.55]) * rng.uniform(0.85, 1.05)
    iris = _IRIS_PALETTE[rng.integers(len(_IRIS_PALETTE))]

    mole = None
    if rng.random() < 0.35:
        mole = (float(rng.uniform(-0.3, 0.3)), float(rng.uniform(-0.2, 0.45)),
                float(rng.uniform(0.018, 0.03)))
    facial_hair = int(rng.choice(3, p=[0.7, 0.15, 0.15]))
    return IdentityParams(
        family=family.family,
        skin_rgb=_as_tuple(np.clip(skin, 0, 1)),
        hair_rgb=_as_tuple(np.clip(hair, 0, 1)),
        lip_rgb=_as_tuple(np.clip(lip, 0, 1)),
        iris_rgb=_as_tuple(iris),
        geometry=geometry,
        facial_hair=facial_hair,
        mole=mole,
        wears_glasses=bool(rng.random() < 0.12),
    )


def _as_tuple(values) -> tuple:
    return tuple(float(x) for x in values)


# --------------------------------------------------------------------------
# Nuisance sampling


def sample_nuisance(rng: np.random.Generator, identity: IdentityParams,
                    config: NuisanceConfig = DEFAULT_NUISANCE) -> Nuisance:
    """Draw the per-image pose, lighting, expression and clutter."""
    light_angle = rng.uniform(0, 2 * np.pi)
    expression = config.expression
    occluder = None
    if rng.random() < config.occluder_prob:
        occluder = (float(rng.uniform(-0.6, 0.6)), float(rng.uniform(-0.3, 0.9)),
                    float(rng.uniform(0.12, 0.35)), float(rng.uniform(0.08, 0.25)),
                    float(rng.uniform(0, np.pi)), _as_tuple(rng.uniform(0, 1, 3)))
    hat = None
    if rng.random() < config.accessory_prob:
        hat = _as_tuple(rng.uniform(0, 1, 3))
    return Nuisance(
        rotation=float(np.deg2rad(rng.uniform(-1, 1) * config.rotation_deg)),
        scale=float(rng.uniform(*config.scale_range)),
        shift=_as_tuple(rng.uniform(-1, 1, 2) * config.shift),
        yaw=float(rng.uniform(-1, 1) * config.yaw),
        light_direction=(float(np.cos(light_angle)), float(np.sin(light_angle))),
        light_strength=float(rng.uniform(0, 0.6) * config.lighting),
        gain=float(np.exp(rng.normal(0, 0.25 * config.lighting))),
        cast=_as_tuple(np.exp(rng.normal(0, config.colour_cast, 3))),
        gamma=float(np.exp(rng.normal(0, 0.2 * config.lighting))),
        background=_as_tuple(0.5 + config.scene * rng.uniform(-0.5, 0.5, 3)),
        background_gradient=_as_tuple(rng.normal(0, 0.25, 2) * config.scene),
        clothing_rgb=_as_tuple(0.5 + config.scene * rng.uniform(-0.5, 0.5, 3)),
        smile=float(rng.uniform(-0.6, 1.4) * expression),
        mouth_open=float(max(0.0, rng.uniform(-1.5, 1.0)) * expression),
        eye_openness=float(1.0 - expression * (
            rng.uniform(0.6, 0.85) if rng.random() < 0.1 else rng.uniform(-0.15, 0.3))),
        brow_raise=float(rng.uniform(-0.03, 0.05) * expression),
        glasses=identity.wears_glasses and rng.random() < 0.8,
        sunglasses=bool(rng.random() < config.accessory_prob * 0.6),
        hat_rgb=hat,
        occluder=occluder,
        blur_sigma_px=float(rng.uniform(0, 1) ** 2 * config.blur_sigma_px),
        noise_std=float(rng.uniform(0.2, 1.0) * config.noise_std),
        noise_seed=int(rng.integers(2**31)),
    )


# --------------------------------------------------------------------------
# Soft-edged primitives in the canonical frame. Arrays have a leading batch
# axis (images of one identity); per-image scalars are shaped (N, 1, 1) so
# one NumPy call draws a shape into every image at once.


def _coverage(signed_distance: np.ndarray, pixel) -> np.ndarray:
    """Coverage in [0, 1] from a signed distance (negative inside).

    A linear ramp one pixel wide is a cheap stand-in for supersampling.
    """
    return np.clip(0.5 - signed_distance / pixel, 0.0, 1.0)


def _weak(value):
    """Plain Python float for scalars, so float32 arrays are not promoted to float64."""
    return float(value) if np.ndim(value) == 0 else value


def _rotate(du, dv, angle):
    if np.ndim(angle) == 0 and angle == 0.0:
        return du, dv
    c, s = _weak(np.cos(angle)), _weak(np.sin(angle))
    return c * du + s * dv, -s * du + c * dv


def _ellipse_sd(u, v, cx, cy, ax, ay, angle=0.0, exponent=2.0):
    """Approximate signed distance to a (super)ellipse."""
    du, dv = _rotate(u - cx, v - cy, angle)
    if exponent == 2.0:
        radius = np.sqrt((du / ax) ** 2 + (dv / ay) ** 2)
    else:
        radius = (np.abs(du / ax) ** exponent + np.abs(dv / ay) ** exponent) ** (1 / exponent)
    return (radius - 1.0) * _weak(np.minimum(ax, ay))


def _band_sd(u, v, cx, cy, half_length, half_thickness, curvature, angle=0.0):
    """Signed distance to a curved stroke tapering to points (brows, lips)."""
    du, dv = _rotate(u - cx, v - cy, angle)
    along = du / half_length
    # Positive curvature bends the ends upwards (v grows downwards), a smile.
    across = dv + curvature * half_length * (along ** 2 - 1.0 / 3.0)
    taper = np.sqrt(np.clip(1.0 - along ** 2, 0.0, 1.0))
    return np.maximum(np.abs(across) - half_thickness * taper,
                      (np.abs(along) - 1.0) * half_thickness)


def _polygon_sd(u, v, vertices: Sequence[tuple]):
    """Signed distance (max over edges) to a convex polygon, vertices clockwise
    on screen (y down)."""
    distance = None
    count = len(vertices)
    for i in range(count):
        (x0, y0), (x1, y1) = vertices[i], vertices[(i + 1) % count]
        ex, ey = x1 - x0, y1 - y0
        norm = _weak(np.hypot(ex, ey))
        edge = ((u - x0) * (-ey) + (v - y0) * ex) / norm
        distance = edge if distance is None else np.maximum(distance, edge)
    return distance


def _paint(canvas, alpha, colour, opacity=1.0):
    """Alpha-composite a colour (rgb triple or (N, 3, 1, 1) array) onto the canvas."""
    colour = np.asarray(colour, dtype=np.float32)
    if colour.ndim == 1:
        colour = colour.reshape(3, 1, 1)
    weight = (alpha * opacity)[:, None]
    canvas += weight * (colour - canvas)


# --------------------------------------------------------------------------
# Face drawing


class _Batch:
    """Nuisances of N images as arrays: scalars (N, 1, 1), colours (N, 3, 1, 1)."""

    def __init__(self, nuisances: Sequence[Nuisance]):
        def column(values, width=None):
            array = np.asarray(values, dtype=np.float32)
            return array.reshape((len(nuisances),) + ((width,) if width else ()) + (1, 1))

        for field in ("rotation", "scale", "yaw", "light_strength", "gain", "gamma", "smile",
                      "mouth_open", "eye_openness", "brow_raise", "noise_std"):
            setattr(self, field, column([getattr(n, field) for n in nuisances]))
        for field in ("cast", "background", "clothing_rgb"):
            setattr(self, field, column([getattr(n, field) for n in nuisances], 3))
        self.shift_x = column([n.shift[0] for n in nuisances])
        self.shift_y = column([n.shift[1] for n in nuisances])
        self.light_x = column([n.light_direction[0] for n in nuisances])
        self.light_y = column([n.light_direction[1] for n in nuisances])
        self.gradient_x = column([n.background_gradient[0] for n in nuisances])
        self.gradient_y = column([n.background_gradient[1] for n in nuisances])
        self.glasses = column([n.glasses for n in nuisances])
        self.sunglasses = column([n.sunglasses for n in nuisances])
        self.has_hat = column([n.hat_rgb is not None for n in nuisances])
        self.hat_rgb = column([n.hat_rgb or (0, 0, 0) for n in nuisances], 3)
        self.has_occluder = column([n.occluder is not None for n in nuisances])
        occluders = [n.occluder or (0, 0, 1, 1, 0, (0, 0, 0)) for n in nuisances]
        for index, field in enumerate(("occluder_u", "occluder_v", "occluder_half_w",
                                       "occluder_half_h", "occluder_angle")):
            setattr(self, field, column([o[index] for o in occluders]))
        self.occluder_rgb = column([o[5] for o in occluders], 3)
        self.blur_sigma_px = np.array([n.blur_sigma_px for n in nuisances], np.float32)
        self.noise_seeds = [n.noise_seed for n in nuisances]


@functools.lru_cache(maxsize=8)
def _pixel_grid(size: int):
    """Pixel-centre coordinates in [-1, 1], y pointing down, shaped (1, S, S)."""
    axis = (np.arange(size, dtype=np.float32) + 0.5) / size * 2.0 - 1.0
    y, x = np.meshgrid(axis, axis, indexing="ij")
    return x[None], y[None]


def _canonical_coordinates(size: int, batch: _Batch):
    """Map image pixels into the face frame by inverting the pose transform."""
    x, y = _pixel_grid(size)
    u, v = _rotate(x - batch.shift_x, y - batch.shift_y, batch.rotation)
    return u / batch.scale, v / batch.scale, 2.0 / size / batch.scale


def _draw_background(canvas, x, y, batch):
    shade = (1.0 + batch.gradient_x * x + batch.gradient_y * y)[:, None]
    canvas[:] = batch.background * shade


def _draw_back_hair(canvas, u, v, pixel, g, identity, face_x):
    if g["hair_length"] <= 0.0:
        return
    length = g["face_half_height"] * (0.2 + 0.9 * g["hair_length"])
    width = g["face_half_width"] * (1.0 + g["hair_volume"] * 2.0 + 0.08)
    sd = _ellipse_sd(u, v, face_x, g["face_centre_y"] + length * 0.5,
                     width, g["face_half_height"] * 0.55 + length * 0.6)
    _paint(canvas, _coverage(sd, pixel), identity.hair_rgb)


def _draw_neck_and_clothes(canvas, u, v, pixel, g, identity, batch):
    neck_top = g["face_centre_y"] + g["face_half_height"] * 0.5
    neck = _polygon_sd(u, v, [(-0.17, neck_top), (-0.2, 1.3), (0.2, 1.3), (0.17, neck_top)])
    _paint(canvas, _coverage(neck, pixel), np.asarray(identity.skin_rgb) * 0.85)
    shoulders = _ellipse_sd(u, v, 0.0, 1.35, 0.95, 0.5)
    _paint(canvas, _coverage(shoulders, pixel), batch.clothing_rgb)


def _draw_ears(canvas, u, v, pixel, g, identity, face_x, yaw):
    for side in (-1.0, 1.0):
        # The ear on the side the head turns away from shows more.
        visible = 1.0 - 0.6 * np.maximum(0.0, side * yaw)
        cx = face_x + side * (g["face_half_width"] + g["ear_size"] * 0.3 * visible)
        sd = _ellipse_sd(u, v, cx, g["face_centre_y"] + g["ear_height"],
                         g["ear_size"] * 0.55 * visible + 1e-3, g["ear_size"])
        _paint(canvas, _coverage(sd, pixel), np.asarray(identity.skin_rgb) * 0.9)


def _face_outline_sd(u, v, g, face_x):
    """Face outline: an ellipse on top, a superellipse jaw below."""
    cy = g["face_centre_y"]
    upper = _ellipse_sd(u, v, face_x, cy, g["face_half_width"], g["face_half_height"])
    lower = _ellipse_sd(u, v, face_x, cy, g["face_half_width"], g["face_half_height"],
                        exponent=g["jaw_exponent"])
    return np.where(v < cy, upper, lower)


def _draw_beard(canvas, u, v, pixel, g, identity, face_sd):
    if identity.facial_hair != 2:
        return
    beard_top = g["face_centre_y"] + g["mouth_y"] - 0.12
    region = np.maximum(face_sd, beard_top - v)
    _paint(canvas, _coverage(region, pixel), identity.hair_rgb, 0.85)


def _draw_top_hair(canvas, u, v, pixel, g, identity, face_x):
    """Hair over the forehead: inside the hair cap and above the hairline."""
    cy = g["face_centre_y"]
    half_w = g["face_half_width"] * (1.0 + g["hair_volume"])
    half_h = g["face_half_height"] * (1.0 + g["hair_volume"] * 0.8)
    du, dv = u - face_x, v - cy
    wave = g["hair_wave"] * np.sin(9.0 * np.arctan2(dv, du))
    cap = _ellipse_sd(u, v, face_x, cy - g["hair_volume"] * 0.5, half_w, half_h) - wave
    rel_u = du / g["face_half_width"]
    hairline = (-g["hairline_height"] * g["face_half_height"]
                + g["hairline_side_drop"] * g["face_half_height"] * 0.55 * rel_u ** 2
                + g["hairline_tilt"] * rel_u * g["face_half_height"] * 0.5)
    _paint(canvas, _coverage(np.maximum(cap, dv - hairline), pixel), identity.hair_rgb)


def _eye_centre_x(g, face_x, yaw, side):
    # Inner features slide further than the outline under yaw (they sit in front).
    return face_x + yaw * 0.09 + side * g["eye_spacing"] * (1.0 - 0.15 * np.abs(yaw))


def _draw_eyes(canvas, u, v, pixel, g, identity, batch, face_x, yaw):
    for side in (-1.0, 1.0):
        # Under yaw the eye turning away is foreshortened.
        squash = 1.0 - 0.35 * np.maximum(0.0, side * yaw)
        cx = _eye_centre_x(g, face_x, yaw, side)
        cy = g["face_centre_y"] + g["eye_height"]
        half_w = g["eye_half_width"] * squash
        half_h = g["eye_half_height"] * np.maximum(batch.eye_openness, 0.08)
        tilt = -side * g["eye_tilt"]
        sclera_alpha = _coverage(_ellipse_sd(u, v, cx, cy, half_w, half_h, tilt), pixel)
        _paint(canvas, sclera_alpha, (0.93, 0.92, 0.9))
        iris_r = g["eye_half_height"] * 0.95
        iris = _ellipse_sd(u, v, cx + yaw * 0.03, cy, iris_r * squash, iris_r)
        # Eyelids hide the part of the iris outside the eye opening.
        _paint(canvas, _coverage(iris, pixel) * sclera_alpha, identity.iris_rgb)
        pupil = _ellipse_sd(u, v, cx + yaw * 0.03, cy, iris_r * 0.45 * squash, iris_r * 0.45)
        _paint(canvas, _coverage(pupil, pixel) * sclera_alpha, (0.02, 0.02, 0.02))
        lid = _band_sd(u, v, cx, cy - half_h * 0.7, half_w * 1.1, 0.012, -0.3, tilt)
        _paint(canvas, _coverage(lid, pixel), np.asarray(identity.hair_rgb) * 0.6, 0.8)


def _draw_brows(canvas, u, v, pixel, g, identity, batch, face_x, yaw):
    for side in (-1.0, 1.0):
        squash = 1.0 - 0.35 * np.maximum(0.0, side * yaw)
        cx = _eye_centre_x(g, face_x, yaw, side)
        cy = g["face_centre_y"] + g["eye_height"] - g["brow_gap"] - batch.brow_raise
        sd = _band_sd(u, v, cx, cy, g["brow_length"] * squash, g["brow_thickness"] * 0.5,
                      -g["brow_curvature"] * 0.25, side * g["brow_tilt"])
        _paint(canvas, _coverage(sd, pixel), identity.hair_rgb)


def _draw_nose(canvas, u, v, pixel, g, identity, face_x, yaw):
    top = g["face_centre_y"] + g["eye_height"] + 0.02
    tip = top + g["nose_length"]
    cx = face_x + yaw * 0.16
    half = g["nose_width"]
    skin = np.asarray(identity.skin_rgb)
    bridge = _polygon_sd(u, v, [(cx - 0.015, top), (cx - half, tip),
                                (cx + half, tip), (cx + 0.015, top)])
    _paint(canvas, _coverage(bridge, pixel), skin * 0.78, 0.7)
    for side in (-1.0, 1.0):
        nostril = _ellipse_sd(u, v, cx + side * half * 0.55, tip - 0.01, half * 0.35, 0.02)
        _paint(canvas, _coverage(nostril, pixel), skin * 0.4)


def _draw_mouth(canvas, u, v, pixel, g, identity, batch, face_x, yaw):
    cx = face_x + yaw * 0.1
    cy = g["face_centre_y"] + g["mouth_y"]
    half_w = g["mouth_half_width"] * (1.0 - 0.2 * np.abs(yaw)) * (1.0 + 0.08 * batch.smile)
    curvature = 0.25 * (g["mouth_curvature"] + batch.smile)
    if np.any(batch.mouth_open > 0.0):
        opening = _ellipse_sd(u, v, cx, cy + 0.01, half_w * 0.8,
                              g["mouth_thickness"] * 0.4 + 0.06 * batch.mouth_open + 1e-3)
        _paint(canvas, _coverage(opening, pixel) * (batch.mouth_open > 0.0), (0.25, 0.05, 0.05))
    lips = _band_sd(u, v, cx, cy, half_w, g["mouth_thickness"] * 0.5, curvature)
    _paint(canvas, _coverage(lips, pixel), identity.lip_rgb)
    if identity.facial_hair == 1:
        moustache = _band_sd(u, v, cx, cy - g["mouth_thickness"] - 0.03, half_w * 0.9,
                             0.025, -0.3)
        _paint(canvas, _coverage(moustache, pixel), identity.hair_rgb)


def _draw_mole(canvas, u, v, pixel, identity, g, face_x):
    if identity.mole is None:
        return
    mu, mv, radius = identity.mole
    sd = _ellipse_sd(u, v, face_x + mu * g["face_half_width"] * 2,
                     g["face_centre_y"] + mv * g["face_half_height"], radius, radius)
    _paint(canvas, _coverage(sd, pixel), np.asarray(identity.skin_rgb) * 0.35)


def _draw_glasses(canvas, u, v, pixel, g, batch, face_x, yaw):
    worn = np.maximum(batch.glasses, batch.sunglasses)
    if not np.any(worn):
        return
    cy = g["face_centre_y"] + g["eye_height"]
    radius = g["eye_half_width"] * 1.5
    for side in (-1.0, 1.0):
        cx = face_x + yaw * 0.09 + side * g["eye_spacing"]
        lens = _ellipse_sd(u, v, cx, cy, radius, radius * 0.8)
        _paint(canvas, _coverage(lens, pixel) * batch.sunglasses, (0.05, 0.05, 0.07), 0.95)
        rim = np.abs(lens + 0.01) - 0.012
        _paint(canvas, _coverage(rim, pixel) * batch.glasses, (0.1, 0.1, 0.1))
    bridge = _band_sd(u, v, face_x + yaw * 0.09, cy - 0.02,
                      g["eye_spacing"] - radius + 0.02, 0.012, 0.0)
    _paint(canvas, _coverage(bridge, pixel) * worn, (0.1, 0.1, 0.1))


def _draw_hat(canvas, u, v, pixel, g, batch, face_x):
    if not np.any(batch.has_hat):
        return
    top = g["face_centre_y"] - g["face_half_height"] * 0.55
    crown = np.maximum(_ellipse_sd(u, v, face_x, top, g["face_half_width"] * 1.1,
                                   g["face_half_height"] * 0.6), v - top)
    brim = _ellipse_sd(u, v, face_x, top, g["face_half_width"] * 1.45, 0.05)
    _paint(canvas, _coverage(np.minimum(crown, brim), pixel) * batch.has_hat, batch.hat_rgb)


def _draw_occluder(canvas, u, v, pixel, batch):
    if not np.any(batch.has_occluder):
        return
    sd = _ellipse_sd(u, v, batch.occluder_u, batch.occluder_v, batch.occluder_half_w,
                     batch.occluder_half_h, batch.occluder_angle, exponent=4.0)
    _paint(canvas, _coverage(sd, pixel) * batch.has_occluder, batch.occluder_rgb)


def _apply_lighting(canvas, x, y, batch):
    """Directional shading, exposure, white balance and tone curve."""
    shading = np.clip(1.0 + batch.light_strength * (batch.light_x * x + batch.light_y * y),
                      0.2, 2.0)
    canvas *= (shading * batch.gain)[:, None]
    canvas *= batch.cast
    np.clip(canvas, 0.0, 1.0, out=canvas)
    canvas **= batch.gamma[:, None]


def _gaussian_blur(canvas, sigma_px: np.ndarray):
    """Separable Gaussian blur with a per-image sigma (in pixels), edge padded."""
    if np.all(sigma_px < 0.25):
        return canvas
    radius = int(np.ceil(2.5 * sigma_px.max()))
    taps = np.arange(-radius, radius + 1, dtype=np.float32)
    # A negligible sigma gets a one-tap kernel, i.e. no blur.
    sigma = np.where(sigma_px < 0.25, 1e-3, sigma_px)[:, None]
    kernel = np.exp(-0.5 * (taps[None] / sigma) ** 2)
    kernel = (kernel / kernel.sum(axis=1, keepdims=True)).astype(np.float32)
    size = canvas.shape[-1]
    padded = np.pad(canvas, ((0, 0), (0, 0), (radius, radius), (0, 0)), mode="edge")
    canvas = sum(kernel[:, i, None, None, None] * padded[:, :, i:i + size]
                 for i in range(len(taps)))
    padded = np.pad(canvas, ((0, 0), (0, 0), (0, 0), (radius, radius)), mode="edge")
    return sum(kernel[:, i, None, None, None] * padded[..., i:i + size]
               for i in range(len(taps)))


def _add_noise(canvas, batch):
    size = canvas.shape[-1]
    noise = np.stack([np.random.default_rng(seed).standard_normal((3, size, size),
                                                                  dtype=np.float32)
                      for seed in batch.noise_seeds])
    return canvas + batch.noise_std[:, None] * noise


def draw_faces(identity: IdentityParams, nuisances: Sequence[Nuisance],
               size: int) -> np.ndarray:
    """Render images of `identity`, one per nuisance; uint8 (N, size, size, 3)."""
    batch = _Batch(nuisances)
    x, y = _pixel_grid(size)
    u, v, pixel = _canonical_coordinates(size, batch)
    g = identity.geometry
    yaw = batch.yaw
    # The face outline moves a little with yaw while inner features move more.
    face_x = yaw * 0.04

    # Channels-first while drawing: NumPy broadcasts far faster over long rows
    # than over a trailing axis of length 3.
    canvas = np.empty((len(nuisances), 3, size, size), dtype=np.float32)
    _draw_background(canvas, x, y, batch)
    _draw_back_hair(canvas, u, v, pixel, g, identity, face_x)
    _draw_neck_and_clothes(canvas, u, v, pixel, g, identity, batch)
    _draw_ears(canvas, u, v, pixel, g, identity, face_x, yaw)
    face_sd = _face_outline_sd(u, v, g, face_x)
    _paint(canvas, _coverage(face_sd, pixel), identity.skin_rgb)
    _draw_beard(canvas, u, v, pixel, g, identity, face_sd)
    _draw_mole(canvas, u, v, pixel, identity, g, face_x)
    _draw_top_hair(canvas, u, v, pixel, g, identity, face_x)
    _draw_brows(canvas, u, v, pixel, g, identity, batch, face_x, yaw)
    _draw_eyes(canvas, u, v, pixel, g, identity, batch, face_x, yaw)
    _draw_nose(canvas, u, v, pixel, g, identity, face_x, yaw)
    _draw_mouth(canvas, u, v, pixel, g, identity, batch, face_x, yaw)
    _draw_glasses(canvas, u, v, pixel, g, batch, face_x, yaw)
    _draw_hat(canvas, u, v, pixel, g, batch, face_x)
    _draw_occluder(canvas, u, v, pixel, batch)
    _apply_lighting(canvas, x, y, batch)
    # Blur is specified at 40 px so the look is the same at any resolution.
    canvas = _gaussian_blur(canvas, batch.blur_sigma_px * size / 40.0)
    canvas = _add_noise(canvas, batch)
    pixels = np.round(np.clip(canvas, 0.0, 1.0) * 255.0).astype(np.uint8)
    return np.ascontiguousarray(pixels.transpose(0, 2, 3, 1))


def draw_face(identity: IdentityParams, nuisance: Nuisance, size: int) -> np.ndarray:
    """Render one image of `identity` under fixed nuisance values."""
    return draw_faces(identity, [nuisance], size)[0]


def render_face(identity: IdentityParams, rng: np.random.Generator, size: int,
                variation: NuisanceConfig = DEFAULT_NUISANCE) -> np.ndarray:
    """Render one image of `identity` with random nuisances; uint8 (size, size, 3)."""
    return draw_face(identity, sample_nuisance(rng, identity, variation), size)

# --------------------------------------------------------------------------
# Whole splits


def family_partition(num_identities: int, seed: int, identity_offset: int = 0) -> np.ndarray:
    """Family id (0..F-1) of each identity: consecutive runs of 4-8 identities."""
    rng = np.random.default_rng([seed, _PARTITION_STREAM, identity_offset])
    families = np.empty(num_identities, dtype=np.int64)
    start, family = 0, 0
    low, high = FAMILY_SIZE_RANGE
    while start < num_identities:
        count = int(rng.integers(low, high + 1))
        families[start:start + count] = family
        start += count
        family += 1
    # Fold a too-small last family into the previous one.
    last = families[-1]
    if last > 0 and np.sum(families == last) < low:
        families[families == last] = last - 1
    return families


def split_identities(num_identities: int, seed: int,
                     identity_offset: int = 0) -> list:
    """IdentityParams for a block of identities, grouped into families."""
    families = family_partition(num_identities, seed, identity_offset)
    traits = {}
    identities = []
    for index, family in enumerate(families):
        family = int(family)
        if family not in traits:
            traits[family] = sample_family(
                np.random.default_rng([seed, _FAMILY_STREAM, identity_offset, family]), family)
        rng = np.random.default_rng([seed, _IDENTITY_STREAM, identity_offset + index])
        identities.append(sample_identity(rng, traits[family]))
    return identities


def render_identity_images(identity: IdentityParams, count: int, size: int, seed: int,
                           global_identity: int,
                           variation: NuisanceConfig = DEFAULT_NUISANCE) -> np.ndarray:
    """`count` images of one identity, each from its own seeded stream.

    Image i depends only on (seed, global_identity, i), so it does not change
    with `count`; the images are drawn together for speed.
    """
    if count == 0:
        return np.zeros((0, size, size, 3), dtype=np.uint8)
    nuisances = [
        sample_nuisance(np.random.default_rng([seed, _IMAGE_STREAM, global_identity, index]),
                        identity, variation)
        for index in range(count)
    ]
    return draw_faces(identity, nuisances, size)


def render_split(num_identities: int, images_per_identity: int, size: int, seed: int,
                 identity_offset: int = 0,
                 variation: NuisanceConfig = DEFAULT_NUISANCE) -> RenderedSplit:
    """Render a block of identities; identical inputs give byte-identical output.

    `identity_offset` selects which global identities are drawn, so blocks
    with non-overlapping offsets hold disjoint identities (train vs test).
    """
    identities = split_identities(num_identities, seed, identity_offset)
    images = np.concatenate([
        render_identity_images(identity, images_per_identity, size, seed,
                               identity_offset + index, variation)
        for index, identity in enumerate(identities)
    ]) if num_identities else np.zeros((0, size, size, 3), np.uint8)
    labels = np.repeat(np.arange(num_identities, dtype=np.int64), images_per_identity)
    families = np.repeat(np.array([i.family for i in identities], dtype=np.int64),
                         images_per_identity)
    return RenderedSplit(images=images, labels=labels, families=families,
                         identities=identities)
