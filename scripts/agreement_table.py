"""The agreement table of docs/methods.md: each cheap method against exhaustive activation patching.

python -m scripts.agreement_table        # about 15 s, on the built-in model
"""

from __future__ import annotations

import argparse

import pandas as pd

from feature_lens_core.agreement import measure
from feature_lens_core.loading import list_saes, load_model, load_sae

# Prompts and target SAEs of the table in docs/methods.md (the target is the strongest feature of the
# SAE at the second-to-last token).
CASES = [
    ("Friends, Romans, countrymen, lend me your ears; I come to bury Caesar, not to praise him.", "L2.resid_pre"),
    ("Now is the winter of our discontent made glorious summer by this sun of York.", "L2.attn_z"),
    ("O Romeo, Romeo, wherefore art thou Romeo? Deny thy father and refuse thy name.", "L2.transcoder"),
    ("To be, or not to be, that is the question: whether 'tis nobler in the mind to suffer", "L2.resid_post"),
    ("If music be the food of love, play on; give me excess of it, that, surfeiting,", "L1.resid_pre"),
    ("All the world's a stage, and all the men and women merely players; they have their exits", "L2.mlp_out"),
]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Agreement of the cheap methods with activation patching.")
    parser.add_argument("--k", type=int, default=10, help="size of the top sets compared")
    args = parser.parse_args(argv)
    model = load_model("toy")
    saes = {name: load_sae("toy", name) for name in list_saes("toy")}
    table = measure(model, saes, CASES, args.k)
    table["prompt"] = table["prompt"].str.slice(0, 32) + "…"
    print(markdown(table))


def markdown(table: pd.DataFrame) -> str:
    """A DataFrame as a Markdown table, floats to 3 decimals."""
    cells = [[f"{v:.3f}" if isinstance(v, float) else str(v) for v in row] for row in table.itertuples(index=False)]
    lines = ["| " + " | ".join(table.columns) + " |", "|" + "---|" * len(table.columns)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in cells])


if __name__ == "__main__":
    main()
