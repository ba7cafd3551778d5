"""Request bodies (OpenAI's field names). Types are strict — `"5"` is not a number — so a mistyped
field is a 400 naming it, not a silent coercion."""

from __future__ import annotations

from typing import Optional, Union

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr

Number = Union[StrictInt, StrictFloat]


class Sampled(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: StrictStr
    max_tokens: Optional[StrictInt] = None
    temperature: Optional[Number] = None
    top_p: Optional[Number] = None
    stop: Optional[Union[StrictStr, list[StrictStr]]] = None
    seed: Optional[StrictInt] = None
    stream: StrictBool = False
    stream_options: Optional[dict] = None
    n: StrictInt = 1


class CompletionBody(Sampled):
    prompt: Union[StrictStr, list[StrictStr]]
    echo: StrictBool = False


class Message(BaseModel):
    role: StrictStr
    content: Union[StrictStr, list[dict]]

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "".join(part.get("text", "") for part in self.content if part.get("type") == "text")


class ChatBody(Sampled):
    messages: list[Message] = Field(min_length=1)
    max_completion_tokens: Optional[StrictInt] = None


class EmbeddingBody(BaseModel):
    model: StrictStr
    input: Union[StrictStr, list[StrictStr]]
    encoding_format: StrictStr = "float"


class ClassifyBody(BaseModel):
    model: StrictStr
    input: Union[StrictStr, list[StrictStr]]


class ImageScoreBody(BaseModel):
    model: StrictStr
    image: StrictStr  # base64 of an image file (PNG, JPEG, ...)
    captions: list[StrictStr] = Field(min_length=1)


class FeedbackBody(BaseModel):
    id: StrictStr
    rating: Optional[StrictInt] = None
    correction: Optional[StrictStr] = None
