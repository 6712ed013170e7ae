"""Drawn synthetic faces whose CelebA attributes are visible in the pixels.

A face is an :class:`Identity` (geometry, skin, hair and other identity-bound attributes)
plus a :class:`Look` (per-image attributes, pose and lighting). :func:`render_face` draws it
with PIL at ``SUPERSAMPLE`` times the output size, reduces (antialiasing) and returns the
image together with the landmarks and the face box of what was drawn, in output pixels.

Every shape is a polygon in face-local coordinates (output pixels, origin at the face
centre) sent through one similarity transform, so the landmarks and the box come from the
very geometry that is painted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from sparkvision.data.schema import CELEBA_ATTRIBUTES

WIDTH, HEIGHT = 178, 218
"""Size of an aligned CelebA image (``img_align_celeba``)."""

SUPERSAMPLE = 2

HAIR_COLOURS: dict[str, tuple[int, int, int]] = {
    "Black_Hair": (28, 22, 20),
    "Brown_Hair": (104, 66, 38),
    "Blond_Hair": (226, 196, 120),
    "Gray_Hair": (170, 170, 172),
    "": (150, 62, 30),  # auburn: none of the four CelebA hair colours
}

_SKIN = np.array([[236, 196, 168], [224, 172, 138], [198, 144, 106], [160, 108, 76], [112, 74, 52]], np.float64)
_PALE_SKIN = np.array([[248, 226, 214], [244, 220, 206]], np.float64)
_IRIS = [(70, 45, 25), (40, 28, 20), (60, 100, 150), (80, 110, 70)]
_LIPSTICK = [(178, 24, 48), (200, 40, 80), (150, 20, 40)]

IDENTITY_ATTRIBUTES = (
    "Male", "Young", "Pale_Skin", "Bald", "Black_Hair", "Blond_Hair", "Brown_Hair", "Gray_Hair",
    "Straight_Hair", "Wavy_Hair", "Bangs", "Receding_Hairline", "Big_Nose", "Pointy_Nose", "Big_Lips",
    "Narrow_Eyes", "Bushy_Eyebrows", "Arched_Eyebrows", "Bags_Under_Eyes", "Chubby", "Double_Chin",
    "Oval_Face", "Attractive", "No_Beard", "Mustache", "Goatee", "Sideburns",
)  # fmt: skip
"""Attributes fixed for an identity; the others vary from image to image."""

DRAWN_ATTRIBUTES = frozenset(CELEBA_ATTRIBUTES) - {"Attractive"}
"""Every attribute except ``Attractive`` changes the drawing (see docs/datasets.md)."""

AMBIGUOUS_SHARE: dict[str, float] = {
    "Smiling": 0.14,
    "Mouth_Slightly_Open": 0.14,
    "High_Cheekbones": 0.24,
    "Wearing_Lipstick": 0.12,
    "Heavy_Makeup": 0.18,
    "Wavy_Hair": 0.38,
}
"""Graded attributes: the share of images drawn at a borderline strength, the same for both labels.

