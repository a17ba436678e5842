"""Where the built-in model's shipped files live."""

from pathlib import Path

ZOO_DIR = Path(__file__).parent / "toy"
TOKENIZER_DIR = ZOO_DIR / "tokenizer"
MODEL_DIR = ZOO_DIR / "model"
SAES_DIR = ZOO_DIR / "saes"
HELD_OUT_TOKENS = ZOO_DIR / "held_out_tokens.safetensors"
QUALITY_FILE = ZOO_DIR / "quality.json"
