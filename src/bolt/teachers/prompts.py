"""Prompt templates for teachers, one set per method, versioned: the version goes into
every request's cache key and every manifest, so a changed template never mixes
silently with outputs of an older one.

Methods:

- ``latent``: the latent thoughts behind one chunk, given its prefix (docs/METHOD.md, "Chunks and latents").
- ``wrap``: the whole document rephrased in one of four styles (very simple language,
  scholarly language, Wikipedia-like, question/answer), one style per document.
- ``wrap-cot``: the whole document paraphrased with every fact kept and step-by-step
  reasoning inserted.

A template file given with ``--prompt-file`` is a JSON object with ``version`` and
either ``system`` and ``user`` (one template) or ``styles``, a map from style name to
``{"system", "user"}``. ``user`` may use ``{prefix}`` and ``{text}`` (for the ``wrap``
methods ``{text}`` is the whole document and ``{prefix}`` is empty).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from bolt.core.choices import METHODS
from bolt.errors import BoltError


@dataclass(frozen=True)
class PromptTemplate:
    version: str
    system: str
    user: str

    def messages(self, prefix: str, text: str) -> list[dict[str, str]]:
        context = prefix.strip() or "(this passage opens the document)"
        return [
            {"role": "system", "content": self.system},
            {"role": "user", "content": self.user.format(prefix=context, text=text.strip())},
        ]


LATENT_V1 = PromptTemplate(
    version="latent-v1",
    system=(
        "You are an expert who reconstructs the thinking behind dense technical writing. "
        "Authors compress their reasoning: they skip background facts, intermediate steps and "
        "derivations that a reader must fill in. Your job is to write those missing thoughts."
    ),
    user=(
        "Earlier text of the document:\n{prefix}\n\n"
        "Passage:\n{text}\n\n"
        "Write the thoughts a careful reader needs to fully understand the passage given the earlier text: "
        "the background knowledge it assumes, and every derivation or calculation it states only as a result, "
        "step by step. Be concise and precise. Use plain text, no markdown, no headings. Do not restate the "
        "passage and do not refer to 'the passage' or 'the earlier text'; write the thoughts themselves."
    ),
)

_REPHRASER = (
    "You rewrite documents faithfully: every fact, number and name of the original survives, nothing is invented."
)
_WRAP_INSTRUCTIONS = {
    "simple": (
        "Rewrite the document below in very simple words and short sentences, so that a young child could follow it."
    ),
    "scholarly": (
        "Rewrite the document below in dense, formal, scholarly language, as it would read in an academic publication."
    ),
    "wikipedia": (
        "Rewrite the document below as clear, neutral, well-organised encyclopedic prose, "
        "in the manner of a Wikipedia article."
    ),
    "qa": "Rewrite the document below as a conversation of questions and answers that together cover all of its "
    "content. Write every pair as 'Question: ...' on one line and 'Answer: ...' on the next.",
}
WRAP_V1 = {
    style: PromptTemplate(
        version=f"wrap-v1/{style}",
        system=_REPHRASER,
        user=f"{instruction} Reply with the rewritten document only.\n\nDocument:\n{{text}}",
    )
    for style, instruction in _WRAP_INSTRUCTIONS.items()
}
WRAP_COT_V1 = PromptTemplate(
    version="wrap-cot-v1",
    system=_REPHRASER,
    user=(
        "Paraphrase the document below. Keep all of its information, and wherever it states a result, a claim or a "
        "conclusion without showing how it follows, insert the step-by-step reasoning that leads there, in plain "
        "sentences woven into the text. No markdown, no headings. Reply with the paraphrased document only.\n\n"
        "Document:\n{text}"
    ),
)
DEFAULT_TEMPLATES: dict[str, dict[str, PromptTemplate]] = {
    "latent": {"default": LATENT_V1},
    "wrap": WRAP_V1,
    "wrap-cot": {"default": WRAP_COT_V1},
}


def _parse_template(version: str, raw: object, where: str) -> PromptTemplate:
    if not isinstance(raw, dict) or not isinstance(raw.get("system"), str) or not isinstance(raw.get("user"), str):
        raise KeyError(f"{where} needs string 'system' and 'user'")
    template = PromptTemplate(version=version, system=raw["system"], user=raw["user"])
    template.messages("p", "t")
    return template


def load_templates(path: str | Path | None, method: str = "latent") -> dict[str, PromptTemplate]:
    """The templates of ``method`` by style name (one style, ``default``, except for ``wrap``)."""
    if method not in METHODS:
        raise BoltError(f"unknown --method {method!r}; choose one of {', '.join(METHODS)}.")
    if path is None:
        return DEFAULT_TEMPLATES[method]
    path = Path(path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        version = str(raw["version"])
        if "styles" in raw:
            if not isinstance(raw["styles"], dict) or not raw["styles"]:
                raise KeyError("'styles' must be a non-empty object")
            if method != "wrap" and len(raw["styles"]) != 1:
                raise KeyError(f"--method {method} takes one template, not several 'styles'")
            return {
                str(style): _parse_template(f"{version}/{style}", value, f"style {style!r}")
                for style, value in raw["styles"].items()
            }
        return {"default": _parse_template(version, raw, "the template")}
    except (OSError, json.JSONDecodeError, KeyError, IndexError, TypeError) as exc:
        raise BoltError(
            f"{path}: not a prompt template ({exc}). "
            "Expected a JSON object with 'version' and either 'system' and 'user' "
            "or 'styles' mapping style names to {{'system', 'user'}}; 'user' may use {{prefix}} and {{text}}."
        ) from None


def load_template(path: str | Path | None) -> PromptTemplate:
    """The one ``latent`` template (local teachers)."""
    return next(iter(load_templates(path, "latent").values()))