Real annotators disagree on a faint smile or light make-up; a face drawn at a borderline strength
carries its sampled label, so no model can tell those apart and the best accuracy on an attribute is
about ``1 - share / 2``. The shares put that ceiling a little above the published accuracy of a CNN on
real CelebA (``benchmarks/fidelity.py``): Smiling 92, Mouth_Slightly_Open 92, High_Cheekbones 87,
Wearing_Lipstick 93, Heavy_Makeup 90, Wavy_Hair 80 (Liu et al. 2015, Table 1, LNets+ANet).
"""


@dataclass(frozen=True)
class Identity:
    """Identity-bound geometry, colours and attributes (``attrs`` holds 0/1 per name)."""

    attrs: dict[str, int]
    face_rx: float
    face_ry: float
    jaw_power: float
    eye_dx: float
    eye_y: float
    eye_rx: float
    eye_ry: float
    nose_len: float
    mouth_drop: float
    mouth_w: float
    skin: tuple[int, int, int]
    hair: tuple[int, int, int]
    hair_length: float
    iris: tuple[int, int, int]
    glasses_wearer: bool
    hat_wearer: bool
    hair_phase: float
    smile_width: float = 1.0
    teeth_h: float = 4.5
    levels: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True)
class Look:
    """Per-image attributes, pose, background and lighting."""

    attrs: dict[str, int]
    angle: float
    scale: float
    shift: tuple[float, float]
    background: tuple[tuple[int, int, int], ...]
    light_gain: float
    light_dir: float
    light_strength: float
    hat_colour: tuple[int, int, int]
    cloth_colour: tuple[int, int, int]
    frame_colour: tuple[int, int, int]
    lip_colour: tuple[int, int, int]
    sunglasses: bool = False
    levels: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True)
class DrawnFace:
    """A rendered face: the RGB image and the geometry that was painted, in output pixels."""

    image: Image.Image
    landmarks: np.ndarray  # (5, 2): left eye, right eye, nose tip, left mouth, right mouth
    bbox: tuple[int, int, int, int]  # x_1, y_1, width, height (tight around the face oval)
    attributes: dict[str, int]  # all 40, 0/1


def _p(rng: np.random.Generator, p: float) -> int:
    return int(rng.random() < p)


def strength(name: str, on: int, level: float) -> float:
    """How strongly a graded attribute is drawn, in [0, 1], from its label and its level in [0, 1).

    A level below the attribute's ``AMBIGUOUS_SHARE`` gives a borderline strength (0.25-0.55) that
    does not depend on the label; otherwise an attribute that is on is drawn at 0.6-1 and one that is
    off at 0-0.15.
    """
    share = AMBIGUOUS_SHARE.get(name, 0.0)
    if level < share:
        return 0.25 + 0.3 * level / share
    v = (level - share) / (1.0 - share)
    return 0.6 + 0.4 * v if on else 0.15 * v


def _levels(rng: np.random.Generator, names: tuple[str, ...]) -> tuple[tuple[str, float], ...]:
    return tuple((name, float(rng.random())) for name in names)


def sample_identity(rng: np.random.Generator) -> Identity:
    """Draw one identity's fixed attributes and geometry.

    Frequencies follow CelebA roughly; rare visible attributes are raised so that small
    sets contain them (see docs/datasets.md).
    """
    a: dict[str, int] = {}
    male = a["Male"] = _p(rng, 0.42)
    young = a["Young"] = _p(rng, 0.77)
    a["Pale_Skin"] = _p(rng, 0.08)
    a["Bald"] = _p(rng, 0.08 if young else 0.3) if male else 0
    a["Receding_Hairline"] = 0 if a["Bald"] else _p(rng, (0.2 if not young else 0.06) if male else 0.04)
    for name in ("Black_Hair", "Blond_Hair", "Brown_Hair", "Gray_Hair"):
        a[name] = 0
    if not a["Bald"]:
        if not young and rng.random() < 0.45:
            a["Gray_Hair"] = 1
        else:
            weights = np.array([0.30, 0.30 if not male else 0.10, 0.26, 0.0])
            rest = 1.0 - weights.sum()
            pick = rng.choice(5, p=np.append(weights, rest) / (weights.sum() + rest))
            if pick < 3:
                a[("Black_Hair", "Blond_Hair", "Brown_Hair")[pick]] = 1
    style = rng.random()
    a["Straight_Hair"] = int(not a["Bald"] and style < 0.24)
    a["Wavy_Hair"] = int(not a["Bald"] and 0.24 <= style < 0.58 and not (male and rng.random() < 0.5))
    a["Bangs"] = int(not a["Bald"] and not a["Receding_Hairline"] and rng.random() < 0.18)
    a["Big_Nose"] = _p(rng, 0.35 if male else 0.15)
    a["Pointy_Nose"] = 0 if a["Big_Nose"] else _p(rng, 0.32)
    a["Big_Lips"] = _p(rng, 0.24)
    a["Narrow_Eyes"] = _p(rng, 0.12)
    a["Bushy_Eyebrows"] = _p(rng, 0.25 if male else 0.08)
    a["Arched_Eyebrows"] = 0 if a["Bushy_Eyebrows"] else _p(rng, 0.05 if male else 0.45)
    a["Bags_Under_Eyes"] = _p(rng, 0.12 if young else 0.45)
    a["Chubby"] = _p(rng, 0.04 if young else 0.15)
    a["Double_Chin"] = _p(rng, 0.6 if a["Chubby"] else (0.01 if young else 0.08))
    a["Oval_Face"] = 0 if a["Chubby"] else _p(rng, 0.2 if male else 0.38)
    a["Attractive"] = _p(rng, 0.6 if young else 0.2)
    beard = bool(male and rng.random() < 0.35)
    a["No_Beard"] = int(not beard)
    a["Mustache"] = int(male and rng.random() < (0.55 if beard else 0.12))
    a["Goatee"] = int(male and not beard and rng.random() < 0.22)
    a["Sideburns"] = int(male and not a["Bald"] and rng.random() < (0.5 if beard else 0.12))

    rx = rng.uniform(34, 40) + (2.5 if male else 0) + (5 if a["Chubby"] else 0) - (4 if a["Oval_Face"] else 0)
    ry = rng.uniform(47, 53) + (2 if male else 0) + (4 if a["Oval_Face"] else 0)
    jaw = (2.9 if male else 1.9) + rng.uniform(-0.2, 0.2) - (0.4 if a["Oval_Face"] else 0)
    if a["Pale_Skin"]:
        skin = _PALE_SKIN[rng.integers(len(_PALE_SKIN))]
    else:
        k = rng.uniform(0, len(_SKIN) - 1)
        lo = int(k)
        skin = _SKIN[lo] * (1 - (k - lo)) + _SKIN[min(lo + 1, len(_SKIN) - 1)] * (k - lo)
    if not young:  # older skin: a little greyer
        skin = skin * 0.85 + np.array([160, 150, 145]) * 0.15
    hair_key = next((n for n in ("Black_Hair", "Blond_Hair", "Brown_Hair", "Gray_Hair") if a[n]), "")
    hair = np.array(HAIR_COLOURS[hair_key], np.float64) * rng.uniform(0.88, 1.08, 3)
    return Identity(
        attrs=a,
        face_rx=rx,
        face_ry=ry,
        jaw_power=jaw,
        eye_dx=rng.uniform(16, 20),
        eye_y=rng.uniform(-11, -7),
        eye_rx=rng.uniform(6.5, 8.5),
        eye_ry=rng.uniform(3.6, 4.6) * (0.45 if a["Narrow_Eyes"] else 1.0),
        nose_len=rng.uniform(19, 25) + (5 if a["Pointy_Nose"] else 0),
        mouth_drop=rng.uniform(13, 16),
        mouth_w=rng.uniform(13, 16.5),
        skin=tuple(int(c) for c in np.clip(skin, 0, 255)),  # type: ignore[arg-type]
        hair=tuple(int(c) for c in np.clip(hair, 0, 255)),  # type: ignore[arg-type]
        hair_length=(rng.uniform(2, 10) if male else rng.uniform(25, 55)),
        iris=_IRIS[rng.integers(len(_IRIS))],
        glasses_wearer=rng.random() < 0.24,
        hat_wearer=rng.random() < 0.22,
        hair_phase=rng.uniform(0, 2 * math.pi),
        smile_width=float(rng.uniform(0.8, 1.25)),
        teeth_h=float(rng.uniform(3.8, 5.6)),
        levels=_levels(rng, ("Wavy_Hair",)),
    )


def sample_look(rng: np.random.Generator, ident: Identity, pose_jitter: float = 1.0) -> Look:
    """Draw one image's variable attributes, pose, background and lighting for ``ident``."""
    male = ident.attrs["Male"]
    a: dict[str, int] = {}
    smiling = a["Smiling"] = _p(rng, 0.48)
    a["Mouth_Slightly_Open"] = _p(rng, 0.72 if smiling else 0.25)
    a["High_Cheekbones"] = _p(rng, 0.75 if smiling else 0.12)
    a["Eyeglasses"] = int(ident.glasses_wearer and rng.random() < 0.65)
    a["Wearing_Hat"] = int(ident.hat_wearer and rng.random() < 0.5)
    a["Wearing_Lipstick"] = 0 if male else _p(rng, 0.8)
    a["Heavy_Makeup"] = 0 if male else _p(rng, 0.7 if a["Wearing_Lipstick"] else 0.1)
    a["Wearing_Earrings"] = _p(rng, 0.03 if male else 0.33)
    a["Wearing_Necklace"] = _p(rng, 0.01 if male else 0.22)
    a["Wearing_Necktie"] = _p(rng, 0.18 if male else 0.005)
    a["Rosy_Cheeks"] = 0 if male else _p(rng, 0.12)
    a["5_o_Clock_Shadow"] = int(male and ident.attrs["No_Beard"] and rng.random() < 0.35)
    a["Blurry"] = _p(rng, 0.05)
    n_bg = 4
    # Muted, like CelebA's backgrounds (walls, blurred rooms and crowds): a colour halfway to grey.
    base = rng.integers(25, 231, 3).astype(np.float64)
    base = base.mean() + (base - base.mean()) * rng.uniform(0.05, 0.4)
    bg = tuple(tuple(int(c) for c in np.clip(base + rng.integers(-35, 36, 3), 0, 255)) for _ in range(n_bg))
    lip = _LIPSTICK[rng.integers(len(_LIPSTICK))]
    return Look(
        attrs=a,
        angle=rng.normal(0, 4.0) * pose_jitter,
        scale=float(rng.uniform(0.88, 1.12)),  # aligned CelebA faces differ in size by about this much
        shift=(float(rng.normal(0, 3.0) * pose_jitter), float(rng.normal(0, 3.0) * pose_jitter)),
        background=bg,  # type: ignore[arg-type]
        light_gain=float(rng.uniform(0.85, 1.12)),
        light_dir=float(rng.uniform(0, 2 * math.pi)),
        light_strength=float(rng.uniform(0.0, 0.18)),
        hat_colour=tuple(int(c) for c in rng.integers(20, 230, 3)),  # type: ignore[arg-type]
        cloth_colour=tuple(int(c) for c in rng.integers(15, 240, 3)),  # type: ignore[arg-type]
        frame_colour=(20, 20, 24) if rng.random() < 0.6 else (110, 60, 30),
        lip_colour=lip,
        sunglasses=bool(rng.random() < 0.3),  # CelebA's Eyeglasses include sunglasses
        levels=_levels(rng, ("Smiling", "Mouth_Slightly_Open", "High_Cheekbones", "Wearing_Lipstick", "Heavy_Makeup")),
    )


