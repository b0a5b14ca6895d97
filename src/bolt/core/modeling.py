"""Loading Hugging Face causal LMs and tokenizers, and the built-in tiny presets.

``--model`` is a directory that ``AutoModelForCausalLM.from_pretrained`` reads, a Hugging Face
hub id (``org/name``, see ``model_path``: fetched into the standard cache, which honours ``HF_HOME``,
``HF_HUB_CACHE`` and ``HF_HUB_OFFLINE``), or (for ``bolt train`` and ``bolt em``) the name of a preset:
a small Llama-architecture config with a byte-level tokenizer built here, so nothing is downloaded.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

import torch

from bolt.errors import BoltError

PRESETS: dict[str, dict[str, int]] = {
    # ~0.2M parameters: unit tests and the quick start.
    "tiny": dict(
        hidden_size=64, intermediate_size=192, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4
    ),
    # ~0.9M parameters: the embedded world's model (bolt demo).
    "world": dict(
        hidden_size=128, intermediate_size=384, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=4
    ),
    # ~3.3M parameters: CPU experiments.
    "small": dict(
        hidden_size=256, intermediate_size=768, num_hidden_layers=4, num_attention_heads=8, num_key_value_heads=4
    ),
}


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from bytes to printable characters (used by ByteLevel)."""
    printable = (
        list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    )
    codes = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    return dict(zip(printable, map(chr, codes)))


def byte_tokenizer():
    """A byte-level tokenizer: one token per byte (id = byte value), plus BOS, EOS, PAD.

    Exactly reversible on any UTF-8 text, so it never hides a token-boundary bug.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    byte_chars = _bytes_to_unicode()
    vocab = {byte_chars[byte]: byte for byte in range(256)}
    vocab.update({"<s>": 256, "</s>": 257, "<pad>": 258})
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    backend.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>", pad_token="<pad>")


def preset_model(name: str, seed: int = 0, max_positions: int = 4096):
    """A randomly initialised Llama model and byte tokenizer for a named preset."""
    if name not in PRESETS:
        raise BoltError(f"unknown preset {name!r}; presets are {', '.join(PRESETS)}, or pass an HF model directory.")
    return byte_llama(PRESETS[name], seed, max_positions)


def byte_llama(shape: dict[str, int], seed: int = 0, max_positions: int = 4096):
    """A randomly initialised Llama of ``shape`` (LlamaConfig fields: hidden_size, num_hidden_layers, ...) and the
    byte tokenizer."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = byte_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        max_position_embeddings=max_positions,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
        **shape,
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(config), tokenizer


_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")
# what a model needs from a hub repository: configs, tokenizer files and weights (not ONNX, GGUF, ...)
HUB_PATTERNS = ["*.json", "*.safetensors", "*.model", "*.txt", "*.tiktoken", "*.py", "*.jinja"]


def looks_like_hub_id(spec: str) -> bool:
    """``name`` or ``org/name`` that is not a local path: no such file, and no local directory named ``org``."""
    if not _HUB_ID.match(spec) or ".." in spec or Path(spec).exists():
        return False
    return "/" not in spec or not Path(spec.split("/")[0]).exists()


