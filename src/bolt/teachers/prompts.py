"""Prompt templates for teachers, versioned: the version goes into every manifest so a
changed template never mixes silently with outputs of an older one.

A template file given with ``--prompt-file`` is a JSON object with ``version``,
``system`` and ``user``; ``user`` may use ``{prefix}`` and ``{text}``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

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


def load_template(path: str | Path | None) -> PromptTemplate:
    if path is None:
        return LATENT_V1
    path = Path(path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        template = PromptTemplate(version=str(raw["version"]), system=str(raw["system"]), user=str(raw["user"]))
        template.messages("p", "t")
    except (OSError, json.JSONDecodeError, KeyError, IndexError) as exc:
        raise BoltError(
            f"{path}: not a prompt template ({exc}). Expected a JSON object with 'version', 'system' and 'user', "
            "where 'user' uses {{prefix}} and {{text}}."
        ) from None
    return template
