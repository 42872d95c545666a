"""Scene composition (pure numpy, seeded) and pybullet building / rendering, shared by make-data and make-scene.

A ``SceneSpec`` is plain data drawn from a ``numpy.random.Generator``: which objects, where, in which
colour, and the table / floor / wall textures and the light. ``build_scene`` turns it into pybullet
bodies in a DIRECT client and ``render`` draws it with the CPU TinyRenderer, so the same seed gives the
same pixels on every machine, with or without a GPU.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from find3d.compat.quiet import import_quietly
from find3d.data.engine.catalog import (
    PALETTE,
    TABLE_HALF_EXTENT,
    TABLE_TOP_Z,
    TEXTURES,
    THINGS,
    Category,
    obj_bounds,
)

WALL_DISTANCE = 1.8  # metres from the table centre to the wall
TINTS: dict[str, tuple[float, float, float]] = {  # gentle tints so stuff textures stay recognisable
    "plain": (1.0, 1.0, 1.0),
    "warm": (1.0, 0.85, 0.7),
    "cool": (0.75, 0.85, 1.0),
    "green": (0.75, 1.0, 0.8),
    "gray": (0.7, 0.7, 0.7),
    "cream": (0.95, 0.9, 0.75),
}


@dataclass(frozen=True)
class Contact:
    """How a cluttered object touches an earlier one (``find3d.data.engine.clutter``); resolved against
    the real collision shapes when the scene is built (``SceneBuilder``)."""

    kind: str  # "beside" (pushed against the partner), "lean" (tilted onto it) or "on" (resting on top)
    partner: int  # index of the earlier object in ``SceneSpec.objects``
    direction: float  # radians around z: from the partner towards this object ("on": offset of the centre)
    gap: float = 0.0  # metres between the two shapes; negative: they overlap that much
    tilt: float = 0.0  # radians, "lean" only: how far the top leans towards the partner


@dataclass(frozen=True)
class PlacedObject:
    """One thing on the table."""

    category: Category
    colour: str  # colour word used in captions and referring expressions
    xy: tuple[float, float]
    yaw: float
    contact: Contact | None = None  # set by ``compose_clutter``: xy is then only a starting guess


@dataclass(frozen=True)
class Surface:
    """A stuff surface's look: a pybullet_data texture and a tint."""

    texture: str | None  # None: plain paint
    tint: str


@dataclass(frozen=True)
class Light:
    direction: tuple[float, float, float]
    ambient: float
    diffuse: float
    specular: float
    shadow: bool


@dataclass(frozen=True)
class SceneSpec:
    objects: tuple[PlacedObject, ...]
    table: Surface
    floor: Surface
    wall: Surface
    wall_angle: float  # direction (radians, around z) from the table centre to the wall
    light: Light


@dataclass(frozen=True)
class Camera:
    """A pinhole camera looking from ``eye`` at ``target`` with z up (pybullet's world convention)."""

    eye: tuple[float, float, float]
    target: tuple[float, float, float]
    fov_deg: float  # vertical field of view
    near: float = 0.05
    far: float = 8.0

    def view_matrix(self) -> np.ndarray:
        """World-to-camera 4x4 in the OpenGL convention (x right, y up, looking along -z)."""
        p = import_quietly("pybullet")  # without its C build banner
        flat = p.computeViewMatrix(self.eye, self.target, (0.0, 0.0, 1.0))
        return np.asarray(flat, dtype=np.float64).reshape(4, 4, order="F")  # pybullet lists column-major

    def projection_matrix(self, width: int, height: int) -> np.ndarray:
        p = import_quietly("pybullet")  # without its C build banner
        flat = p.computeProjectionMatrixFOV(self.fov_deg, width / height, self.near, self.far)
        return np.asarray(flat, dtype=np.float64).reshape(4, 4, order="F")

    def camera_to_world(self) -> np.ndarray:
        return np.linalg.inv(self.view_matrix())

    def focal_px(self, height: int) -> float:
        """Focal length in pixels; square pixels, so it serves both axes."""
        return height / (2.0 * math.tan(math.radians(self.fov_deg) / 2.0))

    def linear_depth(self, buffer: np.ndarray) -> np.ndarray:
        """OpenGL depth buffer values in [0, 1] -> distance along the optical axis in metres."""
        return self.far * self.near / (self.far - (self.far - self.near) * buffer)