def attributes_of(ident: Identity, look: Look) -> dict[str, int]:
    """All 40 CelebA attributes (0/1) of one image, in ``CELEBA_ATTRIBUTES`` order."""
    merged = {**ident.attrs, **look.attrs}
    missing = set(CELEBA_ATTRIBUTES) - merged.keys()
    if missing:  # a programming error: every attribute must be decided by identity or look
        raise AssertionError(f"attributes not sampled: {sorted(missing)}")
    return {name: int(merged[name]) for name in CELEBA_ATTRIBUTES}


# --------------------------------------------------------------------------- geometry


def _ellipse(cx: float, cy: float, rx: float, ry: float, n: int = 28, t0: float = 0.0, t1: float = 2 * math.pi):
    t = np.linspace(t0, t1, n, endpoint=(t1 - t0) < 2 * math.pi - 1e-9)
    return np.stack([cx + rx * np.cos(t), cy + ry * np.sin(t)], axis=1)


def _face_outline(ident: Identity, n: int = 64, grow: float = 0.0) -> np.ndarray:
    """Face oval: an ellipse on top, a superellipse jaw below (square for male, pointed for female)."""
    t = np.linspace(0, 2 * math.pi, n, endpoint=False)
    c, s = np.cos(t), np.sin(t)
    rx, ry = ident.face_rx + grow, ident.face_ry + grow
    power = np.where(s > 0, ident.jaw_power, 2.0)  # y grows downwards: s > 0 is the lower half
    x = rx * np.sign(c) * np.abs(c) ** (2.0 / power)
    y = ry * np.sign(s) * np.abs(s) ** (2.0 / power)
    return np.stack([x, y], axis=1)


class _Canvas:
    """One similarity transform (face-local output pixels -> supersampled canvas) plus drawing."""

    def __init__(self, img: Image.Image, cx: float, cy: float, scale: float, angle_deg: float) -> None:
        self.img = img
        self.draw = ImageDraw.Draw(img, "RGBA")
        self.cx, self.cy, self.scale = cx, cy, scale
        a = math.radians(angle_deg)
        self.rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])

    def to_out(self, pts: np.ndarray) -> np.ndarray:
        """Face-local points -> output pixel coordinates."""
        pts = np.asarray(pts, np.float64).reshape(-1, 2)
        return pts @ self.rot.T * self.scale + np.array([self.cx, self.cy])

    def _xy(self, pts: np.ndarray) -> list[float]:
        return (self.to_out(pts) * SUPERSAMPLE).ravel().tolist()

    def poly(self, pts: np.ndarray, fill: tuple[int, ...]) -> None:
        self.draw.polygon(self._xy(pts), fill=fill)

    def line(self, pts: np.ndarray, fill: tuple[int, ...], width: float) -> None:
        w = max(1, round(width * self.scale * SUPERSAMPLE))
        self.draw.line(self._xy(pts), fill=fill, width=w, joint="curve")

    def circle(self, centre: tuple[float, float], r: float, fill: tuple[int, ...]) -> None:
        x, y = (self.to_out(np.array(centre)) * SUPERSAMPLE)[0]
        rr = r * self.scale * SUPERSAMPLE
        self.draw.ellipse([x - rr, y - rr, x + rr, y + rr], fill=fill)


