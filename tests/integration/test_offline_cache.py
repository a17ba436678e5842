"""Offline means the cache: what is cached loads, what is not fails at once naming the files and the download.

Offline is real here: huggingface_hub's own offline mode (HF_HUB_OFFLINE) with the cache pointed at a
synthesised one or an empty one, or feature-lens's own flag with every socket off loopback refused.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from huggingface_hub import constants, scan_cache_dir

import feature_lens_core as flc
from feature_lens_core import catalog, loading
from feature_lens_core.errors import FeatureLensError
from tests.fixtures.hub import GPT2_SAES, point_at
from tests.hf_cache import HubCache, add_gpt2

pytestmark = pytest.mark.integration
AT_ONCE_S = 1.0  # the work one failure may cost (process CPU time, which other jobs on the machine do not inflate)
WALL_S = 5.0  # and the wall-clock time it may take on a loaded, shared machine
OFFER = "Use the built-in model instead: model 'toy'"


def _fails_at_once(load: Callable[[], object]) -> str:
    wall, cpu = time.perf_counter(), time.process_time()
    with pytest.raises(FeatureLensError) as raised:
        load()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    assert cpu < AT_ONCE_S and wall < WALL_S, f"took {cpu:.2f} s of CPU, {wall:.2f} s"
    return str(raised.value)


def test_uncached_model_fails_at_once_with_the_download_command(empty_cache: Path) -> None:
    message = _fails_at_once(lambda: flc.load_model("gpt2-small", device="cpu"))
    assert "Could not fetch model 'gpt2-small' from the Hugging Face hub" in message
    assert f"local cache ({empty_cache})" in message and "config.json" in message
    assert "`hf download gpt2`" in message and "huggingface-cli download" in message and OFFER in message


def test_uncached_sae_fails_at_once_even_before_the_directory_is_read(empty_cache: Path) -> None:
    catalog._release.cache_clear()
    catalog._directory_text.cache_clear()
    name = "gpt2-small-res-jb/blocks.8.hook_resid_pre"
    message = _fails_at_once(lambda: flc.load_sae("gpt2-small", name, device="cpu"))
    assert f"Could not fetch SAE '{name}'" in message and "blocks.8.hook_resid_pre/cfg.json" in message
    assert "`hf download jbloom/GPT2-Small-SAEs-Reformatted --include 'blocks.8.hook_resid_pre/*'`" in message
    assert OFFER in message


def test_every_hub_name_fails_within_a_second_with_an_empty_cache(empty_cache: Path) -> None:
    """Every model SAE-Lens has releases for, and the first SAE of every release feature-lens can read."""
    for model in catalog.hub_models():
        if catalog.model_repo(model) is None:
            continue  # not a TransformerLens name: refused as unknown, with suggestions
        assert "Could not fetch" in _fails_at_once(lambda model=model: flc.load_model(model, device="cpu"))
    firsts = {}
    for entry in catalog.hub_saes().values():
        firsts.setdefault(entry.release, entry)
    for entry in firsts.values():
        message = _fails_at_once(lambda e=entry: flc.load_sae(e.model, e.name, device="cpu"))
        assert ("Could not fetch" in message) != ("never unpickles" in message), message


def test_cached_models_lists_what_loads_offline_with_its_size(hub_cache: Path) -> None:
    cached = catalog.cached_models()
    assert list(cached) == ["gpt2-small"]
    (repo,) = [r for r in scan_cache_dir(hub_cache).repos if r.repo_id == "gpt2"]  # huggingface_hub's own count
    assert cached["gpt2-small"] == repo.size_on_disk > 0


def test_cached_models_is_empty_for_an_empty_cache(empty_cache: Path) -> None:
    assert catalog.cached_models() == {}


def test_a_partly_cached_model_names_the_missing_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    cache = HubCache(tmp_path / "hub")
    add_gpt2(cache)
    snapshot = next((cache.repo_dir("gpt2") / "snapshots").iterdir())
    (snapshot / "model.safetensors").unlink()  # as if the download stopped before the weights
    point_at(monkeypatch, cache.root)
    message = _fails_at_once(lambda: flc.load_model("gpt2-small", device="cpu"))
    assert "lacks model.safetensors or model.safetensors.index.json of repo 'gpt2'" in message
    assert catalog.cached_models() == {}


def test_a_sharded_model_needs_every_shard(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    cache = HubCache(tmp_path / "hub")
    for name in ("config.json", "tokenizer.json", "model-00001-of-00002.safetensors"):
        cache.put("gpt2", name, b"{}")
    index = {"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}
    cache.put_json("gpt2", "model.safetensors.index.json", index)
    point_at(monkeypatch, cache.root)
    assert catalog.missing_from_cache("gpt2", catalog.MODEL_FILES) == ["model-00002-of-00002.safetensors"]


def test_told_offline_without_hf_hub_offline_loads_from_the_cache_without_the_network(
    monkeypatch: pytest.MonkeyPatch, gpt2_cache: Path
) -> None:
    """FEATURE_LENS_OFFLINE=1 with huggingface_hub online and every socket refused: the load must not try it."""
    point_at(monkeypatch, gpt2_cache)
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("FEATURE_LENS_OFFLINE", "1")
    attempts: list[object] = []

    def refuse(self: socket.socket, address: object) -> None:
        attempts.append(address)
        raise OSError("network blocked by the test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    model = flc.load_model("gpt2-small", device="cpu")
    sae = flc.load_sae("gpt2-small", GPT2_SAES[0], device="cpu")
    assert model.cfg.d_model == sae.cfg.d_in and attempts == []
    assert constants.HF_HUB_OFFLINE is False  # huggingface_hub's own setting is left as it was


def test_no_network_and_no_flag_loads_from_the_cache(monkeypatch: pytest.MonkeyPatch, gpt2_cache: Path) -> None:
    """No offline flag at all and no route to the hub: the reachability check fails, then the cache serves."""
    point_at(monkeypatch, gpt2_cache)
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("FEATURE_LENS_OFFLINE", raising=False)
    monkeypatch.setattr(loading, "_hub_down_until", 0.0)
    connect = socket.socket.connect

    def local_only(self: socket.socket, address: object) -> None:
        if isinstance(address, tuple) and address[0] not in ("127.0.0.1", "::1", "localhost"):
            raise OSError("network blocked by the test")
        connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", local_only)
    start = time.perf_counter()
    model = flc.load_model("gpt2-small", device="cpu")
    assert model.cfg.n_layers == 2 and time.perf_counter() - start < loading.HUB_TIMEOUT_S + 5


def test_pickled_releases_are_refused_before_any_download(empty_cache: Path) -> None:
    message = _fails_at_once(lambda: flc.load_sae("gpt2-small", "gpt2-small-hook-z-kk/blocks.0.hook_z"))
    assert "never unpickles" in message and "connor_rob_hook_z" in message


def test_pickled_models_are_refused(empty_cache: Path) -> None:
    assert "never loads" in _fails_at_once(lambda: flc.load_model("gelu-1l", device="cpu"))


def test_gemma_scope_2_explains_it_needs_the_network(empty_cache: Path) -> None:
    name = next(e.name for e in catalog.hub_saes().values() if e.loader == "gemma_3")
    model = catalog.hub_sae(name).model
    assert "asks the hub for the weights' shapes over HTTP" in _fails_at_once(lambda: flc.load_sae(model, name))


def test_one_release_lookup_matches_sae_lens_directory() -> None:
    """The fast per-release lookup reads the same fields as SAE-Lens's own parse of its directory."""
    from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory

    for release, lookup in get_pretrained_saes_directory().items():
        entries = catalog._release(release)
        assert {e.sae_id: e.path for e in entries.values()} == lookup.saes_map
        assert {e.sae_id: e.neuronpedia_id for e in entries.values()} == lookup.neuronpedia_id
        assert {(e.model, e.repo_id, e.loader) for e in entries.values()} == {
            (lookup.model, lookup.repo_id, lookup.conversion_func or "sae_lens")
        }
        assert all(catalog.hub_sae(name) == entry for name, entry in entries.items())
