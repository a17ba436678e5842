"""feature-lens's compute core: load models and SAEs, find which features cause which.

>>> import feature_lens_core as flc
>>> model = flc.load_model("toy")
>>> flc.list_saes("toy")[:2]
['L0.resid_pre', 'L0.attn_z']
>>> str(flc.FeatureRef.parse("L2.resid_pre:660@5"))
'L2.resid_pre:660@5'
"""

from feature_lens_core.attribution_graph import adjacency, attribution_graph
from feature_lens_core.batch import FeatureSpec, held_out_prompts, rank_many
from feature_lens_core.connectome import build_graph, faithfulness
from feature_lens_core.directions import direction_sae, load_direction, steering_vector
from feature_lens_core.errors import FeatureLensError, NothingToRank
from feature_lens_core.loading import list_saes, load_model, load_sae
from feature_lens_core.options import BASELINES, DIRECTIONS, GRAPH_DIRECTIONS, METHODS
from feature_lens_core.ranking import activations, predictions, rank
from feature_lens_core.targets import FeatureRef, LogitDiffRef, LogitRef, Target, parse_target

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