def _hub_cache() -> str:
    """The hub cache as huggingface_hub reads it, looked up now (the library reads the environment once, at import)."""
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "huggingface"
    )
    return os.path.join(home, "hub")


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def model_path(spec: str | Path, revision: str | None = None) -> Path:
    """The local directory of ``--model``: a path as given, or the snapshot of a Hugging Face hub id in the
    standard cache (``HF_HOME``/``HF_HUB_CACHE``), downloaded unless ``HF_HUB_OFFLINE`` is set; ``revision`` is
    a branch, tag or commit (default: main). What is neither gets one line naming the id and how to get it."""
    spec = str(spec)
    if not looks_like_hub_id(spec):
        return Path(spec)
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError

    cache, offline = _hub_cache(), _offline()
    at = f" at revision {revision}" if revision else ""
    get = (
        f"download it with `hf download {spec}{f' --revision {revision}' if revision else ''}` "
        "(huggingface-cli download in older huggingface_hub) where there is a network, with the same HF_HOME, "
        "or pass a local model directory (with config.json)"
    )
    try:
        folder = Path(
            snapshot_download(
                spec, revision=revision, cache_dir=cache, local_files_only=offline, allow_patterns=HUB_PATTERNS
            )
        )
        if not offline and not any(folder.glob("*.safetensors")):  # an older repository: PyTorch .bin weights only
            folder = Path(
                snapshot_download(spec, revision=revision, cache_dir=cache, allow_patterns=HUB_PATTERNS + ["*.bin"])
            )
    except RevisionNotFoundError:
        raise BoltError(
            f"{spec}: the Hugging Face hub has this model but no revision {revision!r}; "
            "pass a branch, tag or commit it has with --revision."
        ) from None
    except RepositoryNotFoundError:
        raise BoltError(
            f"{spec}: no such model directory, and no model {spec!r} on the Hugging Face hub "
            "(or it is private or gated: log in with `hf auth login`); "
            "pass a local model directory (with config.json) or a hub id such as HuggingFaceTB/SmolLM2-135M."
        ) from None
    except LocalEntryNotFoundError:
        why = "HF_HUB_OFFLINE is set" if offline else "the hub cannot be reached"
        raise BoltError(
            f"{spec}: no such model directory, and no hub model {spec!r}{at} in the Hugging Face cache {cache} "
            f"({why}): {get}."
        ) from None
    except Exception as exc:
        if type(exc).__module__.startswith(("huggingface_hub", "requests", "httpx")):
            raise BoltError(
                f"{spec}: no such model directory, and the Hugging Face hub could not give model {spec!r}{at} "
                f"({type(exc).__name__}): {get}."
            ) from None
        raise
    return folder


def check_model_dir(path: str | Path) -> None:
    """Refuse, with one line, what cannot be loaded as a model: a missing path, a file, a `bolt train`
    run that has not finished, a directory without config.json, or weights whose size differs from
    what `bolt train` recorded (a truncated model.safetensors)."""
    path = model_path(path)
    if not path.exists():
        raise BoltError(
            f"{path}: no such model directory. Pass an HF model directory (with config.json), "
            f"a Hugging Face hub id (org/name), or for train and em a preset ({', '.join(PRESETS)})."
        )
    if not path.is_dir():
        raise BoltError(
            f"{path}: is a file; --model takes a model directory (with config.json), such as the -o of `bolt train`."
        )
    manifest = _bolt_manifest(path)
    if manifest is not None and manifest.get("command") == "train" and manifest.get("status") != "complete":
        raise BoltError(
            f"{path}: this training has not finished (its manifest.json says {manifest.get('status')!r}): "
            "rerun the same `bolt train` command "
            "to finish it (it resumes from its last checkpoint), or pass a finished model directory."
        )
    if not (path / "config.json").is_file():
        raise BoltError(
            f"{path}: not a Hugging Face model directory (no config.json). Save models with `save_pretrained`."
        )
    for name, recorded in ((manifest or {}).get("outputs") or {}).items():
        file = path / name
        if file.is_file() and isinstance(recorded, dict) and file.stat().st_size != recorded.get("size"):
            raise BoltError(
                f"{file}: has {file.stat().st_size} bytes where `bolt train` wrote {recorded.get('size')}: "
                "the file is damaged (truncated?); "
                "rerun the same `bolt train` command, which trains a damaged model again, or restore the file."
            )

    for file in sorted(path.glob("*.safetensors")):
        problem = safetensors_problem(file)
        if problem:
            raise BoltError(
                f"{file}: {problem}: the file is damaged or truncated; "
                "retrain the model (rerun its `bolt train` command) or restore the file."
            )


_check_model_dir = check_model_dir


def safetensors_problem(path: Path) -> str | None:
    """Why a .safetensors file cannot be whole (a header that does not parse, tensors past its end), or None;
    reads only the header."""
    size = path.stat().st_size
    try:
        with open(path, "rb") as handle:
            length = int.from_bytes(handle.read(8), "little")
            if size < 8 or 8 + length > size:
                return f"{size} bytes, too short for its own header"
            header = json.loads(handle.read(length))
        end = max((entry["data_offsets"][1] for name, entry in header.items() if name != "__metadata__"), default=0)
    except (ValueError, KeyError, TypeError, IndexError, AttributeError):
        return "its header does not parse"
    if 8 + length + end != size:
        return f"{size} bytes where its header describes {8 + length + end}"
    return None