def _shade(c: tuple[int, ...], k: float, alpha: int | None = None) -> tuple[int, ...]:
    rgb = tuple(int(min(255, max(0, v * k))) for v in c[:3])
    return rgb if alpha is None else (*rgb, alpha)


def _mix(c1: tuple[int, ...], c2: tuple[int, ...], t: float) -> tuple[int, int, int]:
    return tuple(int(a * (1 - t) + b * t) for a, b in zip(c1[:3], c2[:3], strict=True))  # type: ignore[return-value]


# --------------------------------------------------------------------------- drawing


@dataclass(frozen=True)
class _Layout:
    """What every drawing step of one face shares: its attributes and face-local heights.

    Face-local coordinates are output pixels with the origin at the face centre, y downwards.
    """

    a: dict[str, int]
    rx: float
    ry: float
    eye_y: float
    nose_y: float
    mouth_y: float
    s: dict[str, float]  # strength in [0, 1] of each graded attribute (``AMBIGUOUS_SHARE``)

    @property
    def chin_y(self) -> float:
        return self.ry


def render_face(ident: Identity, look: Look, rng: np.random.Generator) -> DrawnFace:
    """Draw one face image of ``WIDTH`` x ``HEIGHT`` pixels.

    Back to front: background, body, hair behind the head, ears, face, facial hair, cheeks
    and wrinkles, front hair, eyes, nose, mouth, glasses, hat; then reduce, blur and light.

    Args:
        ident: The identity (geometry, colours, identity-bound attributes).
        look: The per-image attributes, pose, background and lighting.
        rng: Randomness for small details (hair strands, noise); seeded by the caller.

    Returns:
        The image with the landmarks and face box of exactly what was drawn.
    """
    a = attributes_of(ident, look)
    eye_y = ident.eye_y
    nose_y = eye_y + ident.nose_len
    levels = dict((*ident.levels, *look.levels))
    graded = {name: strength(name, a[name], levels.get(name, 0.99)) for name in AMBIGUOUS_SHARE}
    if a["Male"]:  # make-up is never sampled for men: nothing borderline to draw
        graded.update(Wearing_Lipstick=0.0, Heavy_Makeup=0.0)
    f = _Layout(a, ident.face_rx, ident.face_ry, eye_y, nose_y, nose_y + ident.mouth_drop, graded)
    cv = _background(look, rng)
    _draw_body(cv, ident, look, f)
    _draw_back_hair(cv, ident, f)
    _draw_ears(cv, ident, f)
    outline = _draw_face(cv, ident, look, f)
    _draw_facial_hair(cv, ident, f, outline)
    _draw_cheeks_and_wrinkles(cv, ident, f)
    _draw_front_hair(cv, ident, f)
    _draw_eyes(cv, ident, f)
    _draw_nose(cv, ident, f)
    left, right = _draw_mouth(cv, ident, look, f)
    _draw_glasses(cv, ident, look, f)
    _draw_hat(cv, look, f)

    out = cv.img.reduce(SUPERSAMPLE)
    if a["Blurry"]:
        out = out.filter(ImageFilter.GaussianBlur(1.6))
    out = _light(out, look, rng)
    landmarks, bbox = _painted_geometry(cv, ident, f, left, right)
    return DrawnFace(out, landmarks, bbox, a)


def _background(look: Look, rng: np.random.Generator) -> _Canvas:
    """The supersampled canvas: a gradient between the four corner colours and two soft shapes."""
    W, H = WIDTH * SUPERSAMPLE, HEIGHT * SUPERSAMPLE
    corners = np.array(look.background, np.uint8).reshape(2, 2, 3)
    img = Image.fromarray(corners, "RGB").resize((W, H), Image.Resampling.BILINEAR)
    cx = WIDTH / 2 + look.shift[0]
    cy = 121 + look.shift[1]
    cv = _Canvas(img, cx, cy, look.scale, look.angle)
    d = cv.draw
    for _ in range(2):  # soft background shapes
        x, y, r = rng.uniform(0, W), rng.uniform(0, H), rng.uniform(20, 90)
        col = rng.integers(0, 256, 3).astype(np.float64)
        col = col.mean() + (col - col.mean()) * 0.4
        d.ellipse([x - r, y - r, x + r, y + r], fill=(*(int(c) for c in col), 40))
    return cv


