"""Regenerate screenshots/*.svg from the app itself (the same deterministic scenes as the snapshot tests).

make screenshots
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from tests.tui_scenes import SCENES, scene_app  # noqa: E402


async def shoot(scene, out_dir: Path) -> Path:
    app = scene_app(scene)
    async with app.run_test(size=(80, 24)) as pilot:
        if scene.ready:  # the same order as snap_compare: run_before, then the key presses
            await scene.ready(pilot)
        for key in scene.press:
            await pilot.press(key)
        await pilot.pause(0.2)
        path = out_dir / f"{scene.name}.svg"
        app.save_screenshot(filename=path.name, path=str(out_dir))
    return path


def main() -> None:
    out_dir = ROOT / "screenshots"
    out_dir.mkdir(exist_ok=True)
    for scene in SCENES:
        print(asyncio.run(shoot(scene, out_dir)))


if __name__ == "__main__":
    main()
