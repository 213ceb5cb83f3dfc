"""A scripted FrankaKitchen-v1 expert: waypoints per task, tracked by a damped-least-squares controller.

How the env acts (gymnasium-robotics franka_env): the 9-D action is clipped to [-1, 1] and the position
servos get `ctrl = observed_qpos + 2 * a * dt` (dt = 0.08 s). With no velocity gain this acts like a
torque `kp * 2 * a * dt`, so an arm action is roughly a joint velocity plus whatever holds the arm up:
gravity is not compensated in the model, so we add the feed-forward `qfrc_bias / (2 * kp * dt)`.

The controller reads the simulator state (it is a privileged expert, not a policy on observations):
  * end-effector error -> twist (kp = 6, ko = 3, |v| <= 1 m/s, |w| <= 1.5 rad/s);
  * twist -> arm joint velocities by damped least squares on the site Jacobian (lambda = 0.05);
    a joint at its limit that the solution pushes further out loses its Jacobian column and the
    system is solved again (the reset posture already has joint 2 past its model limit).

Each task is a short list of segments (approach, grasp or hook, move, release) built from the objects'
positions when the task starts. A segment ends when the end effector is within tolerance, after its
step cap, or, for the approach and manipulation segments, as soon as the env reports the task done.
A task that is still not done after its last segment is tried once more. Pushes follow a "carrot"
that leads the end effector by 8 cm along the push line, so the contact is kept under perturbations.
Orders other than a contiguous run of microwave -> kettle -> light switch -> slide cabinet get a
joint-space move to the reset posture between tasks (without it, long transits flip the arm).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import mujoco
import numpy as np

ARM_JOINTS = 7
ACTION_DIM = 9
KNOWN_TASKS = ("microwave", "kettle", "light switch", "slide cabinet")
# Any contiguous run of this order works from reset without via-points between the tasks.
CANONICAL_ORDER = KNOWN_TASKS

# Controller constants (see the module docstring).
POSITION_GAIN = 6.0
ORIENTATION_GAIN = 3.0
MAX_LINEAR_SPEED = 1.0
MAX_ANGULAR_SPEED = 1.5
DAMPING = 0.05
LIMIT_MARGIN = 0.05
CARROT_LEAD = 0.08
HOME_TOLERANCE = 0.1  # rad, largest joint error that ends a joint-space move home
GRIPPER_OPEN, GRIPPER_CLOSED = 1.0, -1.0

# Site frame with the approach axis (site z) along world +y, fingers closing along world x.
FORWARD_ROT = np.array([[0.0, 1.0, 0.0],
                        [0.0, 0.0, 1.0],
                        [1.0, 0.0, 0.0]])
MICROWAVE_YAW = 0.3  # gripper yaw that faces the closed door's handle
MICROWAVE_JOINT = 22  # qpos index of the microwave hinge
MICROWAVE_PULL_LEAD = 0.10  # rad the pull target leads the door angle


def rot_z(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _is_canonical_run(order: Sequence[str]) -> bool:
    """True when `order` is a contiguous slice of CANONICAL_ORDER, e.g. (kettle, light switch)."""
    if not order:
        return True
    start = CANONICAL_ORDER.index(order[0])
    return tuple(order) == CANONICAL_ORDER[start:start + len(order)]


@dataclass
class Segment:
    """One stage of a task: where the end effector goes and when the stage ends.

    kind: 'pose' (go to pos/rot), 'push' (carrot along start->pos), 'door' (follow the microwave door),
    'release' (hold the pose where it starts, e.g. to open the gripper), 'back' (retreat 12 cm along
    the approach axis), 'joint' (joint-space move to `joints`). `until_done`: end as soon as `task`
    is reported complete.
    """

    kind: str
    task: str
    pos: np.ndarray | None = None
    rot: np.ndarray | None = None
    gripper: float = GRIPPER_CLOSED
    tol: float = 0.0  # position tolerance in m (0: run to the step cap)
    max_steps: int = 30
    until_done: bool = True
    start: np.ndarray | None = None  # push line start (the end effector when the push begins)
    joints: np.ndarray | None = None
    door: dict = field(default_factory=dict)  # hinge, handle0, angle0, rot0 for 'door'
    free_roll: bool = False  # ignore the roll about the approach axis (keeps joint 7 off its limit)


@dataclass(frozen=True)
class Retry:
    """Queue marker after a task's segments: run the task again if it is still not done."""

    task: str
    attempts_left: int = 1


