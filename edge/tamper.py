"""Camera tamper checks on the small grey frame: frozen image, covered or black lens, and a
sudden lasting change of view (the camera was turned)."""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np
import numpy.typing as npt

from protocols.enums import TamperReason

_THUMB = (64, 36)
_CURRENT_ALPHA = 0.1  # ~2 s at 5 analysed frames a second
_FOLLOW_ALPHA = 0.01


@dataclass(frozen=True)
class TamperSettings:
    frozen_s: float = 20.0  # identical frames this long while the stream runs
    covered_s: float = 10.0  # dark or featureless this long
    covered_max_mean: float = 18.0  # mean grey level of a black lens
    covered_max_std: float = 6.0  # contrast of a covered or sprayed lens
    scene_change_s: float = 10.0  # a different view, stable this long
    scene_min_similarity: float = 0.35  # correlation with the learned view below this
    learn_s: float = 10.0  # how long a view must be stable before it is the reference


@dataclass
class _Condition:
    """A condition that must hold for `hold_s` before it counts, and is then active."""

    hold_s: float
    since: float | None = None
    active: bool = False

    def update(self, holds: bool, t: float) -> bool | None:
        """Return True when it becomes active, False when it clears, None otherwise."""
        if holds:
            if self.since is None:
                self.since = t
            if not self.active and t - self.since >= self.hold_s:
                self.active = True
                return True
            return None
        self.since = None
        if self.active:
            self.active = False
            return False
        return None


def _structure(grey: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
    """The view's fine structure: a high-passed thumbnail, zero mean, unit norm.

    Brightness and its slow gradients (day and night, IR switching, a wall lit from one
    side) are removed, so two different views no longer correlate, while the same view
    does; measured on the asset clips: same view >= 0.71, another view <= 0.05.
    """
    thumb = cv2.resize(grey, _THUMB, interpolation=cv2.INTER_AREA).astype(np.float32)
    thumb -= cv2.GaussianBlur(thumb, (0, 0), 3)
    thumb -= thumb.mean()
    return _renormalised(thumb)


@dataclass
class TamperMonitor:
    """Feed it every analysed frame; it reports tamper conditions starting and ending."""

    settings: TamperSettings = field(default_factory=TamperSettings)
    _frozen: _Condition = field(init=False)
    _covered: _Condition = field(init=False)
    _changed: _Condition = field(init=False)
    _previous: npt.NDArray[np.uint8] | None = field(default=None, init=False)
    _reference: npt.NDArray[np.float32] | None = field(default=None, init=False)
    _learning_since: float | None = field(default=None, init=False)
    _current: npt.NDArray[np.float32] | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        s = self.settings
        self._frozen = _Condition(s.frozen_s)
        self._covered = _Condition(s.covered_s)
        self._changed = _Condition(s.scene_change_s)

    def update(self, grey: npt.NDArray[np.uint8], t: float) -> list[tuple[TamperReason, bool]]:
        """(reason, True) when a tamper starts, (reason, False) when it ends."""
        s = self.settings
        changes: list[tuple[TamperReason, bool]] = []
        frozen = (
            self._previous is not None
            and self._previous.shape == grey.shape
            and not np.any(cv2.absdiff(self._previous, grey))
        )
        self._previous = grey
        mean, std = cv2.meanStdDev(grey)
        covered = float(mean[0][0]) <= s.covered_max_mean or float(std[0][0]) <= s.covered_max_std
        for reason, condition, holds in (
            (TamperReason.FROZEN, self._frozen, frozen),
            (TamperReason.COVERED, self._covered, covered),
        ):
            change = condition.update(holds, t)
            if change is not None:
                changes.append((reason, change))
        if not covered and not frozen:
            change = self._check_view(_structure(grey), t)
            if change is not None:
                changes.append((TamperReason.SCENE_CHANGE, change))
        return changes

    def _check_view(self, view: npt.NDArray[np.float32], t: float) -> bool | None:
        s = self.settings
        # The current view averages the last couple of seconds, so a car or a person
        # passing through does not look like another view.
        self._current = (
            view
            if self._current is None
            else ((1 - _CURRENT_ALPHA) * self._current + _CURRENT_ALPHA * view)
        )
        if self._reference is None or self._learning_since is not None:
            # Learn the view for learn_s before judging it.
            if self._reference is None:
                self._reference, self._learning_since = view, t
            else:
                self._reference = 0.9 * self._reference + 0.1 * view
            if self._learning_since is not None and t - self._learning_since >= s.learn_s:
                self._learning_since = None
            return None
        similarity = float(np.sum(_renormalised(self._current) * _renormalised(self._reference)))
        similar = similarity >= s.scene_min_similarity
        change = self._changed.update(not similar, t)
        if similar and not self._changed.active:
            # Follow slow changes of the accepted view (seasons, a parked car).
            self._reference = (1 - _FOLLOW_ALPHA) * self._reference + _FOLLOW_ALPHA * view
        return change


def _renormalised(view: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    norm = float(np.linalg.norm(view))
    return view / norm if norm > 1e-6 else view