def _draw_body(cv: _Canvas, ident: Identity, look: Look, f: _Layout) -> None:
    """Torso and neck, with a necktie and a necklace when worn."""
    a, rx, chin_y, skin = f.a, f.rx, f.chin_y, ident.skin
    torso_top = chin_y + 26
    torso = np.array(
        [[-95, torso_top + 18], [-40, torso_top], [40, torso_top], [95, torso_top + 18], [110, 140], [-110, 140]]
    )
    cv.poly(torso, look.cloth_colour)
    neck_w = rx * 0.55
    cv.poly(np.array([[-neck_w, chin_y - 20], [neck_w, chin_y - 20], [neck_w * 1.1, torso_top + 4],
                      [-neck_w * 1.1, torso_top + 4]]), _shade(skin, 0.86))  # fmt: skip
    if a["Wearing_Necktie"]:
        cv.poly(np.array([[-14, torso_top - 2], [0, torso_top + 10], [14, torso_top - 2], [10, torso_top + 4],
                          [-10, torso_top + 4]]), (245, 245, 245))  # fmt: skip
        tie = _mix(look.cloth_colour, (150, 20, 40), 0.7)
        cv.poly(np.array([[-4, torso_top + 3], [4, torso_top + 3], [7, 140], [-7, 140]]), tie)
        cv.poly(np.array([[-5, torso_top - 1], [5, torso_top - 1], [3, torso_top + 5], [-3, torso_top + 5]]), tie)
    if a["Wearing_Necklace"]:
        chain = _ellipse(0, torso_top - 14, neck_w * 1.25, 14, n=14, t0=0.15, t1=math.pi - 0.15)
        cv.line(chain, (230, 200, 90), 2.0)
        cv.circle((0, torso_top), 3.2, (235, 210, 100))


def _draw_back_hair(cv: _Canvas, ident: Identity, f: _Layout) -> None:
    """Hair behind the head: long hair falls below the jaw."""
    if f.a["Bald"]:
        return
    rx, ry = f.rx, f.ry
    length = ident.hair_length
    back = _ellipse(0, -ry * 0.15, rx + 9, ry + 6, n=40, t0=math.pi, t1=2 * math.pi)
    side = np.array([[rx + 9 + (6 if length > 20 else 0), -ry * 0.15 + length],
                     [-rx - 9 - (6 if length > 20 else 0), -ry * 0.15 + length]])  # fmt: skip
    top_y = -ry * 0.15
    wave = 9.0 * f.s["Wavy_Hair"]
    if wave > 0.3:  # waves down both falling sides (and a rippled crown)
        n_side = 14
        ys = np.linspace(top_y, top_y + length, n_side)
        ripple = wave * np.sin((ys - top_y) / 6.5 + ident.hair_phase)
        right = np.stack([side[0, 0] + ripple, ys], axis=1)
        left = np.stack([side[1, 0] - ripple, ys], axis=1)[::-1]
        k = np.arange(len(back))
        crown = back + np.stack([np.zeros(len(back)), -np.abs(np.sin(k * 0.9 + ident.hair_phase)) * wave * 0.5], axis=1)
        shape = np.vstack([crown, right, left])
    else:
        shape = np.vstack([back, side])
    cv.poly(shape, _shade(ident.hair, 0.85))
    if wave > 0.3 and length > 12:  # curls down both sides
        curl = _shade(ident.hair, 0.6 if sum(ident.hair) > 250 else 1.5)
        for sx in (-1, 1):
            for dx in (3.0, 8.0):
                ys = np.linspace(top_y + 4, top_y + length - 2, 12)
                xs = sx * (rx + dx) + wave * 0.8 * np.sin((ys - top_y) / 4.0 + ident.hair_phase + dx)
                cv.line(np.stack([xs, ys], axis=1), curl, 1.8)


def _draw_ears(cv: _Canvas, ident: Identity, f: _Layout) -> None:
    """Ears, with earrings when worn."""
    for sx in (-1, 1):
        cv.poly(_ellipse(sx * (f.rx - 1), f.eye_y + 9, 5.5, 10, n=16), _shade(ident.skin, 0.93))
        if f.a["Wearing_Earrings"]:
            cv.circle((sx * (f.rx - 0.5), f.eye_y + 21), 2.4, (240, 205, 80))


def _draw_face(cv: _Canvas, ident: Identity, look: Look, f: _Layout) -> np.ndarray:
    """The face oval, a double chin and the shadow away from the light; returns the outline."""
    rx, ry, skin = f.rx, f.ry, ident.skin
    outline = _face_outline(ident)
    cv.poly(outline, skin)
    if f.a["Double_Chin"]:
        cv.line(_ellipse(0, f.chin_y - 2, rx * 0.5, 8, n=12, t0=0.3, t1=math.pi - 0.3), _shade(skin, 0.7), 2.5)
    light_side = 1 if math.cos(look.light_dir) > 0 else -1
    cv.poly(_ellipse(-light_side * rx * 0.55, 8, rx * 0.5, ry * 0.75, n=20), _shade(skin, 0.9, 60))
    return outline


def _beard_colour(ident: Identity, a: dict[str, int]) -> tuple[int, ...]:
    """Beard, goatee and mustache colour: the hair's, darker; dark brown for the bald (not grey)."""
    return _shade(ident.hair, 0.8) if not (a["Bald"] and not a["Gray_Hair"]) else (60, 50, 45)


def _draw_facial_hair(cv: _Canvas, ident: Identity, f: _Layout, outline: np.ndarray) -> None:
    """Beard, goatee, five o'clock shadow and sideburns (the mustache is drawn with the mouth)."""
    a, rx, ry, nose_y, mouth_y = f.a, f.rx, f.ry, f.nose_y, f.mouth_y
    beard = _beard_colour(ident, a)
    if not a["No_Beard"]:
        jaw = outline[(outline[:, 1] > nose_y - 4)]
        jaw = jaw[np.argsort(np.arctan2(jaw[:, 1], jaw[:, 0]))]
        inner = _ellipse(0, mouth_y - 1, ident.mouth_w + 5, 9, n=18, t0=math.pi, t1=0)
        cv.poly(np.vstack([jaw, inner]), beard)
        cv.poly(np.vstack([jaw + np.array([0, 2.5]), jaw[::-1] * [1, 0.999]]), beard)
    if a["Goatee"]:
        cv.poly(_ellipse(0, f.chin_y - 9, 9, 9, n=16), beard)
    if a["5_o_Clock_Shadow"]:
        jaw = outline[(outline[:, 1] > nose_y)]
        jaw = jaw[np.argsort(np.arctan2(jaw[:, 1], jaw[:, 0]))]
        cv.poly(np.vstack([jaw, _ellipse(0, mouth_y - 2, ident.mouth_w + 3, 7, n=14, t0=math.pi, t1=0)]),
                (70, 70, 90, 70))  # fmt: skip
    if a["Sideburns"]:
        for sx in (-1, 1):
            cv.poly(np.array([[sx * (rx - 1), -ry * 0.45], [sx * (rx - 8), -ry * 0.45], [sx * (rx - 7), f.eye_y + 20],
                              [sx * (rx - 0.5), f.eye_y + 20]]), _shade(ident.hair, 0.8))  # fmt: skip