class KitchenExpert:
    """Scripted expert for FrankaKitchen-v1. Call `reset(order)` after each `env.reset`, then `act`.

    `env` is the gymnasium env (any wrappers); `noise` is the std of Gaussian noise added to the arm
    actions; `rng` draws it.
    """

    def __init__(self, env, noise: float = 0.0, rng: np.random.Generator | None = None):
        self.kitchen = env.unwrapped
        self.model = self.kitchen.model
        self.data = self.kitchen.data
        self.noise = float(noise)
        self.rng = rng if rng is not None else np.random.default_rng(0)
        self.site_id = mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_SITE, "end_effector")
        self.dt = float(self.kitchen.robot_env.dt)
        self.servo_gain = self.model.actuator_gainprm[:ARM_JOINTS, 0].copy()
        self.home = np.array(self.kitchen.robot_env.init_qpos[:ARM_JOINTS], dtype=np.float64)
        # Model range intersected with the env's command bounds, shrunk by a margin; joint 6's
        # command floor of 0 is left out because reaching the microwave takes it slightly below.
        model_range = self.model.jnt_range[:ARM_JOINTS]
        env_bound = self.kitchen.robot_env.robot_pos_bound[:ARM_JOINTS]
        self.lower = np.maximum(model_range[:, 0], env_bound[:, 0]) + LIMIT_MARGIN
        self.lower[5] = model_range[5, 0] + LIMIT_MARGIN
        self.upper = np.minimum(model_range[:, 1], env_bound[:, 1]) - LIMIT_MARGIN
        self._jacp = np.zeros((3, self.model.nv))
        self._jacr = np.zeros((3, self.model.nv))
        self.order: tuple[str, ...] = ()
        self._queue: list = []
        self._segment: Segment | None = None
        self._segment_steps = 0
        self._previous_task = ""  # the task whose segments were built last

    # ------------------------------------------------------------------ plan
    def reset(self, order: Sequence[str] = CANONICAL_ORDER) -> None:
        """Plan the tasks in `order` (a subset of KNOWN_TASKS) for the episode that was just reset."""
        unknown = [task for task in order if task not in KNOWN_TASKS]
        if unknown:
            raise ValueError(f"the kitchen expert cannot do tasks {unknown}; it knows {KNOWN_TASKS}")
        self.order = tuple(order)
        # Task names (their segments are built when the task starts), via-points and retry markers.
        self._queue = []
        via_home = not _is_canonical_run(self.order)
        for index, task in enumerate(self.order):
            if index > 0 and via_home:
                self._queue.append(Segment("joint", "", joints=self.home, tol=HOME_TOLERANCE,
                                           max_steps=40, until_done=False))
            self._queue.extend([task, Retry(task)])
        self._segment = None
        self._segment_steps = 0
        self._previous_task = ""

    @property
    def finished(self) -> bool:
        """True once every planned segment has run (the expert then holds its pose)."""
        return self._segment is None and not self._queue

    def _task_segments(self, task: str) -> list[Segment]:
        builders = {"microwave": self._microwave, "kettle": self._kettle,
                    "light switch": self._light_switch, "slide cabinet": self._slide_cabinet}
        return builders[task]()

    def _site(self, name: str) -> np.ndarray:
        return self.data.site(name).xpos.copy()

    def _light_switch(self) -> list[Segment]:
        site = self._site("light_site")
        task = "light switch"
        return [Segment("pose", task, site + [0.08, -0.06, 0.0], FORWARD_ROT, tol=0.04, max_steps=25),
                Segment("pose", task, site + [0.06, 0.0, 0.0], FORWARD_ROT, tol=0.015, max_steps=20),
                Segment("push", task, site + [-0.10, 0.0, 0.0], FORWARD_ROT, tol=0.01, max_steps=25)]

    def _slide_cabinet(self) -> list[Segment]:
        site = self._site("slide_site")
        task = "slide cabinet"
        return [Segment("pose", task, site + [-0.07, -0.08, 0.0], FORWARD_ROT, tol=0.04, max_steps=25),
                Segment("pose", task, site + [-0.06, 0.0, 0.0], FORWARD_ROT, tol=0.015, max_steps=20),
                Segment("push", task, site + [0.25, 0.0, 0.0], FORWARD_ROT, tol=0.01, max_steps=35),
                Segment("pose", task, site + [0.0, -0.12, -0.05], FORWARD_ROT, GRIPPER_OPEN, tol=0.03,
                        max_steps=10, until_done=False)]

    def _microwave(self) -> list[Segment]:
        # Built from the door's current angle, so a retry can regrasp a half-open door.
        handle = self._site("microhandle_site")
        hinge = self.data.body("microdoorroot").xpos.copy()
        angle = float(self.data.qpos[MICROWAVE_JOINT])
        task = "microwave"
        turn = rot_z(angle + MICROWAVE_YAW)
        normal = turn @ np.array([0.0, 1.0, 0.0])
        rot = turn @ FORWARD_ROT
        door = {"hinge": hinge, "handle0": handle, "angle0": angle, "rot0": rot}
        return [Segment("pose", task, handle - 0.15 * normal, rot, GRIPPER_OPEN, tol=0.01, max_steps=30),
                Segment("push", task, handle, rot, GRIPPER_OPEN, tol=0.01, max_steps=20),
                Segment("pose", task, handle, rot, GRIPPER_CLOSED, max_steps=4),
                Segment("door", task, gripper=GRIPPER_CLOSED, max_steps=60, door=door),
                Segment("release", task, gripper=GRIPPER_OPEN, max_steps=3, until_done=False),
                Segment("back", task, gripper=GRIPPER_OPEN, tol=0.03, max_steps=12, until_done=False)]

    def _kettle(self) -> list[Segment]:
        # Pushed with the open hand. Coming from the reset posture (not from the microwave), holding
        # the roll drives joint 7 into its limit and the twisted hand yaws the kettle past the goal,
        # so the roll is left free there; after the microwave, holding it works better.
        root = self.data.body("kettleroot").xpos.copy()
        task = "kettle"
        free_roll = self._previous_task != "microwave"
        return [Segment("pose", task, root + [0.0, -0.292, 0.06], FORWARD_ROT, GRIPPER_OPEN, tol=0.03,
                        max_steps=30, free_roll=free_roll),
                Segment("pose", task, root + [0.0, -0.172, 0.06], FORWARD_ROT, GRIPPER_OPEN, tol=0.02,
                        max_steps=20, free_roll=free_roll),
                Segment("push", task, root + [0.0, 0.2, 0.06], FORWARD_ROT, GRIPPER_OPEN, tol=0.01,
                        max_steps=30, free_roll=free_roll),
                Segment("pose", task, root + [0.0, -0.05, 0.15], FORWARD_ROT, GRIPPER_OPEN, tol=0.03,
                        max_steps=10, until_done=False, free_roll=free_roll)]

    def _next_segment(self, completed: Sequence[str]) -> None:
        """Advance to the first segment that still has work to do."""
        while True:
            if not self._queue:
                self._segment = None
                return
            item = self._queue.pop(0)
            if isinstance(item, str):
                self._queue[:0] = self._task_segments(item)
                self._previous_task = item
                continue
            if isinstance(item, Retry):
                if item.task not in completed and item.attempts_left > 0:
                    self._queue[:0] = [item.task, Retry(item.task, item.attempts_left - 1)]
                continue
            if item.until_done and item.task in completed:
                continue
            self._begin(item)
            self._segment = item
            self._segment_steps = 0
            return

    def _begin(self, segment: Segment) -> None:
        """Fill in the parts of a segment that depend on where the arm is when it starts."""
        position, rotation = self._site_pose()
        if segment.kind == "push":
            segment.start = position
        elif segment.kind in ("release", "back"):
            segment.rot = rotation
            segment.pos = position
            if segment.kind == "back":  # back off along the gripper's approach axis
                segment.pos = position - 0.12 * rotation[:, 2]

    # ------------------------------------------------------------------ act
    def act(self, completed: Sequence[str] = ()) -> np.ndarray:
        """The next 9-D action; `completed` is info['episode_task_completions'] of the last step."""
        if self._segment is None or self._segment_over(completed):
            self._next_segment(completed)
        segment = self._segment
        action = np.zeros(ACTION_DIM)
        if segment is None:  # plan done: hold the current pose
            position, rotation = self._site_pose()
            action[:ARM_JOINTS] = self._track(position, rotation)
            action[ARM_JOINTS:] = GRIPPER_OPEN
        elif segment.kind == "joint":
            q = self.data.qpos[:ARM_JOINTS]
            action[:ARM_JOINTS] = np.clip(2.0 * (segment.joints - q), -1.0, 1.0) + self._gravity()
            action[ARM_JOINTS:] = GRIPPER_OPEN
        else:
            position, rotation = self._segment_target(segment)
            action[:ARM_JOINTS] = self._track(position, rotation, segment.free_roll)
            action[ARM_JOINTS:] = segment.gripper
        self._segment_steps += 1
        if self.noise > 0:
            action[:ARM_JOINTS] += self.noise * self.rng.standard_normal(ARM_JOINTS)
        return np.clip(action, -1.0, 1.0)

    def _segment_over(self, completed: Sequence[str]) -> bool:
        segment = self._segment
        if self._segment_steps >= segment.max_steps:
            return True
        if segment.until_done and segment.task in completed:
            return True
        if segment.tol <= 0:
            return False
        if segment.kind == "joint":
            return bool(np.max(np.abs(segment.joints - self.data.qpos[:ARM_JOINTS])) < segment.tol)
        position, _ = self._site_pose()
        return bool(np.linalg.norm(segment.pos - position) < segment.tol)

    def _segment_target(self, segment: Segment) -> tuple[np.ndarray, np.ndarray]:
        if segment.kind == "push":
            return self._carrot(segment), segment.rot
        if segment.kind == "door":
            door = segment.door
            opened = float(self.data.qpos[MICROWAVE_JOINT]) - door["angle0"]
            turn = rot_z(opened - MICROWAVE_PULL_LEAD)
            position = door["hinge"] + turn @ (door["handle0"] - door["hinge"])
            return position, turn @ door["rot0"]
        return segment.pos, segment.rot

    def _carrot(self, segment: Segment) -> np.ndarray:
        """A target CARROT_LEAD ahead of the end effector's projection on the push line, capped at its end."""
        position, _ = self._site_pose()
        line = segment.pos - segment.start
        length = float(np.linalg.norm(line))
        if length < 1e-9:
            return segment.pos
        along = float(np.dot(position - segment.start, line)) / length
        along = min(max(along, 0.0) + CARROT_LEAD, length)
        return segment.start + along / length * line

    # ------------------------------------------------------------------ controller
    def _site_pose(self) -> tuple[np.ndarray, np.ndarray]:
        rotation = self.data.site_xmat[self.site_id].reshape(3, 3).copy()
        return self.data.site_xpos[self.site_id].copy(), rotation

    def _gravity(self) -> np.ndarray:
        """Arm action that makes the servos cancel gravity and Coriolis forces."""
        return self.data.qfrc_bias[:ARM_JOINTS] / (2.0 * self.servo_gain * self.dt)

    def _track(self, target_pos: np.ndarray, target_rot: np.ndarray, free_roll: bool = False) -> np.ndarray:
        """Arm action driving the end effector toward the target pose (roll ignored if `free_roll`)."""
        position, rotation = self._site_pose()
        linear = POSITION_GAIN * (target_pos - position)
        speed = np.linalg.norm(linear)
        if speed > MAX_LINEAR_SPEED:
            linear *= MAX_LINEAR_SPEED / speed
        rotation_error = 0.5 * sum(np.cross(rotation[:, i], target_rot[:, i]) for i in range(3))
        angular = ORIENTATION_GAIN * rotation_error
        angular_speed = np.linalg.norm(angular)
        if angular_speed > MAX_ANGULAR_SPEED:
            angular *= MAX_ANGULAR_SPEED / angular_speed
        mujoco.mj_jacSite(self.model, self.data, self._jacp, self._jacr, self.site_id)
        angular_jacobian = self._jacr[:, :ARM_JOINTS]
        if free_roll:  # leave the roll about the approach axis (site z) free: 5 rows, not 6
            across = rotation[:, :2].T
            angular, angular_jacobian = across @ angular, across @ angular_jacobian
        twist = np.concatenate([linear, angular])
        jacobian = np.vstack([self._jacp[:, :ARM_JOINTS], angular_jacobian])
        return self._solve(jacobian, twist, self.data.qpos[:ARM_JOINTS]) + self._gravity()

    def _solve(self, jacobian: np.ndarray, twist: np.ndarray, q: np.ndarray) -> np.ndarray:
        """Damped least squares; joints at a limit that would be pushed outward are frozen."""
        active = np.ones(ARM_JOINTS, dtype=bool)
        dq = np.zeros(ARM_JOINTS)
        for _ in range(5):
            masked = jacobian * active
            dq = masked.T @ np.linalg.solve(masked @ masked.T + DAMPING**2 * np.eye(len(twist)), twist)
            blocked = active & (((q <= self.lower) & (dq < 0)) | ((q >= self.upper) & (dq > 0)))
            if not blocked.any():
                break
            active &= ~blocked
        dq[~active] = 0.0
        return dq
