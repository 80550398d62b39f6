"""Our LoRA layers against loralib's (the paper authors' package), forward plus backward on the CPU, at the
size of the notebook's GPT (a batch of 12 x 64 characters, 128 wide): the plain layer, and the packed
query-key-value projection with adapters on queries and values (unmerged, as in training)."""
from __future__ import annotations

import loralib
import torch

from benchmark import Case
from curriculum import load_topic

lora = load_topic("lora")


def case(name: str, ours_cls, theirs_cls, out_features: int, **kwargs) -> Case:
    x = torch.randn(12, 64, 128, requires_grad=True)
    ours = ours_cls(128, out_features, r=4, lora_alpha=8, **kwargs)
    theirs = theirs_cls(128, out_features, r=4, lora_alpha=8, **kwargs)
    return Case(name, lambda: ours(x).sum().backward(), lambda: theirs(x).sum().backward())


def cases() -> list[Case]:
    return [
        case("LoRALinear 128->128, r=4 vs loralib.Linear", lora.LoRALinear, loralib.Linear, 128),
        case("MergedLoRALinear 128->384 (q,v), r=4 vs MergedLinear", lora.MergedLoRALinear, loralib.MergedLinear, 384,
             enable_lora=[True, False, True]),
    ]