def _bolt_manifest(path: Path) -> dict | None:
    """The `bolt` manifest of a model directory, or None (none, or unreadable)."""
    try:
        manifest = json.loads((path / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) else None


def load_tokenizer(path: str | Path):
    from transformers import AutoTokenizer

    path = model_path(path)
    _check_model_dir(path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except Exception as exc:
        raise BoltError(
            f"{path}: cannot load a tokenizer ({exc}). "
            "The directory needs the tokenizer files saved by `save_pretrained`."
        ) from None
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def resolve_device(name: str = "auto") -> torch.device:
    """``auto``: the first CUDA GPU when torch sees one, else Apple's GPU (``mps``) when it sees that,
    else the CPU; ``cpu``; ``cuda`` or ``cuda:N``; ``mps``."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "mps" if _mps_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda" or name.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise BoltError(
                f"--device {name}: torch sees no CUDA GPU here (torch {torch.__version__}). "
                "Use --device cpu, or install a CUDA build of torch."
            )
        return torch.device(name)
    if name == "mps":
        if not _mps_available():
            raise BoltError(
                f"--device mps: torch sees no Apple GPU here (torch {torch.__version__}; "
                "MPS needs macOS on Apple silicon). Use --device cpu."
            )
        return torch.device("mps")
    raise BoltError(f"unknown --device {name!r}; choose auto, cpu, cuda, cuda:N or mps.")


def resolve_dtype(name: str) -> torch.dtype:
    """Weights' dtype for inference by name: float32 (default everywhere), bfloat16, float16."""
    if name not in DTYPES:
        raise BoltError(f"unknown --dtype {name!r}; choose from {', '.join(DTYPES)}.")
    return DTYPES[name]


def load_model(
    path: str | Path,
    dtype: torch.dtype = torch.float32,
    from_scratch: bool = False,
    device: str | torch.device | None = None,
):
    """Load a causal LM (or only its config, randomly initialised, when ``from_scratch``), on ``device`` if given
    (see ``resolve_device``)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    path = model_path(path)
    _check_model_dir(path)
    target = resolve_device(device) if isinstance(device, str) else device
    config = AutoConfig.from_pretrained(path)
    try:
        if from_scratch:
            model = AutoModelForCausalLM.from_config(config, dtype=dtype)
        else:
            model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
        return model.to(target) if target is not None else model
    except ValueError as exc:
        architectures = json.loads((path / "config.json").read_text()).get("architectures")
        raise BoltError(
            f"{path}: not a causal language model (architectures: {architectures}; {exc}). "
            "bolt needs a model that AutoModelForCausalLM can load, e.g. Llama, Qwen, GPT-2."
        ) from None
    except OSError as exc:
        raise BoltError(f"{path}: cannot load the weights ({exc}).") from None
    except Exception as exc:
        if type(exc).__name__ != "SafetensorError":
            raise
        raise BoltError(
            f"{path}: cannot read the weights ({exc}): a .safetensors file there is damaged or truncated; "
            "retrain the model (rerun its `bolt train` command) or restore the file."
        ) from None


def load_model_and_tokenizer(
    spec: str | Path, seed: int = 0, from_scratch: bool = False, dtype: torch.dtype = torch.float32
):
    """``spec`` is a preset name or an HF model directory."""
    if str(spec) in PRESETS and not Path(spec).exists():
        return preset_model(str(spec), seed=seed)
    torch.manual_seed(seed)
    return load_model(spec, dtype=dtype, from_scratch=from_scratch), load_tokenizer(spec)


def context_window(model) -> int:
    """The longest sequence ``model`` may see (its config's ``max_position_embeddings``; 2048 when it has none)."""
    return int(getattr(model.config, "max_position_embeddings", 2048))


def model_fingerprint(path: str | Path) -> str:
    """A hash of a model directory's config and weights: outputs made with other weights are never reused."""
    from bolt.core.rundir import file_sha256

    path = model_path(path)
    files = [path / "config.json", *sorted(path.glob("*.safetensors")), *sorted(path.glob("*.bin"))]
    return hashlib.sha256("".join(file_sha256(f) for f in files if f.is_file()).encode()).hexdigest()[:16]
