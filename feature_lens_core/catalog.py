"""What can be loaded: the built-in zoo and SAE-Lens's offline directory of pretrained releases."""

from __future__ import annotations

import functools
from dataclasses import dataclass

from feature_lens_core.zoo.paths import SAES_DIR

BUILTIN_MODEL = "toy"
BUILTIN_MODEL_TITLE = "shakespeare-3l (built-in)"


@dataclass(frozen=True)
class HubSae:
    """One SAE of an SAE-Lens release, as listed in the offline directory."""

    release: str
    sae_id: str
    model: str
    neuronpedia_id: str | None

    @property
    def name(self) -> str:
        """The name used everywhere in feature-lens: `release/sae_id`."""
        return f"{self.release}/{self.sae_id}"


def builtin_sae_names() -> list[str]:
    """Names of the shipped SAEs, in forward-pass order (layer, then resid_pre, attn, mlp)."""
    order = {"resid_pre": 0, "attn_z": 1, "mlp_out": 2, "transcoder": 3, "resid_post": 4}
    names = [p.name for p in SAES_DIR.iterdir() if (p / "cfg.json").exists()] if SAES_DIR.is_dir() else []
    return sorted(names, key=lambda n: (int(n.split(".")[0][1:]), order.get(n.split(".")[1], 9)))


@functools.cache
def hub_saes() -> dict[str, HubSae]:
    """Every SAE in SAE-Lens's directory (shipped inside the wheel, so readable offline)."""
    from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory

    saes: dict[str, HubSae] = {}
    for release, lookup in get_pretrained_saes_directory().items():
        for sae_id in lookup.saes_map:
            neuronpedia = (lookup.neuronpedia_id or {}).get(sae_id)
            entry = HubSae(release, sae_id, lookup.model, neuronpedia)
            saes[entry.name] = entry
    return saes


def hub_models() -> list[str]:
    """TransformerLens model names that SAE-Lens has at least one release for."""
    return sorted({s.model for s in hub_saes().values()})


def neuronpedia_url(neuronpedia_id: str, feature: int) -> str:
    """Link to a feature's Neuronpedia page."""
    return f"https://www.neuronpedia.org/{neuronpedia_id}/{feature}"
