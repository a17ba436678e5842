"""Tokenizing on one shared model from several threads (the app's visitors): a logit's token and a prompt,
tokenized at the same time, each come out as they do alone (the prompt keeps its BOS, the token is one id)."""

from __future__ import annotations

import threading

from feature_lens_core.validation import prompt_tokens, token_id
from tests.helpers import PROMPT, tiny_model


def test_a_token_and_a_prompt_tokenized_at_once_come_out_as_alone():
    model = tiny_model(n_layers=1)
    token = model.to_str_tokens(PROMPT)[2]
    alone_id, alone_prompt = token_id(model, token), prompt_tokens(model, PROMPT)[0].tolist()
    found: list[object] = []

    def tokens_of_the_token() -> None:
        found.extend(token_id(model, token) for _ in range(400))

    def tokens_of_the_prompt() -> None:
        found.extend(prompt_tokens(model, PROMPT)[0].tolist() for _ in range(400))

    threads = [threading.Thread(target=tokens_of_the_token), threading.Thread(target=tokens_of_the_prompt)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert len(found) == 800
    assert all(f == alone_id for f in found if isinstance(f, int))
    assert all(f == alone_prompt for f in found if isinstance(f, list))
