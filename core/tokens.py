"""Token estimation without a tokenizer download: a conservative character heuristic."""

from __future__ import annotations

from tako.core.types import ChatRequest

# English text averages ~4 characters per token; 3 overestimates on purpose so that
# budget reservations are on the safe side.
CHARS_PER_TOKEN = 3
PER_MESSAGE_OVERHEAD = 4
IMAGE_TOKENS = 768
DEFAULT_OUTPUT_TOKENS = 1024


def estimate_text_tokens(text: str) -> int:
    return (len(text) + CHARS_PER_TOKEN - 1) // CHARS_PER_TOKEN


def estimate_prompt_tokens(req: ChatRequest) -> int:
    total = 3
    for m in req.messages:
        total += PER_MESSAGE_OVERHEAD
        if isinstance(m.content, str):
            total += estimate_text_tokens(m.content)
        elif m.content:
            for part in m.content:
                if part.type == "text":
                    total += estimate_text_tokens(part.text or "")
                elif part.type == "image_url":
                    total += IMAGE_TOKENS
                else:
                    total += 256
        for call in m.tool_calls or ():
            total += estimate_text_tokens(call.function.name + call.function.arguments) + 4
    for tool in req.tools or ():
        total += estimate_text_tokens(tool.function.model_dump_json(exclude_none=True))
    return total


def estimate_output_tokens(req: ChatRequest, default: int = DEFAULT_OUTPUT_TOKENS) -> int:
    return req.output_limit() or default
