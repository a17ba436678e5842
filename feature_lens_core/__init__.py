"""feature-lens's compute core: load models and SAEs, find which features cause which.

>>> import feature_lens_core as flc
>>> model = flc.load_model("toy")
>>> flc.list_saes("toy")[:2]
['L0.resid_pre', 'L0.attn_z']
"""

from feature_lens_core.errors import FeatureLensError
from feature_lens_core.loading import list_saes, load_model, load_sae
from feature_lens_core.ranking import FeatureRef, activations, rank

__all__ = ["FeatureLensError", "FeatureRef", "activations", "list_saes", "load_model", "load_sae", "rank"]