@dataclass
class Rendered:
    rgb: np.ndarray  # (H, W, 3) uint8
    body: np.ndarray  # (H, W) int32 pybullet body id, -1 where nothing was hit
    depth: np.ndarray  # (H, W) float32 metres along the optical axis (z-depth)
    raw_depth: np.ndarray = field(repr=False)  # (H, W) float32 OpenGL depth buffer, kept for checks


def compose_scene(rng: np.random.Generator, min_objects: int = 3, max_objects: int = 7) -> SceneSpec:
    """Draw a random tabletop: objects without overlap, random colours, surfaces and light."""
    count = int(rng.integers(min_objects, max_objects + 1))
    objects: list[PlacedObject] = []
    for _ in range(count):
        category = THINGS[int(rng.integers(len(THINGS)))]
        xy = _free_spot(rng, category.radius, objects)
        if xy is None:  # the table is full; fewer objects is fine
            break
        colour = category.colour or str(rng.choice(list(PALETTE)))
        objects.append(PlacedObject(category, colour, xy, float(rng.uniform(-math.pi, math.pi))))
    return SceneSpec(
        objects=tuple(objects),
        table=_surface(rng, "table"),
        floor=_surface(rng, "floor"),
        wall=_surface(rng, "wall"),
        wall_angle=float(rng.uniform(-math.pi, math.pi)),
        light=Light(
            direction=(float(rng.uniform(-2, 2)), float(rng.uniform(-2, 2)), float(rng.uniform(2, 4))),
            ambient=float(rng.uniform(0.4, 0.7)),
            diffuse=float(rng.uniform(0.4, 0.7)),
            specular=float(rng.uniform(0.0, 0.3)),
            shadow=bool(rng.random() < 0.7),
        ),
    )


def _surface(rng: np.random.Generator, kind: str) -> Surface:
    options = TEXTURES[kind]
    return Surface(options[int(rng.integers(len(options)))], str(rng.choice(list(TINTS))))


def _free_spot(rng: np.random.Generator, radius: float, placed: list[PlacedObject],
               within: tuple[float, float] = TABLE_HALF_EXTENT) -> tuple[float, float] | None:
    """Rejection-sample a position in the ``within`` half-extents of the table centre, at least the sum of
    footprint radii away from every placed object."""
    half_x, half_y = within
    for _ in range(50):
        xy = (float(rng.uniform(-half_x + radius, half_x - radius)),
              float(rng.uniform(-half_y + radius, half_y - radius)))
        if all(math.dist(xy, other.xy) >= radius + other.category.radius for other in placed):
            return xy
    return None


def camera_facing_wall(rng: np.random.Generator, spec: SceneSpec) -> Camera:
    """A close random viewpoint on an object, from the side opposite the wall (which fills the background).

    Close like a robot's wrist or head camera: objects span ~25-80 px of a 256 px image rather than
    10-30 px, so they cover enough stride-4 mask cells to be segmented; objects far from the aimed
    one may leave the frame, as in real photos.
    """
    azimuth = spec.wall_angle + math.pi + float(rng.uniform(-0.7, 0.7))
    elevation = float(rng.uniform(math.radians(25), math.radians(55)))
    distance = float(rng.uniform(0.5, 0.8))
    aim = spec.objects[int(rng.integers(len(spec.objects)))].xy if spec.objects else (0.0, 0.0)
    target = (aim[0] + float(rng.uniform(-0.1, 0.1)), aim[1] + float(rng.uniform(-0.1, 0.1)), TABLE_TOP_Z)
    return orbit_camera(target, azimuth, elevation, distance, float(rng.uniform(45, 60)))


