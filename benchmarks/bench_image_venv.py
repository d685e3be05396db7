"""The venv builder: a cold build of an image with one small package, and a cache hit.

Targets (issue 3): cold <= 1 s with uv's cache warm; cache hit <= 20 ms.

* cold: a new image id each time (an ``env`` step numbers it), so each is a full build:
  ``uv venv``, ``uv pip install tabulate==0.9.0`` (uv's cache warm; uv still revalidates
  the index page over the network), the runtime ``.pth``. The shared runtime is installed
  before measuring (once per remotecell and Python version, not per image).
* hit: ``ImageCache.get`` for an image built before, as the control plane would call it:
  the spec's id checked, the SQLite record read, the venv checked to still be there.

    python benchmarks/bench_image_venv.py [--cold 5] [--hits 200]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from remotecell.backend.images.cache import ImageCache
from remotecell.backend.images.venv import VenvBuilder
from remotecell.backend.state.images import ImageStore
from remotecell.client.image import Image

PACKAGE = "tabulate==0.9.0"


async def main(cold: int, hits: int) -> None:
    with tempfile.TemporaryDirectory(prefix="rc-bench-images-") as tmp:
        root = Path(tmp)
        builder = VenvBuilder(
            root / "venv", runtime_root=Path(tempfile.gettempdir()) / "remotecell-bench-runtimes"
        )
        cache = ImageCache(ImageStore(root / "state.sqlite3"), root / "logs", {"venv": builder})
        try:
            # warm-up: the runtime, and uv's cache for the package
            spec, blobs = Image.debian_slim().pip_install(PACKAGE).env({"N": "warm"}).to_spec()
            await cache.get(spec, blobs.__getitem__)

            cold_s = []
            for i in range(cold):
                spec, blobs = Image.debian_slim().pip_install(PACKAGE).env({"N": str(i)}).to_spec()
                started = time.perf_counter()
                await cache.get(spec, blobs.__getitem__)
                cold_s.append(time.perf_counter() - started)

            image = Image.debian_slim().pip_install(PACKAGE).env({"N": "0"})
            hit_s = []
            for _ in range(hits):
                started = time.perf_counter()
                spec, blobs = image.to_spec()
                await cache.get(spec, blobs.__getitem__)
                hit_s.append(time.perf_counter() - started)
        finally:
            await cache.close()

    def row(name: str, values: list[float], target: float) -> str:
        p50 = statistics.median(values) * 1000
        worst = max(values) * 1000
        ok = "yes" if p50 <= target * 1000 else "NO"
        return f"| {name} | {p50:.1f} | {worst:.1f} | {target * 1000:.0f} | {ok} |"

    print("| venv image, one small package | p50 ms | max ms | target ms | met |")
    print("|---|---|---|---|---|")
    print(row(f"cold build (n={cold}, uv cache warm)", cold_s, 1.0))
    print(row(f"cache hit incl. to_spec (n={hits})", hit_s, 0.020))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cold", type=int, default=5)
    parser.add_argument("--hits", type=int, default=200)
    args = parser.parse_args()
    asyncio.run(main(args.cold, args.hits))
