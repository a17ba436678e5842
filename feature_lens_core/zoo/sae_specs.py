"""Which SAEs and transcoders the built-in model ships: one spec per hook."""

from __future__ import annotations

from dataclasses import dataclass

D_SAE = 1024


@dataclass(frozen=True)
class SaeSpec:
    """Where an SAE (or transcoder) reads and, for a transcoder, where it writes."""

    name: str
    hook_name: str
    hook_name_out: str | None = None
    target_l0: float = 32.0

    @property
    def is_transcoder(self) -> bool:
        return self.hook_name_out is not None

    @property
    def is_hook_z(self) -> bool:
        return self.hook_name.endswith("hook_z")


def zoo_specs(n_layers: int) -> list[SaeSpec]:
    """Residual (every resid_pre plus the last resid_post), hook_z, mlp_out and transcoder SAEs."""
    specs: list[SaeSpec] = []
    for layer in range(n_layers):
        specs += [
            SaeSpec(f"L{layer}.resid_pre", f"blocks.{layer}.hook_resid_pre"),
            SaeSpec(f"L{layer}.attn_z", f"blocks.{layer}.attn.hook_z", target_l0=48.0),
            SaeSpec(f"L{layer}.mlp_out", f"blocks.{layer}.hook_mlp_out"),
            SaeSpec(
                f"L{layer}.transcoder",
                f"blocks.{layer}.ln2.hook_normalized",
                hook_name_out=f"blocks.{layer}.hook_mlp_out",
                target_l0=48.0,
            ),
        ]
    last = n_layers - 1
    specs.append(SaeSpec(f"L{last}.resid_post", f"blocks.{last}.hook_resid_post"))
    return specs
