"""OpenAI-compatible chat: `POST /v1/chat/completions` (streamed or not) and
`GET /v1/models`, so that any OpenAI client, chat front end or workflow tool can ask.

The conversation is taken from `messages`: the last message is the question (it must
come from the user); earlier user messages, each with the assistant message after it,
are the turns the page would pass (a follow-up is rewritten to stand alone with them);
system messages are ignored, as is `model`'s sampling (temperature...). The answer's text
carries its `[n]` markers. Extension fields (OpenAI clients keep unknown fields):

- `citations`: `[{"n", "source", "page", "section", "text", "download"}]`, `download`
  being the path of `GET /api/documents/{id}/original` (null when the file is gone),
  and `url` for a document copied from a remote source (its page, file or message);
- `taimatsu`: `{"mode", "standalone_question", "dropped_citations", "citations_marked",
  "answer"}`; `answer` is the checked text, which when streamed can differ from the
  streamed pieces by a dropped marker.

Streamed, they come in the last chunk (the one with `finish_reason`), before `[DONE]`.
"""

import json
import time
import uuid
from collections.abc import Iterator
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from assistant.answering import Answer, AnswerDone, Mode, TextDelta, Turn
from ui.api.errors import ApiError
from ui.api.identity import Asker
from ui.api.service import MODEL_ID, Service
from ui.identity import User


class TextPart(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: str
    text: str | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None

    def text(self) -> str:
        if self.content is None or isinstance(self.content, str):
            return self.content or ""
        if any(part.type != "text" for part in self.content):
            raise ApiError(400, "Only text content is supported in messages.", "invalid_content")
        return "".join(part.text or "" for part in self.content)


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="allow")  # temperature, max_tokens...: accepted, unused
    model: str = Field(MODEL_ID, description=f"Always `{MODEL_ID}`.")
    messages: list[ChatMessage] = Field(min_length=1, max_length=500)
    stream: bool = False


def conversation(messages: list[ChatMessage]) -> tuple[str, list[Turn]]:
    """The question (the last message) and the earlier turns."""
    talk = [m for m in messages if m.role in ("user", "assistant")]
    if not talk or talk[-1].role != "user" or messages[-1].role != "user":
        raise ApiError(400, "The last message must be the user's question.", "invalid_messages")
    earlier = talk[:-1]
    turns = [
        Turn(asked.text(), answered.text())
        for asked, answered in zip(earlier, earlier[1:], strict=False)
        if asked.role == "user" and answered.role == "assistant"
    ]
    return talk[-1].text(), turns


def extension(service: Service, user: User, answer: Answer) -> dict[str, Any]:
    return {
        "citations": service.citations(user, answer),
        "taimatsu": {
            "mode": str(answer.mode),
            "standalone_question": answer.standalone_question,
            "dropped_citations": answer.dropped_citations,
            "citations_marked": answer.citations_marked,
            "answer": answer.answer,
        },
    }


def _chunk(ident: str, created: int, delta: dict, finish: str | None, **extra: Any) -> str:
    data = {
        "id": ident,
        "object": "chat.completion.chunk",
        "created": created,
        "model": MODEL_ID,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        **extra,
    }
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"


def router(service: Service, asker: Any) -> APIRouter:
    api = APIRouter(prefix="/v1", tags=["openai"])
    Caller = Annotated[Asker, Depends(asker)]

    @api.get("/models", summary="The one model: taimatsu")
    def models(caller: Caller) -> dict[str, Any]:
        return {
            "object": "list",
            "data": [{"id": MODEL_ID, "object": "model", "created": 0, "owned_by": "taimatsu"}],
        }

    @api.post(
        "/chat/completions",
        summary="OpenAI-compatible chat, with citations",
        description=__doc__.split("\n\n", 1)[1],  # the conversation and the extension fields
    )
    async def completions(caller: Caller, request: ChatRequest) -> Any:
        if request.model != MODEL_ID:
            message = f"There is no model {request.model[:100]!r}; use {MODEL_ID!r}."
            raise ApiError(404, message, "model_not_found")
        question, turns = conversation(request.messages)
        user = caller.user
        events = service.events(user, question, turns, "api")
        ident, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        if not request.stream:
            answer = await run_in_threadpool(_last, events)
            return {
                "id": ident,
                "object": "chat.completion",
                "created": created,
                "model": MODEL_ID,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": answer.answer},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
                **extension(service, user, answer),
            }
        first = await run_in_threadpool(next, events)  # retrieval: its errors are HTTP errors

        def stream() -> Iterator[str]:
            yield _chunk(ident, created, {"role": "assistant", "content": ""}, None)
            written = False
            for event in _chain(first, events):
                if isinstance(event, TextDelta):
                    written = True
                    yield _chunk(ident, created, {"content": event.text}, None)
                elif isinstance(event, AnswerDone):
                    answer = event.answer
                    if not written or answer.mode != Mode.GENERATED:
                        yield _chunk(ident, created, {"content": answer.answer}, None)
                    yield _chunk(ident, created, {}, "stop", **extension(service, user, answer))
            yield "data: [DONE]\n\n"

        return StreamingResponse(
            stream(),
            media_type="text/event-stream",
            # each piece as it is written, also through a buffering proxy (nginx)
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    return api


def _chain(first: Any, rest: Iterator[Any]) -> Iterator[Any]:
    yield first
    yield from rest


def _last(events: Iterator[Any]) -> Answer:
    for event in events:
        if isinstance(event, AnswerDone):
            return event.answer
    raise AssertionError("the Answerer always ends with an answer")
