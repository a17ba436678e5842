"""Graphs in circuit-tracer's graph-file JSON, the format its frontend and Neuronpedia's graph viewer read.

The layout follows circuit-tracer 0.5.0's `frontend/graph_models.py` (`Model`, `Metadata`, `QParams`,
`Node`, links of `{source, target, weight}`). circuit-tracer draws one transcoder per layer; a
feature-lens graph can hold several SAEs per layer (attention, MLP, residual), so each SAE of the graph
gets its own row of the viewer, in forward order, and `metadata.transcoder_list` names them in that order
(row r is `transcoder_list[r]`). Feature nodes are `"{row}_{feature}_{position}"`, error nodes
`"0_{row}_{position}"`, token-embedding nodes `"E_{token id}_{position}"` (layer "E"), a logit target
`"{rows + 1}_{token id}_{position}"` (circuit-tracer's layer for logits is one past the last). Labels go to
`clerp`; `activation` is the node's activation (a logit target's centred logit).

>>> import pandas as pd
>>> from feature_lens_core.connectome import EDGE_COLUMNS, NODE_COLUMNS, Graph
>>> nodes = pd.DataFrame(
...     [["A:3@1", "A", "blocks.0.hook_resid_pre", 0, "feature", 3, 1, " be", 1.5, "be", 1, "upstream"],
...      ["B:7@1", "B", "blocks.1.hook_resid_pre", 1, "feature", 7, 1, " be", 2.0, "", 0, "target"]],
...     columns=NODE_COLUMNS)
>>> edges = pd.DataFrame([["A:3@1", "B:7@1", 0.5, 1]], columns=EDGE_COLUMNS)
>>> graph = circuit_tracer_graph(Graph(nodes, edges, "B:7@1", None, "To be", ("<bos>", " be"), "toy"), slug="be")
>>> [n["node_id"] for n in graph["nodes"]], graph["links"]
(['0_3_1', '1_7_1'], [{'source': '0_3_1', 'target': '1_7_1', 'weight': 0.5}])
"""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING, Any

from feature_lens_core import hooks

if TYPE_CHECKING:
    from feature_lens_core.connectome import Graph

SCHEMA_VERSION = 1
FEATURE_TYPE = "cross layer transcoder"  # the type circuit-tracer's frontend draws as a feature node
ERROR_TYPE = "mlp reconstruction error"
LOGIT_TYPE = "logit"
TOKEN_TYPE = "embedding"


def _rows(graph: Graph) -> list[str]:
    """The graph's SAEs in forward order (by the hook each reads), logits excluded."""
    read_hook: dict[str, str] = {}
    for node in graph.nodes.to_dict("records"):
        if node["kind"] not in (LOGIT_TYPE, "token"):
            read_hook.setdefault(str(node["sae"]), str(node["hook"]))
    return sorted(read_hook, key=lambda name: (hooks.order(read_hook[name]), name))


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:60] or "graph"


def circuit_tracer_graph(graph: Graph, *, slug: str | None = None) -> dict[str, Any]:
    """`graph` as circuit-tracer's graph-file JSON object (metadata, qParams, nodes, links)."""
    rows = _rows(graph)
    row_of = {name: row for row, name in enumerate(rows)}
    ids: dict[str, str] = {}
    nodes = []
    for node in graph.nodes.to_dict("records"):
        position, feature = int(node["position"]), int(node["feature"])
        activation = float(node["activation"]) if math.isfinite(float(node["activation"])) else None
        base = {"ctx_idx": position, "run_idx": 0, "reverse_ctx_idx": 0, "influence": None, "activation": activation}
        if node["kind"] == LOGIT_TYPE:
            layer = str(len(rows) + 1)
            node_id = f"{layer}_{feature}_{position}"
            entry = base | {
                "node_id": node_id,
                "jsNodeId": f"L_{feature}-{position}",
                "feature": feature,
                "layer": layer,
                "feature_type": LOGIT_TYPE,
                "token_prob": 0.0,
                "is_target_logit": True,
                "clerp": f"Output {node['label']}",
            }
        elif node["kind"] == "token":
            node_id = f"E_{feature}_{position}"
            entry = base | {
                "node_id": node_id,
                "jsNodeId": f"E_{feature}-{position}",
                "feature": position,
                "layer": "E",
                "feature_type": TOKEN_TYPE,
                "clerp": str(node["label"]),
            }
        elif node["kind"] == "error":
            row = row_of[node["sae"]]
            node_id = f"0_{row}_{position}"
            entry = base | {
                "node_id": node_id,
                "jsNodeId": f"{row}_{position}-0",
                "feature": -1,
                "layer": str(row),
                "feature_type": ERROR_TYPE,
                "clerp": f"{node['sae']} error",
            }
        else:
            row = row_of[node["sae"]]
            node_id = f"{row}_{feature}_{position}"
            entry = base | {
                "node_id": node_id,
                "jsNodeId": f"{row}_{feature}-0",
                "feature": (row + feature) * (row + feature + 1) // 2 + feature,  # Cantor pairing, as circuit-tracer
                "layer": str(row),
                "feature_type": FEATURE_TYPE,
                "clerp": f"{node['sae']} #{feature}" + (f": {node['label']}" if node["label"] else ""),
            }
        entry.setdefault("token_prob", 0.0)
        entry.setdefault("is_target_logit", False)
        ids[str(node["id"])] = node_id
        nodes.append(entry)
    links = [
        {"source": ids[str(edge["source"])], "target": ids[str(edge["target"])], "weight": float(edge["score"])}
        for edge in graph.edges.to_dict("records")
    ]
    metadata = {
        "slug": slug or _slug(graph.prompt),
        "scan": f"feature-lens/{graph.model}" if graph.model else "feature-lens",
        "transcoder_list": rows,
        "prompt_tokens": [token.replace("\n", "⏎").replace("\t", "→").replace("\r", "↵") for token in graph.tokens],
        "prompt": graph.prompt,
        "node_threshold": None,
        "schema_version": SCHEMA_VERSION,
    }
    qparams = {"pinnedIds": [], "supernodes": [], "linkType": "both", "clickedId": "", "sg_pos": ""}
    return {"metadata": metadata, "qParams": qparams, "nodes": nodes, "links": links}
