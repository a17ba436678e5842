"""feature-lens's compute core: load models and SAEs, find which features cause which.

>>> import feature_lens_core as flc
>>> model = flc.load_model("toy")
>>> flc.list_saes("toy")[:2]
['L0.resid_pre', 'L0.attn_z']
>>> str(flc.FeatureRef.parse("L2.resid_pre:660@5"))
'L2.resid_pre:660@5'
"""

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from feature_lens_core.attribution_graph import adjacency, attribution_graph
    from feature_lens_core.batch import FeatureSpec, held_out_prompts, rank_many
    from feature_lens_core.connectome import build_graph, faithfulness
    from feature_lens_core.directions import direction_sae, load_direction, steering_vector
    from feature_lens_core.errors import FeatureLensError, NothingToRank
    from feature_lens_core.loading import list_saes, load_model, load_sae
    from feature_lens_core.options import BASELINES, DIRECTIONS, GRAPH_DIRECTIONS, METHODS
    from feature_lens_core.ranking import activations, predictions, rank
    from feature_lens_core.targets import FeatureRef, LogitDiffRef, LogitRef, Target, parse_target

# Where each public name lives. Importing the package imports none of them: torch, TransformerLens and SAE-Lens take
# about ten seconds to import, and the app draws its first page without them (shipped results) while they load.
_PUBLIC = {
    "adjacency": "feature_lens_core.attribution_graph",
    "attribution_graph": "feature_lens_core.attribution_graph",
    "FeatureSpec": "feature_lens_core.batch",
    "held_out_prompts": "feature_lens_core.batch",
    "rank_many": "feature_lens_core.batch",
    "build_graph": "feature_lens_core.connectome",
    "faithfulness": "feature_lens_core.connectome",
    "direction_sae": "feature_lens_core.directions",
    "load_direction": "feature_lens_core.directions",
    "steering_vector": "feature_lens_core.directions",
    "FeatureLensError": "feature_lens_core.errors",
    "NothingToRank": "feature_lens_core.errors",
    "list_saes": "feature_lens_core.loading",
    "load_model": "feature_lens_core.loading",
    "load_sae": "feature_lens_core.loading",
    "BASELINES": "feature_lens_core.options",
    "DIRECTIONS": "feature_lens_core.options",
    "GRAPH_DIRECTIONS": "feature_lens_core.options",
    "METHODS": "feature_lens_core.options",
    "activations": "feature_lens_core.ranking",
    "predictions": "feature_lens_core.ranking",
    "rank": "feature_lens_core.ranking",
    "FeatureRef": "feature_lens_core.targets",
    "LogitDiffRef": "feature_lens_core.targets",
    "LogitRef": "feature_lens_core.targets",
    "Target": "feature_lens_core.targets",
    "parse_target": "feature_lens_core.targets",
}


def __getattr__(name: str) -> Any:
    """A public name (imported from its module on first use), or a submodule (`flc.validation`)."""
    if name in _PUBLIC:
        value = getattr(importlib.import_module(_PUBLIC[name]), name)
    elif name.startswith("__"):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    else:
        try:
            value = importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"{__name__}.{name}":
                raise  # the submodule exists; something it imports is missing
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from exc
    globals()[name] = value
    return value


# feature_lens_core.clustering is not imported here: it loads scikit-learn, which takes seconds.
__all__ = [
    "BASELINES",
    "DIRECTIONS",
    "GRAPH_DIRECTIONS",
    "METHODS",
    "FeatureLensError",
    "FeatureRef",
    "FeatureSpec",
    "LogitDiffRef",
    "LogitRef",
    "NothingToRank",
    "Target",
    "activations",
    "predictions",
    "adjacency",
    "attribution_graph",
    "build_graph",
    "direction_sae",
    "faithfulness",
    "held_out_prompts",
    "list_saes",
    "load_direction",
    "load_model",
    "load_sae",
    "parse_target",
    "rank",
    "rank_many",
    "steering_vector",
]


class _Package(types.ModuleType):
    """The package, whose name `attribution_graph` means the function even once its submodule is imported (the
    import system sets the submodule as the package's attribute of that name, which would hide the function)."""

    @property
    def attribution_graph(self) -> Any:
        return importlib.import_module("feature_lens_core.attribution_graph").attribution_graph

    @attribution_graph.setter
    def attribution_graph(self, _value: Any) -> None:
        return  # the submodule stays reachable as `feature_lens_core.attribution_graph` in sys.modules


sys.modules[__name__].__class__ = _Package
