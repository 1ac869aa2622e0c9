"""Fetch and prepare the photos that `yoda-srdiff-x4` is trained and validated on.

The photos come from five Debian packages (`apt-get download` + `dpkg-deb -x`, no root needed) and
from scikit-image's bundled colour photos. Synthetic wallpapers (logos, stripes, gradients, renders)
are left out: the model is for photographs. Stages 1-4 of the recipe ran before the 11 photos of
lomiri-wallpapers-20.04 and plasma-workspace-wallpapers were added; stage 5 uses all 44. Each photo
is converted to RGB and, when its longest side exceeds --max-side, downscaled with the project's
antialiased bicubic (which also removes most JPEG artefacts and sensor noise from the HR targets).
The validation split is fixed by VALIDATION below (also listed in configs/yoda-srdiff-x4-val.txt)
and never used for training or tuning.

    python configs/fetch_photos.py --out data/photos      # -> data/photos/{train,val}/*.png
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
from pathlib import Path

import numpy as np

PACKAGES = (
    "mate-backgrounds",
    "lomiri-wallpapers-16.04",
    "lomiri-wallpapers-20.04",
    "lxqt-themes",
    "plasma-workspace-wallpapers",
)
"""Debian packages with high-resolution photos (licences: DATA; from each package's copyright file,
and for plasma-workspace-wallpapers each wallpaper's metadata.json)."""

DATA = (
    "configs/fetch_photos.py: Debian mate-backgrounds (GPL-2+), lomiri-wallpapers-16.04 (CC-BY-4.0, "
    "CC-BY-SA-4.0, CC0-1.0), lomiri-wallpapers-20.04 (CC-BY-SA-3.0), lxqt-themes (CC-BY-SA-3.0, LGPL), "
    "plasma-workspace-wallpapers (LGPL-3, CC-BY-SA-4.0) and scikit-image photos"
)
"""Where the photos come from, with their licences: the ``data`` that package_model.py records."""

DEBIAN_PHOTOS = (
    "usr/share/backgrounds/Bridge_by_Sander_Klootwijk.jpg",
    "usr/share/backgrounds/Dragonfly_by_Bolly.jpg",
    "usr/share/backgrounds/Picture_0B_by_freespace.jpg",
    "usr/share/backgrounds/Picture_1A_by_freespace.jpg",
    "usr/share/backgrounds/Wine_by_Jakkub_Mede.jpg",
    "usr/share/backgrounds/aitzgorri_by_Aitzol_Berasategi.jpg",
    "usr/share/backgrounds/free_by_Peter_Nerlich.jpg",
    "usr/share/backgrounds/friends_by_Aitzol_Berasategi.jpg",
    "usr/share/backgrounds/greentock_by_Peter_Nerlich.jpg",
    "usr/share/backgrounds/life_by_Aitzol_Berasategi.jpg",
    "usr/share/backgrounds/picosdeeuropa_by_Aitzol_Berasategi.jpg",
    "usr/share/backgrounds/seeding_by_Clements_Engelhardt.jpg",
    "usr/share/backgrounds/sunset_by_Aitzol_Berasategi.jpg",
    "usr/share/backgrounds/umang_by_Abhishek_Mudgal.jpg",
    "usr/share/backgrounds/mate/abstract/Elephants_3840x2160.jpg",
    "usr/share/backgrounds/mate/nature/Blinds.jpg",
    "usr/share/backgrounds/mate/nature/Dune.jpg",
    "usr/share/backgrounds/mate/nature/Garden.jpg",
    "usr/share/backgrounds/mate/nature/LadyBird.jpg",
    "usr/share/backgrounds/mate/nature/RainDrops.jpg",
    "usr/share/backgrounds/mate/nature/Storm.jpg",
    "usr/share/backgrounds/mate/nature/TwoWings.jpg",
    "usr/share/backgrounds/mate/nature/Wood.jpg",
    "usr/share/backgrounds/mate/nature/YellowFlower.jpg",
    "usr/share/lxqt/wallpapers/after-the-rain.jpg",
    "usr/share/lxqt/wallpapers/appleflower.png",
    "usr/share/lxqt/wallpapers/beam.png",
    "usr/share/lxqt/wallpapers/butterfly.png",
    "usr/share/lxqt/wallpapers/cloud.png",
    "usr/share/lxqt/wallpapers/drop.png",
    "usr/share/lxqt/wallpapers/flowers.png",
    "usr/share/lxqt/wallpapers/fog.jpg",
    "usr/share/backgrounds/Kleiber_by_Lukas_Baubkus.jpg",
    *(
        f"usr/share/wallpapers/{name}/contents/images/{size}.jpg"
        for name, size in (
            ("BytheWater", "2560x1600"),
            ("ColdRipple", "2560x1600"),
            ("ColorfulCups", "2560x1600"),
            ("EveningGlow", "2560x1600"),
            ("FallenLeaf", "2560x1600"),
            ("Grey", "2560x1600"),
            ("OneStandsOut", "2560x1600"),
            ("Path", "2560x1600"),
            ("summer_1am", "2560x1600"),
            ("Volna", "5120x2880"),
        )
    ),
)
"""Photographs only; a Plasma wallpaper is named by its folder (its files are named by size)."""
SKIMAGE_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "retina")

