"""How it works: the four methods in plain words, with a picture."""

import streamlit as st

from feature_lens_app import frame

frame.view()
st.title("How it works", anchor=False)

st.markdown(
    """
The built-in model is a small GPT-2-style language model (3 layers) trained on Shakespeare's plays. A
language model reads text one token at a time and passes numbers from layer to layer. A **sparse
autoencoder** (SAE) translates the numbers at one place in the model into **features**: small, mostly
readable units such as "a name of a person" or "the word *thou*". Most features are silent; a few fire on
each token.

Pick one feature (the **target**). feature-lens asks two questions about it:

- **Upstream:** which earlier features made it fire?
- **Downstream:** which later features fire because of it?

The target can also be the model's **prediction** (on Explore, *Explain: a next-token logit*): the logit of one
next token at a position, minus the mean logit over the vocabulary, so the question becomes "why does the model
predict *thou* here?". A **logit difference** (one token's logit minus another's) asks why it prefers one token
to another. A prediction is the model's output, so it has only an upstream side.

A feature's **score** is how much the target changes when that feature is switched off (replaced by a
**baseline**: zero, its average value, or its value on a different prompt). A positive score (orange) means
the feature pushes the target up; a negative score (blue) means it holds the target down.
"""
)

st.graphviz_chart(
    """
digraph {
  rankdir=LR; bgcolor="transparent";
  node [shape=box, style="rounded,filled", fontname="Helvetica", fontsize=12, color="#777777"];
  edge [fontname="Helvetica", fontsize=10, color="#555555"];
  prompt [label="prompt\\n'It is the east, and Juliet…'", fillcolor="#f2f2f2"];
  up1 [label="earlier feature\\n(layer 0)", fillcolor="#fdd0a2"];
  up2 [label="earlier feature\\n(layer 1)", fillcolor="#c6dbef"];
  err [label="error node\\n(what the SAE misses)", fillcolor="#e0e0e0", style="rounded,filled,dashed"];
  target [label="TARGET feature\\n(layer 2)", fillcolor="#f16913", fontcolor="white", penwidth=2];
  down [label="later feature\\n(downstream)", fillcolor="#fdd0a2"];
  prompt -> up1 -> target [label="+ pushes up"];
  prompt -> up2 -> target [label="− holds down"];
  err -> target [style=dashed];
  target -> down [label="+"];
}
""",
    width="stretch",
)

st.markdown(
    """
### Four ways to measure a score

1. **Activation patching (exact).** Switch the feature off and run the rest of the model again, then measure
   the target. This *is* the effect, but it costs one (partial) run of the model per feature, so it is the
   slowest. feature-lens reuses the part of the run before the feature and stops at the target to keep it fast.
2. **Attribution patching (fast estimate).** One ordinary run plus one backward pass give, for every feature
   at once, a straight-line guess of what switching it off would do. Usually close; it can be wrong when a
   feature's effect is strongly non-linear (for example when switching it off turns another feature off).
3. **Direct attribution (direct paths only).** Counts only the feature's *direct* route to the target, as if
   every layer in between stayed as it was. Cheapest, and it shows what reaches the target without help; it
   misses effects that travel through other features.
4. **Integrated gradients (10 steps).** Like attribution patching, but the slope is averaged over ten points
   on the way from the feature's value to its baseline instead of read at one end. It costs ten backward
   passes instead of one and follows curved (non-linear) effects more closely; it is still an estimate.

The **Compare methods** page puts the cheap estimates next to the exact numbers for your target, so you can see
when they can be trusted.

### Walking a circuit

On **Explore**, click a bar to make that feature the new target: its own causes and effects appear, and you
can walk step by step through the features that carry information across the model. Every view has its own
link (the address bar, or *Share this view* in the sidebar), so anyone who opens it sees the same thing.
"""
)