def _draw_cheeks_and_wrinkles(cv: _Canvas, ident: Identity, f: _Layout) -> None:
    """Rosy cheeks, high cheekbones and, for the older, forehead and smile wrinkles."""
    a, rx, ry, eye_y, nose_y, mouth_y, skin = f.a, f.rx, f.ry, f.eye_y, f.nose_y, f.mouth_y, ident.skin
    if a["Rosy_Cheeks"]:
        for sx in (-1, 1):
            cv.poly(_ellipse(sx * rx * 0.55, nose_y + 2, 8, 5.5, n=16), (230, 80, 90, 90))
    cheek, smile = f.s["High_Cheekbones"], f.s["Smiling"]
    if cheek > 0.05:  # a lit cheekbone over a shadowed hollow
        for sx in (-1, 1):
            cv.poly(_ellipse(sx * rx * 0.56, nose_y - 6, 12, 5, n=16), _shade(skin, 1.3, int(240 * cheek)))
            cv.poly(_ellipse(sx * rx * 0.7, nose_y + 6, 7, 9, n=14), _shade(skin, 0.6, int(220 * cheek)))
    if smile > 0.05:  # raised, rounded cheeks and the folds from the nose to the mouth corners
        for sx in (-1, 1):
            cv.poly(
                _ellipse(sx * rx * 0.45, nose_y + 1 - 2 * smile, 9, 6.5, n=16), _shade(skin, 1.14, int(170 * smile))
            )
            fold = np.array([[sx * 7.5, nose_y - 1], [sx * (ident.mouth_w + 2), mouth_y - 5 * smile],
                             [sx * (ident.mouth_w * (1 + 0.3 * smile) + 3), mouth_y + 3 - 6 * smile]])  # fmt: skip
            cv.line(fold, _shade(skin, 0.62, int(220 * smile)), 1.3)
    if not a["Young"]:
        wr = _shade(skin, 0.66, 180)
        for k in range(3):
            y = -ry * 0.42 + k * 4
            cv.line(_ellipse(0, y + 12, rx * 0.5, 12, n=10, t0=math.pi * 1.25, t1=math.pi * 1.75), wr, 0.8)
        for sx in (-1, 1):
            cv.line(np.array([[sx * 9, nose_y - 3], [sx * (ident.mouth_w + 3), mouth_y + 3]]), wr, 0.9)
            cv.line(np.array([[sx * (ident.eye_dx + ident.eye_rx + 2), eye_y - 2],
                              [sx * (ident.eye_dx + ident.eye_rx + 6), eye_y + 1]]), wr, 0.7)  # fmt: skip


def _draw_front_hair(cv: _Canvas, ident: Identity, f: _Layout) -> None:
    """Hair on top of the head (hairline, strands, bangs), or a bald scalp's shine and grey sides."""
    a, rx, ry, eye_y, hair, bald = f.a, f.rx, f.ry, f.eye_y, ident.hair, f.a["Bald"]
    hairline = -ry * (0.78 if a["Receding_Hairline"] else 0.55)
    if not bald:
        cap = _ellipse(0, -ry * 0.02, rx + 3, ry + 4, n=36, t0=math.pi, t1=2 * math.pi)
        cap = cap[cap[:, 1] <= hairline + 2]
        if a["Receding_Hairline"]:
            front = np.array([[rx * 0.5, hairline + 4], [rx * 0.25, hairline - 4], [0, hairline + 2],
                              [-rx * 0.25, hairline - 4], [-rx * 0.5, hairline + 4]])  # fmt: skip
        else:
            front = _ellipse(0, hairline + 3, rx * 0.8, 6, n=9, t0=math.pi, t1=2 * math.pi)[::-1]
        cap_poly = np.vstack([cap, [[rx + 2, hairline + 6]], front, [[-rx - 2, hairline + 6]]])
        cv.poly(cap_poly, hair)
        wave = 6.0 * f.s["Wavy_Hair"]
        strand = _shade(hair, 0.6 if sum(hair) > 250 else 1.7)
        for k in range(9):  # strands, curling with the wave; straight hair: straight and sleek
            x0 = (k - 4) * rx * 0.2
            t = np.linspace(0, 1, 9)[:, None]
            pts = np.array([[x0 * 0.6, -ry - 2]]) * (1 - t) + np.array([[x0, hairline - 1]]) * t
            pts[:, 0] += wave * np.sin(t[:, 0] * 3 * math.pi + ident.hair_phase + k)
            cv.line(pts, strand, 1.0 + 1.0 * f.s["Wavy_Hair"] + (0.4 if a["Straight_Hair"] else 0))
        if a["Straight_Hair"]:  # sleek hair shines: a light band across the crown
            shine = _ellipse(0, -ry * 0.72, rx * 0.75, ry * 0.12, n=16)
            cv.poly(shine, _shade(hair, 1.45 if sum(hair) < 450 else 1.15, 170))
        if a["Bangs"]:
            n = 9
            xs = np.linspace(-rx * 0.92, rx * 0.92, n)
            low = eye_y - 8
            teeth = np.stack([xs, np.where(np.arange(n) % 2 == 0, low, low - 5)], axis=1)
            cv.poly(np.vstack([[[-rx, hairline - 6]], teeth, [[rx, hairline - 6]]]), hair)
    else:
        cv.poly(_ellipse(-rx * 0.3, -ry * 0.7, 8, 4, n=12), _shade(ident.skin, 1.12, 120))  # scalp shine
    if bald and not a["Young"]:
        for sx in (-1, 1):
            cv.poly(_ellipse(sx * (rx - 2), eye_y - 2, 4, 8, n=12), (150, 150, 150))