VALIDATION = (
    "Bridge_by_Sander_Klootwijk",
    "LadyBird",
    "butterfly",
    "sunset_by_Aitzol_Berasategi",
    "astronaut",
)
"""Held out: the validation split (stems of the prepared files)."""


def photo_name(relative: str) -> str:
    """The prepared file's stem: the file's own, or a Plasma wallpaper's folder name."""
    parts = Path(relative).parts
    return parts[-4] if parts[-3:-1] == ("contents", "images") else Path(relative).stem


def extract_packages(work: Path) -> Path:
    """Download the packages into ``work`` and unpack them into ``work/root``."""
    root = work / "root"
    root.mkdir(parents=True, exist_ok=True)
    subprocess.run(["apt-get", "download", *PACKAGES], cwd=work, check=True, capture_output=True)
    for deb in sorted(work.glob("*.deb")):
        subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
    return root


def prepare(rgb: np.ndarray, max_side: int) -> np.ndarray:
    """RGB uint8, downscaled (antialiased bicubic) so that its longest side is at most ``max_side``."""
    from yoda_sr.image.imaging import resize_bicubic, to_array, to_tensor

    height, width = rgb.shape[:2]
    factor = max_side / max(height, width)
    if factor >= 1:
        return rgb
    size = (round(height * factor), round(width * factor))
    return to_array(resize_bicubic(to_tensor(rgb), size=size))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("data/photos"))
    parser.add_argument("--max-side", type=int, default=1024)
    args = parser.parse_args()
    from PIL import Image
    from skimage import data

    from yoda_sr.image.io import read_picture

    photos: dict[str, np.ndarray] = {}
    with tempfile.TemporaryDirectory() as work:
        root = extract_packages(Path(work))
        for relative in DEBIAN_PHOTOS:
            picture = read_picture(root / relative, max_pixels=None)
            rgb = picture.rgb if picture.bits == 8 else (picture.rgb // 257).astype(np.uint8)
            photos[photo_name(relative)] = rgb
    for name in SKIMAGE_PHOTOS:
        image = getattr(data, name)()
        photos[name] = np.ascontiguousarray(image[..., :3] if image.ndim == 3 else np.stack([image] * 3, -1))
    for split in ("train", "val"):
        (args.out / split).mkdir(parents=True, exist_ok=True)
    for name, rgb in sorted(photos.items()):
        split = "val" if name in VALIDATION else "train"
        Image.fromarray(prepare(rgb, args.max_side)).save(args.out / split / f"{name}.png")
    print(f"{len(photos) - len(VALIDATION)} training and {len(VALIDATION)} validation photos in {args.out}")


if __name__ == "__main__":
    main()