def orbit_camera(
    target: tuple[float, float, float], azimuth: float, elevation: float, distance: float, fov_deg: float
) -> Camera:
    """A camera on a sphere around ``target`` (azimuth around z, elevation above the horizon)."""
    eye = (
        target[0] + distance * math.cos(elevation) * math.cos(azimuth),
        target[1] + distance * math.cos(elevation) * math.sin(azimuth),
        target[2] + distance * math.sin(elevation),
    )
    return Camera(eye=eye, target=target, fov_deg=fov_deg)


class SceneBuilder:
    """Owns one pybullet DIRECT client; ``build`` replaces its world with a ``SceneSpec``."""

    def __init__(self) -> None:
        p = import_quietly("pybullet")  # without its C build banner
        import pybullet_data

        self._p = p
        self._data = pybullet_data.getDataPath()
        self.client = p.connect(p.DIRECT)

    def close(self) -> None:
        self._p.disconnect(self.client)

    def build(self, spec: SceneSpec) -> dict[int, int | str]:
        """Load the scene; returns pybullet body id -> object index into ``spec.objects`` or stuff name."""
        p, cid = self._p, self.client
        p.resetSimulation(physicsClientId=cid)
        p.setAdditionalSearchPath(self._data, physicsClientId=cid)
        bodies: dict[int, int | str] = {}
        floor = p.loadURDF("plane.urdf", physicsClientId=cid)
        table = p.loadURDF("table/table.urdf", useFixedBase=True, physicsClientId=cid)
        wall = self._wall(spec.wall_angle)
        stuff = ((floor, "floor", spec.floor), (table, "table", spec.table), (wall, "wall", spec.wall))
        for body, name, surface in stuff:
            self._dress(body, surface)
            bodies[body] = name
        for index, body in enumerate(self._place_objects(spec.objects)):
            bodies[body] = index
        return bodies

    # ------------------------------------------------------------------------------------ contact
    def _distance(self, body: int, other: int, reach: float = 1.0) -> float:
        """Signed distance between two bodies' collision shapes (all links): negative where they overlap."""
        found = self._p.getClosestPoints(body, other, reach, physicsClientId=self.client)
        return min((point[8] for point in found), default=reach)

    def _bounds(self, body: int) -> tuple[np.ndarray, np.ndarray]:
        p, cid = self._p, self.client
        boxes = [p.getAABB(body, link, physicsClientId=cid) for link in range(-1, p.getNumJoints(body,
                                                                                                  physicsClientId=cid))]
        return np.min([b[0] for b in boxes], axis=0), np.max([b[1] for b in boxes], axis=0)

    def _move(self, body: int, position: np.ndarray, orientation: tuple[float, ...]) -> None:
        self._p.resetBasePositionAndOrientation(body, tuple(float(v) for v in position), orientation,
                                                physicsClientId=self.client)

    def _settle(self, body: int, contact: Contact, partner: int) -> None:
        """Put ``body`` in ``contact`` with ``partner``: bisection on the signed distance between their
        collision shapes, so objects touch (or overlap by ``-gap``) whatever their shapes."""
        p, cid = self._p, self.client
        position, orientation = (np.asarray(v, dtype=np.float64) for v in
                                 p.getBasePositionAndOrientation(body, physicsClientId=cid))
        orientation = tuple(orientation)
        toward = np.array([math.cos(contact.direction), math.sin(contact.direction), 0.0])
        low, high = self._bounds(partner)
        anchor = np.array([(low[0] + high[0]) / 2, (low[1] + high[1]) / 2, 0.0])
        if contact.kind == "lean":
            # about the horizontal axis z x toward; a negative angle tips the top towards the partner
            axis = (-toward[1], toward[0], 0.0)
            tilt = p.getQuaternionFromAxisAngle(axis, -contact.tilt)
            orientation = tuple(p.multiplyTransforms((0, 0, 0), tilt, (0, 0, 0), orientation)[1])
            self._move(body, position, orientation)
        box_low, box_high = self._bounds(body)
        offset = (position - (box_low + box_high) / 2) * [1, 1, 0]  # base relative to the box centre, in xy
        if contact.kind == "on":
            # off the partner's centre by up to a quarter of its narrower half-size, so stacks look placed
            xy = anchor + toward * 0.25 * float(np.min(high[:2] - low[:2])) / 2 + offset

            def at(height: float) -> float:
                self._move(body, xy + np.array([0.0, 0.0, height]), orientation)
                return self._distance(body, partner) - contact.gap

            self._bisect(at, TABLE_TOP_Z, high[2] + (box_high[2] - box_low[2]) + 0.01)
            return

        def along(reach: float) -> float:
            self._move(body, anchor + toward * reach + offset, orientation)
            seat = TABLE_TOP_Z - self._bounds(body)[0][2]  # then lowered (or raised) onto the table top
            self._move(body, anchor + toward * reach + offset + [0, 0, seat], orientation)
            return self._distance(body, partner) - contact.gap

        self._bisect(along, 0.0, 1.0)

    @staticmethod
    def _bisect(signed: Callable[[float], float], inside: float, outside: float, steps: int = 24) -> None:
        """Bisect for where ``signed`` (negative at ``inside``, positive at ``outside``) crosses zero; each
        call of ``signed`` moves the body, which is left at the crossing."""
        for _ in range(steps):
            middle = (inside + outside) / 2
            if signed(middle) < 0:
                inside = middle
            else:
                outside = middle
        signed(outside)  # end on the side that does not overlap more than asked

    def _wall(self, angle: float) -> int:
        p, cid = self._p, self.client
        shape = p.createVisualShape(p.GEOM_BOX, halfExtents=(0.02, 6.0, 3.0), physicsClientId=cid)
        position = (WALL_DISTANCE * math.cos(angle), WALL_DISTANCE * math.sin(angle), 3.0)
        orientation = p.getQuaternionFromEuler((0.0, 0.0, angle))
        return p.createMultiBody(baseVisualShapeIndex=shape, basePosition=position, baseOrientation=orientation,
                                 physicsClientId=cid)

    def _dress(self, body: int, surface: Surface) -> None:
        p, cid = self._p, self.client
        texture = -1 if surface.texture is None else p.loadTexture(f"{self._data}/{surface.texture}",
                                                                   physicsClientId=cid)
        p.changeVisualShape(body, -1, textureUniqueId=texture, rgbaColor=(*TINTS[surface.tint], 1.0),
                            physicsClientId=cid)

    def _place_objects(self, objects: tuple[PlacedObject, ...]) -> list[int]:
        """Each object's body, in order; one in contact settles against its partner, placed before it."""
        placed: list[int] = []
        for obj in objects:
            body = self._place(obj)
            if obj.contact is not None:
                self._settle(body, obj.contact, placed[obj.contact.partner])
            placed.append(body)
        return placed

    def _place(self, obj: PlacedObject) -> int:
        category = obj.category
        # Painted assets take their palette colour; textured ones keep their own look (white = no tint).
        rgba = (*PALETTE[obj.colour], 1.0) if category.colour is None else (1.0, 1.0, 1.0, 1.0)
        if category.asset.endswith(".obj"):
            return self._place_mesh(obj, rgba)
        p, cid = self._p, self.client
        body = p.loadURDF(category.asset, useFixedBase=True, globalScaling=category.scale, physicsClientId=cid)
        links = range(-1, p.getNumJoints(body, physicsClientId=cid))
        orientation = p.getQuaternionFromEuler((*category.upright[:2], category.upright[2] + obj.yaw))
        p.resetBasePositionAndOrientation(body, (0, 0, 0), orientation, physicsClientId=cid)
        # AABBs are of collision shapes, which match these assets' visuals closely enough to seat them.
        boxes = [p.getAABB(body, link, physicsClientId=cid) for link in links]
        low = np.min([b[0] for b in boxes], axis=0)
        high = np.max([b[1] for b in boxes], axis=0)
        centre = (low + high) / 2
        position = (obj.xy[0] - centre[0], obj.xy[1] - centre[1], TABLE_TOP_Z - low[2])
        p.resetBasePositionAndOrientation(body, position, orientation, physicsClientId=cid)
        if category.colour is None:
            for link in links:
                p.changeVisualShape(body, link, rgbaColor=rgba, physicsClientId=cid)
        return body

    def _place_mesh(self, obj: PlacedObject, rgba: tuple[float, ...]) -> int:
        """Visual-only mesh, recentred so its footprint centre sits at ``xy`` and its bottom on the table."""
        p, cid = self._p, self.client
        category = obj.category
        path = f"{self._data}/{category.asset}"
        low, high = obj_bounds(path)
        upright = np.asarray(p.getMatrixFromQuaternion(p.getQuaternionFromEuler(category.upright))).reshape(3, 3)
        corners = np.array([[x, y, z] for x in (low[0], high[0]) for y in (low[1], high[1]) for z in (low[2], high[2])])
        rotated = corners * category.scale @ upright.T
        r_low, r_high = rotated.min(axis=0), rotated.max(axis=0)
        offset = (-(r_low[0] + r_high[0]) / 2, -(r_low[1] + r_high[1]) / 2, -r_low[2])
        frame = {"fileName": path, "meshScale": [category.scale] * 3,
                 "orientation": p.getQuaternionFromEuler(category.upright)}
        shape = p.createVisualShape(
            p.GEOM_MESH, fileName=frame["fileName"], meshScale=frame["meshScale"], rgbaColor=rgba,
            visualFramePosition=offset, visualFrameOrientation=frame["orientation"], physicsClientId=cid,
        )
        # A convex-hull collision shape in the same frame: cluttered objects are set in contact with it.
        collision = p.createCollisionShape(
            p.GEOM_MESH, fileName=frame["fileName"], meshScale=frame["meshScale"], collisionFramePosition=offset,
            collisionFrameOrientation=frame["orientation"], physicsClientId=cid,
        )
        return p.createMultiBody(
            baseCollisionShapeIndex=collision, baseVisualShapeIndex=shape,
            basePosition=(obj.xy[0], obj.xy[1], TABLE_TOP_Z),
            baseOrientation=p.getQuaternionFromEuler((0.0, 0.0, obj.yaw)), physicsClientId=cid,
        )

    def render(self, camera: Camera, light: Light, width: int, height: int) -> Rendered:
        p = self._p
        _, _, rgba, raw, seg = p.getCameraImage(
            width, height,
            viewMatrix=camera.view_matrix().flatten(order="F").tolist(),
            projectionMatrix=camera.projection_matrix(width, height).flatten(order="F").tolist(),
            renderer=p.ER_TINY_RENDERER,
            flags=p.ER_SEGMENTATION_MASK_OBJECT_AND_LINKINDEX,
            shadow=int(light.shadow),
            lightDirection=light.direction,
            lightAmbientCoeff=light.ambient,
            lightDiffuseCoeff=light.diffuse,
            lightSpecularCoeff=light.specular,
            physicsClientId=self.client,
        )
        rgb = np.asarray(rgba, dtype=np.uint8).reshape(height, width, 4)[..., :3].copy()
        seg = np.asarray(seg, dtype=np.int64).reshape(height, width)
        # With OBJECT_AND_LINKINDEX the value is body + ((link + 1) << 24); keep the body only.
        body = np.where(seg >= 0, seg & ((1 << 24) - 1), -1).astype(np.int32)
        raw = np.asarray(raw, dtype=np.float32).reshape(height, width)
        return Rendered(rgb=rgb, body=body, depth=camera.linear_depth(raw).astype(np.float32), raw_depth=raw)
