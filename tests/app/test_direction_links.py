"""A direction's view is a link that survives a server restart: the URL carries how the direction was made."""

from __future__ import annotations

import base64
import io
import zlib

import numpy as np
import pytest

from feature_lens_app import direction_links, resources
from feature_lens_app.direction_links import Recipe
from feature_lens_core import FeatureLensError
from feature_lens_core.catalog import BUILTIN_MODEL
from tests.app.helpers import assert_healthy, charts, errors


def _restart() -> None:
    """What a restart loses: every direction the server made (its one-feature SAEs are rebuilt from them)."""
    resources._made_directions.clear()
    resources._direction.clear()


def _params(at) -> dict[str, str]:
    values = {key: at.query_params[key] for key in at.query_params}
    return {key: value if isinstance(value, str) else value[-1] for key, value in values.items()}


def test_recipes_round_trip_and_a_damaged_parameter_is_refused() -> None:
    recipes = [
        Recipe("direction:love#0123abcd", "blocks.1.hook_resid_pre", ("love", "kiss"), ("war",)),
        Recipe("direction:mine#89abcdef", "blocks.0.hook_mlp_out"),
    ]
    text = direction_links.encode(recipes)
    assert set(text) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    assert direction_links.decode(text) == {r.name: r for r in recipes}
    assert recipes[0].title == "love" and recipes[1].from_file
    with pytest.raises(FeatureLensError, match="not what this app writes"):
        direction_links.decode("not base64 at all!")
    bomb = direction_links._pack([["x", "y", [], []]])[:-2] + "AA"  # truncated: no longer a zlib stream
    with pytest.raises(FeatureLensError, match="damaged"):
        direction_links.decode(bomb)
    huge = zlib.compress(b"[" + b" " * (direction_links.MAX_RECIPE_BYTES * 4) + b"]", 9)
    with pytest.raises(FeatureLensError, match="KiB"):
        direction_links.decode(base64.urlsafe_b64encode(huge).decode().rstrip("="))


def test_prompt_sets_too_long_for_a_link_travel_as_the_name_only() -> None:
    rng = np.random.default_rng(0)
    long = tuple("".join(rng.choice(list("abcdefghij "), 400)) for _ in range(40))
    text = direction_links.encode([Recipe("direction:big#00000000", "blocks.1.hook_resid_pre", long, long)])
    assert len(text) <= direction_links.MAX_LINK_CHARS
    assert direction_links.decode(text)["direction:big#00000000"].from_file


def test_a_direction_made_from_prompts_is_rebuilt_from_its_link_after_a_restart(open_app) -> None:
    at = open_app("directions")
    at.button[0].click().run()  # the default love-vs-war prompt sets at layer 1
    assert not errors(at), errors(at)
    name = at.session_state["sae"]
    at.switch_page("pages/explore.py").run()
    assert_healthy(at)
    link = _params(at)
    assert direction_links.decode(link["recipes"])[name].a  # the link carries its prompt sets
    before = {k: v for k, v in charts(at).items() if k.startswith("bars_")}

    _restart()
    again = open_app(None, **link)
    assert_healthy(again)
    assert not errors(again), errors(again)
    assert again.session_state["sae"] == name
    after = {k: v for k, v in charts(again).items() if k.startswith("bars_")}
    assert after and after == before  # the same chart: the same view (its key) and the same scores


def test_a_direction_from_a_file_the_server_lost_says_which_file_to_upload_again(open_app) -> None:
    buffer = io.BytesIO()
    np.save(buffer, np.random.default_rng(1).standard_normal(resources.model(BUILTIN_MODEL).cfg.d_model))
    # What the page does with an upload (AppTest cannot upload a file).
    name = resources.add_direction(
        BUILTIN_MODEL, "blocks.1.hook_resid_pre", np.load(io.BytesIO(buffer.getvalue())), "up"
    )
    recipe = Recipe(name, "blocks.1.hook_resid_pre")
    link = {"saes": f"L1.resid_pre,{name}", "sae": name, "feature": "0", "pos": "3", "kind": "feature"}
    link["recipes"] = direction_links.encode([recipe])

    same_server = open_app(None, **link)  # another visitor, same server: it is still here
    assert_healthy(same_server)
    assert not errors(same_server), errors(same_server)

    _restart()
    restarted = open_app(None, **link)
    assert_healthy(restarted)
    said = [e for e in errors(restarted) if "uploaded file" in e]
    assert len(said) == 1, errors(restarted)
    assert "blocks.1.hook_resid_pre" in said[0] and name.rsplit("#", 1)[-1] in said[0] and "'up'" in said[0]


def test_the_form_shows_only_the_inputs_of_the_source_chosen(open_app) -> None:
    at = open_app("directions")
    assert [t.key for t in at.text_area if t.key and t.key.startswith("direction_")] == ["direction_a", "direction_b"]
    at.radio(key="direction_source").set_value("file").run()
    assert not [t for t in at.text_area if t.key and t.key.startswith("direction_")]
    at.button[0].click().run()  # nothing uploaded yet
    assert errors(at) == ["Choose a .npy or .safetensors file to upload."], errors(at)