def _draw_eyes(cv: _Canvas, ident: Identity, f: _Layout) -> None:
    """Eyebrows (bushy, arched), eye makeup, bags under the eyes, and the eyes."""
    a, eye_y, hair, bald, skin = f.a, f.eye_y, ident.hair, f.a["Bald"], ident.skin
    brow = _shade(hair, 0.55) if (sum(hair) > 300 or bald) else _shade(hair, 0.9)
    if bald:
        brow = (70, 60, 55)
    brow_w = 6.5 if a["Bushy_Eyebrows"] else 1.4
    if a["Bushy_Eyebrows"]:
        brow = _shade(brow, 0.75)
    arch = 6.0 if a["Arched_Eyebrows"] else 1.0
    for sx in (-1, 1):
        ex = sx * ident.eye_dx
        pts = np.array([[ex - sx * 9, eye_y - 7], [ex - sx * 2, eye_y - 8 - arch], [ex + sx * 9, eye_y - 6]])
        cv.line(pts, brow, brow_w)

    makeup, squint = f.s["Heavy_Makeup"], 1.6 * f.s["Smiling"]
    for sx in (-1, 1):
        ex = sx * ident.eye_dx
        if makeup > 0.05:  # eye shadow, and blush on the cheeks
            cv.poly(
                _ellipse(ex, eye_y - 2.5, ident.eye_rx + 3, ident.eye_ry + 3.5, n=16), (110, 50, 130, int(190 * makeup))
            )
            cv.poly(_ellipse(sx * f.rx * 0.55, f.nose_y + 3, 7, 4.5, n=14), (220, 90, 110, int(110 * makeup)))
        if a["Bags_Under_Eyes"]:  # a dark, puffy crescent under the eye
            cv.poly(_ellipse(ex, eye_y + ident.eye_ry + 3.0, ident.eye_rx * 1.05, 5.0, n=14, t0=0, t1=math.pi),
                    _shade(skin, 0.55, 235))  # fmt: skip
        cv.poly(_ellipse(ex, eye_y, ident.eye_rx, ident.eye_ry, n=20), (246, 246, 242))
        r_iris = min(3.2, ident.eye_ry * 0.95)
        cv.circle((ex, eye_y), r_iris, ident.iris)
        cv.circle((ex, eye_y), r_iris * 0.45, (10, 10, 10))
        cv.line(_ellipse(ex, eye_y, ident.eye_rx, ident.eye_ry, n=12, t0=math.pi, t1=2 * math.pi),
                (25, 18, 18), 0.7 + 1.3 * makeup)  # fmt: skip
        if squint > 0.1:  # a smile lifts the lower lid
            cv.poly(np.vstack([_ellipse(ex, eye_y + ident.eye_ry + 1.5 - squint, ident.eye_rx + 0.5, squint + 0.5, n=12,
                                        t0=math.pi, t1=2 * math.pi), [[ex + ident.eye_rx, eye_y + ident.eye_ry + 3],
                                                                      [ex - ident.eye_rx, eye_y + ident.eye_ry + 3]]]),
                    skin)  # fmt: skip


def _draw_nose(cv: _Canvas, ident: Identity, f: _Layout) -> None:
    """The nose: its ridge, nostrils and, when pointy, the tip."""
    a, eye_y, nose_y, skin = f.a, f.eye_y, f.nose_y, ident.skin
    nose_dark = _shade(skin, 0.72)
    half = 10.0 if a["Big_Nose"] else (3.5 if a["Pointy_Nose"] else 5.0)
    cv.poly(np.array([[-2, eye_y + 3], [2, eye_y + 3], [half, nose_y - 1], [0, nose_y + 1], [-half, nose_y - 1]]),
            _shade(skin, 0.94))  # fmt: skip
    for sx in (-1, 1):
        cv.line(np.array([[sx * 2.5, eye_y + 4], [sx * half * 0.7, nose_y - 3], [sx * half, nose_y]]), nose_dark, 0.8)
        cv.circle((sx * half * 0.5, nose_y + 1), 1.4 if not a["Big_Nose"] else 2.8, _shade(skin, 0.5))
    if a["Pointy_Nose"]:
        cv.poly(np.array([[-2.5, nose_y - 6], [2.5, nose_y - 6], [0, nose_y + 2.5]]), _shade(skin, 0.78))


