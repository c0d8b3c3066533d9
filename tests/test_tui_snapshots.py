"""Snapshot of every screen at 80×24 with deterministic content (fake hardware, fixed runs).

Regenerate after an intended change with `pytest tests/test_tui_snapshots.py --snapshot-update`.
"""

from __future__ import annotations

import pytest

from .tui_scenes import SCENES, scene_app


@pytest.mark.parametrize("scene", SCENES, ids=[scene.name for scene in SCENES])
def test_screen_snapshot(snap_compare, scene):
    assert snap_compare(scene_app(scene), press=scene.press, terminal_size=(80, 24), run_before=scene.ready)
