"""``--teacher vllm``: offline generation with vLLM's ``LLM.chat`` on a local GPU.

A thin backend written to vLLM's documented offline API (``vllm.LLM``,
``vllm.SamplingParams``); vLLM is an optional install (``pip install vllm``, GPU only)
and is imported only here. Answers go through the same cache as the API teachers, in
groups, so an interrupted run resumes. To use a running vLLM *server* instead, use
``--teacher openai --base-url http://HOST:PORT/v1``.
"""

from __future__ import annotations

from typing import Any

from bolt.errors import BoltError
from bolt.teachers.cache import TeacherCache
from bolt.teachers.chat import Reply, Sampling, Spend, checked_reply, request_key


class VLLMTeacher:
    name = "vllm"
    group = 1024
    """Prompts generated between two cache commits."""

    def __init__(self, model: str, sampling: Sampling, seed: int = 0, **_: Any):
        if not model:
            raise BoltError("--teacher vllm needs --teacher-model (a Hugging Face model directory or hub name).")
        self.model = model
        self.sampling = sampling
        self.seed = seed
        self._engine = None
        self.spend = Spend()

    def engine(self):
        """vLLM's engine and sampling parameters, started on first use: a sharded run's driver only describes
        the teacher."""
        if self._engine is None:
            try:
                from vllm import LLM, SamplingParams
            except ImportError:
                raise BoltError(
                    "--teacher vllm needs vLLM (GPU machines): pip install vllm. "
                    "Or serve the model and use --teacher openai --base-url URL."
                ) from None
            params = SamplingParams(
                temperature=self.sampling.temperature, max_tokens=self.sampling.max_tokens, seed=self.sampling.seed
            )
            self._engine = (LLM(model=self.model, seed=self.seed), params)
        return self._engine

    def describe(self) -> dict[str, Any]:
        return {"backend": self.name, "model": self.model, "sampling": self.sampling}

    def complete(self, prompts: list, cache: TeacherCache) -> tuple[list[str | None], dict[str, str]]:
        keys = [
            request_key(
                "vllm",
                {"model": self.model, "messages": p.messages, "sampling": repr(self.sampling)},
                p.template_version,
            )
            for p in prompts
        ]
        by_key = dict(zip(keys, prompts))
        pending = [key for key in by_key if key not in cache.get_many(list(by_key))]
        failures: dict[str, str] = {}
        self.spend.cached = len(by_key) - len(pending)
        for start in range(0, len(pending), self.group):
            part = pending[start : start + self.group]
            llm, params = self.engine()
            outputs = llm.chat([by_key[key].messages for key in part], params)
            for key, output in zip(part, outputs):
                reply = self._reply(output)
                self.spend.add_reply(reply)
                if reply.status == "ok":
                    cache.put(key, reply.text, reply.input_tokens, reply.output_tokens, self.name, self.model, False)
                else:
                    failures[key] = f"{reply.status} reply"
        answers = cache.get_many(keys)
        return [answers[key][0] if key in answers else None for key in keys], failures

    @staticmethod
    def _reply(output: Any) -> Reply:
        sample = output.outputs[0]
        return checked_reply(
            sample.text,
            sample.finish_reason == "length",
            False,
            len(output.prompt_token_ids or []),
            len(sample.token_ids),
        )

    def report(self, spend: Spend | None = None) -> dict[str, Any]:
        """Spend of this run (``spend``: the shards' spend, summed, instead of this instance's)."""
        return {"backend": self.name, "model": self.model, "batch": False, "this_run": (spend or self.spend).to_json()}