def _draw_mouth(cv: _Canvas, ident: Identity, look: Look, f: _Layout) -> tuple[np.ndarray, np.ndarray]:
    """A mustache, then the lips (smiling, open, teeth); returns the left and right mouth corners."""
    a, nose_y, mouth_y, skin = f.a, f.nose_y, f.mouth_y, ident.skin
    if a["Mustache"]:  # drawn before the mouth so the lips stay visible
        mw = ident.mouth_w
        cv.poly(np.array([[-mw - 2, mouth_y + 1], [-mw * 0.5, mouth_y - 5.5], [0, nose_y + 3.5], [mw * 0.5, mouth_y - 5.5],
                          [mw + 2, mouth_y + 1], [0, mouth_y - 2]]), _beard_colour(ident, a))  # fmt: skip

    smile, gap, paint = f.s["Smiling"], 13.0 * f.s["Mouth_Slightly_Open"], f.s["Wearing_Lipstick"]
    mw = ident.mouth_w * (1 + 0.35 * smile * ident.smile_width)
    lift = 7.0 * smile
    lip_h = 6.5 if a["Big_Lips"] else 2.0
    lips = _mix(_mix(skin, (170, 70, 70), 0.45), look.lip_colour, paint)
    left = np.array([-mw, mouth_y - lift])
    right = np.array([mw, mouth_y - lift])
    xs = np.linspace(-mw, mw, 17)
    u = xs / mw
    # A smile lifts the corners, widens the lips and bares the upper teeth; an open mouth adds a dark gap.
    teeth = ident.teeth_h * float(np.clip((smile - 0.2) / 0.5, 0.0, 1.0))
    depth = teeth + gap
    upper_line = mouth_y - lift * u**2 - 0.6 * (1 - u**2) * (1 - smile)
    lower_line = upper_line + depth * (1 - u**2) ** 0.7
    upper = np.stack([xs, upper_line], axis=1)
    lower = np.stack([xs, lower_line], axis=1)
    bulge = np.sqrt(np.clip(1 - u**2, 0, 1))
    cv.poly(np.vstack([upper, np.stack([xs, upper_line - lip_h * 1.1 * bulge], axis=1)[::-1]]), lips)
    cv.poly(np.vstack([lower, np.stack([xs, lower_line + lip_h * 1.4 * bulge], axis=1)[::-1]]), lips)
    if depth > 0.8:
        cv.poly(np.vstack([upper, lower[::-1]]), (62, 16, 22))
        if teeth > 0.5:
            inner = np.abs(u) < 0.88
            t_lo = np.minimum(upper_line + teeth * (1 - u**2) ** 0.5, lower_line)
            cv.poly(np.vstack([upper[inner], np.stack([xs[inner], t_lo[inner]], axis=1)[::-1]]), (246, 244, 236))
            for k in (-2, -1, 0, 1, 2):  # gaps between the front teeth
                x = k * mw * 0.17
                y0 = mouth_y - lift * (x / mw) ** 2
                cv.line(np.array([[x, y0], [x, y0 + teeth * 0.8]]), (200, 192, 185), 0.5)
    else:
        cv.line(upper, _shade(lips, 0.55), 0.9)
    return left, right


def _draw_glasses(cv: _Canvas, ident: Identity, look: Look, f: _Layout) -> None:
    """Eyeglasses when worn: tinted lenses, rims, temples and the bridge."""
    if not f.a["Eyeglasses"]:
        return
    eye_y = f.eye_y
    fr = look.frame_colour
    lens = (30, 32, 38, 215) if look.sunglasses else (200, 220, 240, 60)
    gx, gy = ident.eye_rx + 4.5, ident.eye_ry + 5.0
    for sx in (-1, 1):
        ex = sx * ident.eye_dx
        rim = _ellipse(ex, eye_y + 0.5, gx, gy, n=24)
        rim = np.stack([ex + np.sign(rim[:, 0] - ex) * np.abs(rim[:, 0] - ex) ** 0.9 * gx**0.1, rim[:, 1]], axis=1)
        cv.poly(rim, lens)
        cv.line(np.vstack([rim, rim[:1]]), fr, 2.4)
        cv.line(np.array([[sx * (ident.eye_dx + gx), eye_y - 1], [sx * (f.rx + 1), eye_y - 3]]), fr, 2.0)
    cv.line(np.array([[-ident.eye_dx + gx, eye_y - 1], [0, eye_y - 3], [ident.eye_dx - gx, eye_y - 1]]), fr, 2.0)


def _draw_hat(cv: _Canvas, look: Look, f: _Layout) -> None:
    """A hat when worn: crown, brim and band."""
    if not f.a["Wearing_Hat"]:
        return
    rx, ry = f.rx, f.ry
    brim_y = -ry * 0.62
    crown = np.vstack([_ellipse(0, brim_y, rx * 0.95, ry * 0.75, n=24, t0=math.pi, t1=2 * math.pi),
                       [[rx * 0.95, brim_y]]])  # fmt: skip
    cv.poly(crown, look.hat_colour)
    cv.poly(_ellipse(0, brim_y, rx + 16, 5.5, n=28), _shade(look.hat_colour, 0.8))
    cv.line(np.array([[-rx * 0.93, brim_y - 6], [rx * 0.93, brim_y - 6]]), _shade(look.hat_colour, 0.6), 2.5)


def _painted_geometry(
    cv: _Canvas, ident: Identity, f: _Layout, left: np.ndarray, right: np.ndarray
) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """The five landmarks and the face box (``x_1, y_1, width, height``) in output pixels."""
    local = np.array([
        [-ident.eye_dx, f.eye_y], [ident.eye_dx, f.eye_y], [0.0, f.nose_y], left, right,
    ])  # fmt: skip
    landmarks = cv.to_out(local)
    face_pts = cv.to_out(_face_outline(ident, n=180))
    x0, y0 = np.floor(face_pts.min(axis=0))
    x1, y1 = np.ceil(face_pts.max(axis=0))
    x0, y0 = max(0, int(x0)), max(0, int(y0))
    x1, y1 = min(WIDTH, int(x1)), min(HEIGHT, int(y1))
    return landmarks, (x0, y0, x1 - x0, y1 - y0)


def _light(img: Image.Image, look: Look, rng: np.random.Generator) -> Image.Image:
    """Global gain, a directional light gradient and a little sensor noise."""
    arr = np.asarray(img, np.float32)
    h, w = arr.shape[:2]
    gy, gx = np.mgrid[0:h, 0:w].astype(np.float32)
    ramp = ((gx / w - 0.5) * math.cos(look.light_dir) + (gy / h - 0.5) * math.sin(look.light_dir)) * 2
    gain = look.light_gain * (1 + look.light_strength * ramp)
    arr = arr * gain[..., None] + rng.normal(0, 2.0, (h, w, 1)).astype(np.float32)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")
