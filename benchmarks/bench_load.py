"""How long the built-in zoo takes to load: `python benchmarks/bench_load.py`.

Each run is a fresh Python process (so nothing is cached in memory), timing separately the import of
feature_lens_core (torch, TransformerLens, SAE-Lens) and loading the model plus all of its SAEs.
Prints the median of several runs and the size of the shipped zoo.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUNS = 5
PROBE = """
import json, time
start = time.perf_counter()
import feature_lens_core as flc
imported = time.perf_counter()
model = flc.load_model("toy")
saes = [flc.load_sae("toy", name) for name in flc.list_saes("toy")]
print(json.dumps({"import_s": imported - start, "load_s": time.perf_counter() - imported, "saes": len(saes)}))
"""


def main() -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    runs = [
        json.loads(
            subprocess.run(
                [sys.executable, "-c", PROBE], env=env, cwd=ROOT, capture_output=True, text=True, check=True
            ).stdout
        )
        for _ in range(RUNS)
    ]
    zoo = ROOT / "feature_lens_core" / "zoo" / "toy"
    size = sum(f.stat().st_size for f in zoo.rglob("*") if f.is_file())
    result = {
        "runs": RUNS,
        "saes": runs[0]["saes"],
        "import_s_median": statistics.median(r["import_s"] for r in runs),
        "load_model_and_saes_s_median": statistics.median(r["load_s"] for r in runs),
        "zoo_mb": size / 2**20,
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
