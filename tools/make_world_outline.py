"""Write bioscan5m/apps/world_outline.npy: the land outline behind the page's map of collection sites.

    python tools/make_world_outline.py PATH/naturalearth_lowres.shp

Source: Natural Earth 1:110m countries ("naturalearth_lowres", public domain), as shipped in the pyogrio wheel
(pyogrio/tests/fixtures/naturalearth_lowres/). Every polygon ring becomes a run of (longitude, latitude) rows,
rings separated by a NaN row, so matplotlib draws it as one line with breaks; float32, read with
allow_pickle=False. The shapefile is parsed here directly (polygons, type 5): no GIS dependency.
"""

from __future__ import annotations

import struct
import sys
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parents[1] / "bioscan5m" / "apps" / "world_outline.npy"


def rings(shp: bytes):
    offset = 100  # the file header
    while offset < len(shp):
        _, length = struct.unpack(">ii", shp[offset:offset + 8])
        record = shp[offset + 8:offset + 8 + 2 * length]
        offset += 8 + 2 * length
        if struct.unpack("<i", record[:4])[0] != 5:
            continue
        parts, points = struct.unpack("<ii", record[36:44])
        starts = list(struct.unpack(f"<{parts}i", record[44:44 + 4 * parts])) + [points]
        xy = np.frombuffer(record[44 + 4 * parts:44 + 4 * parts + 16 * points], dtype="<f8").reshape(points, 2)
        for start, end in zip(starts[:-1], starts[1:]):
            yield xy[start:end]


def main() -> None:
    pieces = []
    for ring in rings(Path(sys.argv[1]).read_bytes()):
        pieces += [ring, np.full((1, 2), np.nan)]
    outline = np.concatenate(pieces).astype(np.float32)
    np.save(OUT, outline, allow_pickle=False)
    print(f"{OUT}: {len(outline):,} rows")


if __name__ == "__main__":
    main()
