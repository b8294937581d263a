"""A chat model that answers SED prompts from what they ask (the remote paid APIs cannot exist here):
for every agent the prompt names, route (position + 1 if the prompt carries feedback) mod `modulo`.
Unlike a fixed list of answers it does not depend on the order of calls, which concurrent prompts
do not keep."""

from __future__ import annotations

import json

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage
from langchain_core.outputs import ChatGeneration, ChatResult


class PromptAnsweringModel(BaseChatModel):
    modulo: int = 2
    calls: int = 0

    @property
    def _llm_type(self) -> str:
        return "prompt-answering-fake"

    def _generate(self, messages, stop=None, run_manager=None, **kwargs) -> ChatResult:
        self.calls += 1
        from tests.tools.openai_stub import asked_ids

        ids = asked_ids([m.content for m in messages])
        shift = int(any("Feedback from the previous round" in m.content for m in messages))
        routes = [(i + shift) % self.modulo for i in range(len(ids))]
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content=json.dumps({"routes": routes})))])
