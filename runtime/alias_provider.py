"""The provider an orchestrator calls for one request: budget, fallback, breaker, retry,
then reconciliation, around every chat() and stream() call."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from tako.core.errors import (
    CircuitOpen,
    QuotaExceeded,
    TakoError,
    UpstreamError,
    UpstreamRateLimited,
    UpstreamTimeout,
)
from tako.core.protocols import EmbeddingRequest, Embeddings, LlmProvider, embedder_of
from tako.core.tokens import (
    CHARS_PER_TOKEN,
    estimate_output_tokens,
    estimate_prompt_tokens,
    estimate_text_tokens,
)
from tako.core.types import ChatChunk, ChatRequest, ChatResponse, ChunkError, Delta, End, Usage
from tako.runtime.accounting import Accountant
from tako.runtime.admission import Admission, Reservation
from tako.runtime.breaker import Breakers
from tako.runtime.events import RuntimeEvents
from tako.runtime.fallback import attempt_order
from tako.runtime.retry import (
    backoff_s,
    is_rate_limited,
    is_transient,
    may_fall_back,
    says_unhealthy,
)
from tako.runtime.settings import RetrySettings

T = TypeVar("T")
# A stream is cut once its text passes this many characters per reserved output token.
# English averages about 4 characters a token and code fewer, so an upstream that keeps to
# the cap it was sent ends by itself first; one that ignores it is cut within ~25% of it.
LENIENT_CHARS_PER_TOKEN = 5


@dataclass(slots=True, frozen=True)
class _Failed:
    """A deployment's last error after its retries, to fall back from."""

    error: TakoError

_settling: set[asyncio.Task[None]] = set()


async def _shielded(work: Coroutine[Any, Any, None]) -> None:
    """Run ``work`` to the end even if the caller is cancelled meanwhile."""
    task = asyncio.ensure_future(work)
    _settling.add(task)
    task.add_done_callback(_settling.discard)
    await asyncio.shield(task)


def usage_cost(provider: LlmProvider | None, usage: Usage) -> float:
    if usage.cost_usd > 0 or provider is None:
        return usage.cost_usd
    if usage.total_tokens == 0:
        return 0.0
    return provider.estimate_cost_usd(usage.prompt_tokens, usage.completion_tokens)


class _StreamOpened:
    def __init__(self, provider: LlmProvider, upstream: AsyncIterator[ChatChunk],
                 first: ChatChunk, probe: bool) -> None:
        self.provider = provider
        self.upstream = upstream
        self.first = first
        self.probe = probe


class AliasProvider:
    """An ``LlmProvider`` over an alias's deployments for one admitted request."""

    def __init__(self, admission: Admission, alias: str, providers: list[LlmProvider],
                 weights: list[float] | None, accountant: Accountant, breakers: Breakers,
                 retry: RetrySettings, events: RuntimeEvents, rng: random.Random) -> None:
        if not providers:
            raise ValueError(f"alias {alias!r} has no deployments")
        if weights is not None and len(weights) != len(providers):
            raise ValueError(f"alias {alias!r}: one weight per deployment is needed")
        self.admission = admission
        self.id = alias
        self.model = providers[0].model
        self.providers = providers
        self.weights = weights
        self.accountant = accountant
        self.breakers = breakers
        self.retry = retry
        self.events = events
        self.rng = rng
        self.answered_by: str | None = None

    def estimate_cost_usd(self, prompt_tokens: int, completion_tokens: int) -> float:
        """The dearest deployment's price: any of them may answer."""
        return max(p.estimate_cost_usd(prompt_tokens, completion_tokens)
                   for p in self.providers)

    async def aclose(self) -> None:
        return None  # the deployments belong to the service, not to one request

    async def _reserve(self, req: ChatRequest) -> Reservation:
        reservation = self.admission.take_first()
        prompt = estimate_prompt_tokens(req)
        if reservation is None:
            output = estimate_output_tokens(req)
            reservation = await self.accountant.reserve(self.admission, prompt + output,
                                                        self.estimate_cost_usd(prompt, output))
        if req.output_limit() is None:
            reservation = await self._topped_up(reservation, prompt)
        return reservation

    def _deployment_output_tokens(self) -> int | None:
        """The largest output default a deployment of the alias is configured with
        (``options.default_max_tokens``), if any."""
        defaults = []
        for provider in self.providers:
            options = getattr(getattr(provider, "spec", None), "options", None) or {}
            value = options.get("default_max_tokens")
            if isinstance(value, int) and value > 0:
                defaults.append(value)
        return max(defaults, default=None)

    def _output_cap(self, reservation: Reservation, prompt: int) -> int:
        """The output limit to send when the client set none: what was reserved for, or
        a deployment's own smaller default."""
        reserved = max(1, reservation.tokens - prompt)
        return min(reserved, self._deployment_output_tokens() or reserved)

    async def _topped_up(self, reservation: Reservation, prompt: int) -> Reservation:
        """A client that set no output limit gets the deployment's own default when the
        budget has room for it; else the cap already reserved, which the budget allowed."""
        wanted = self._deployment_output_tokens()
        have = reservation.tokens - prompt
        if wanted is None or wanted <= have or reservation.unaccounted:
            return reservation
        extra_tokens = wanted - have
        try:
            extra = await self.accountant.reserve(self.admission, extra_tokens,
                                                  self.estimate_cost_usd(0, extra_tokens))
        except QuotaExceeded:
            return reservation
        if extra.unaccounted or extra.counters != reservation.counters:
            await self._settle(extra, 0.0, 0)  # e.g. a period rolled over in between
            return reservation
        return replace(reservation, usd_nano=reservation.usd_nano + extra.usd_nano,
                       tokens=reservation.tokens + extra.tokens)

    async def _settle(self, reservation: Reservation, usd: float, tokens: int) -> None:
        work = self.accountant.settle(self.admission, reservation, usd, tokens)
        if self.accountant.backend.in_process:
            await work  # never suspends, so it cannot be cut short
        else:
            await _shielded(work)

    # ---- the cascade ----

    async def _timed(self, deadline: float, provider: LlmProvider,
                     call: Callable[[], Awaitable[T]]) -> T:
        started = time.monotonic()
        try:
            async with asyncio.timeout(max(0.0, deadline - started)):
                return await call()
        except TimeoutError as exc:
            raise UpstreamTimeout(
                f"provider {provider.id} did not answer within the call deadline "
                f"({self.retry.total_timeout_s:g}s)", details={"provider": provider.id}) from exc
        finally:
            self.admission.upstream_seconds += time.monotonic() - started

    async def _cascade(self, attempt: Callable[[LlmProvider, bool, float], Awaitable[T]]) -> T:
        """Each deployment in fallback order, each with its retries, until one answers."""
        deadline = time.monotonic() + self.retry.total_timeout_s
        last: TakoError | None = None
        for provider in attempt_order(self.providers, self.weights, self.rng):
            if time.monotonic() >= deadline:
                break
            state = await self.breakers.acquire(provider.id)
            if state in ("open", "cool"):
                last = last or self._skipped(provider.id, state)
                continue
            outcome = await self._retried(attempt, provider, state == "probe", deadline)
            if not isinstance(outcome, _Failed):
                self.answered_by = provider.id
                return outcome
            last = outcome.error
        raise self._exhausted(last)

    def _skipped(self, deployment: str, state: str) -> TakoError:
        wait = self.breakers.wait_s(deployment)
        if state == "cool":
            return UpstreamRateLimited(
                f"deployment {deployment} is rate limited by its vendor; retry in {wait:g}s",
                details={"provider": deployment}, retry_after=wait)
        return CircuitOpen(f"deployment {deployment} is failing; its circuit is open and "
                           f"the next trial call is due in {wait:g}s",
                           details={"provider": deployment}, retry_after=wait)

    async def _retried(self, attempt: Callable[[LlmProvider, bool, float], Awaitable[T]],
                       provider: LlmProvider, probe: bool, deadline: float) -> T | _Failed:
        """One deployment with its retries: the result, or the failure to fall back from.
        The breaker hears one outcome for all of them. Errors that must not fall back are
        raised."""
        for number in range(1, self.retry.max_attempts + 1):
            try:
                result = await attempt(provider, probe, deadline)
            except TakoError as error:
                if await self._may_retry(error, provider, probe, number, deadline):
                    continue
                await self._record_failure(provider.id, error, probe)
                if not may_fall_back(error):
                    raise
                return _Failed(error)
            except BaseException:
                if probe:  # cancelled mid-probe: let another caller probe
                    await _shielded(self.breakers.abandon_probe(provider.id))
                raise
            await self.breakers.record(provider.id, True, probe)
            return result
        raise AssertionError("unreachable: the last attempt never retries")

    async def _record_failure(self, deployment: str, error: TakoError, probe: bool) -> None:
        """A failure the deployment is to blame for counts against its circuit; a 429
        cools it down; anything else (a 4xx) says it is up, which ends a probe well."""
        if is_rate_limited(error):
            await self.breakers.cool_down(deployment, error.retry_after)
        unhealthy = says_unhealthy(error)
        if unhealthy or probe:
            await self.breakers.record(deployment, not unhealthy, probe)

    async def _may_retry(self, error: TakoError, provider: LlmProvider, probe: bool,
                         number: int, deadline: float) -> bool:
        """Wait out the backoff and say True when another attempt on the same deployment
        is worth it."""
        if probe or not may_fall_back(error) or not is_transient(error):
            return False
        if number == self.retry.max_attempts:
            return False
        delay = backoff_s(number, self.retry, error.retry_after, self.rng)
        if time.monotonic() + delay >= deadline:
            return False
        self.events.retried(provider.id)
        await asyncio.sleep(delay)
        return True

    def _exhausted(self, last: TakoError | None) -> TakoError:
        if last is None:
            return UpstreamTimeout(f"alias {self.id}: no deployment answered before the "
                                   "call deadline")
        if isinstance(last, CircuitOpen) and len(self.providers) > 1:
            wait = min(self.breakers.wait_s(p.id) for p in self.providers)
            return CircuitOpen(f"every deployment of {self.id} is failing or rate limited; "
                               f"retry in {wait:g}s", details={"alias": self.id},
                               retry_after=wait)
        return last

    # ---- chat ----

    async def _chat_once(self, req: ChatRequest, provider: LlmProvider, probe: bool,
                         deadline: float) -> tuple[LlmProvider, ChatResponse]:
        response = await self._timed(deadline, provider, lambda: provider.chat(req))
        return provider, response

    async def chat(self, req: ChatRequest) -> ChatResponse:
        reservation = await self._reserve(req)
        req = _with_output_cap(req, self._output_cap(reservation, estimate_prompt_tokens(req)))
        try:
            provider, response = await self._cascade(
                lambda p, probe, deadline: self._chat_once(req, p, probe, deadline))
        except TakoError:
            await self._settle(reservation, 0.0, 0)  # failed upstream calls are not billed
            raise
        except BaseException:
            # cancelled mid-call: the upstream may have billed it, so keep the estimate
            prompt = min(estimate_prompt_tokens(req), reservation.tokens)
            self.admission.estimated.add(Usage(prompt_tokens=prompt,
                                               completion_tokens=reservation.tokens - prompt,
                                               cost_usd=reservation.usd_nano / 1e9))
            await self._settle(reservation, reservation.usd_nano / 1e9, reservation.tokens)
            raise
        usage = response.usage
        await self._settle(reservation, usage_cost(provider, usage), usage.total_tokens)
        return response

    # ---- embeddings ----

    async def embed(self, req: EmbeddingRequest) -> Embeddings:
        """An embeddings call through the same stack: reserved (the admission's first
        reservation or a new one), fallback, breaker and retry, then settled at its cost."""
        reservation = self.admission.take_first()
        if reservation is None:
            tokens = sum(max(1, estimate_text_tokens(text)) for text in req.inputs)
            reservation = await self.accountant.reserve(self.admission, tokens,
                                                        self.estimate_cost_usd(tokens, 0))
        try:
            provider, result = await self._cascade(
                lambda p, probe, deadline: self._embed_once(req, p, deadline))
        except TakoError:
            await self._settle(reservation, 0.0, 0)
            raise
        except BaseException:  # cancelled mid-call: the upstream may bill it
            self.admission.estimated.add(Usage(prompt_tokens=reservation.tokens,
                                               cost_usd=reservation.usd_nano / 1e9))
            await self._settle(reservation, reservation.usd_nano / 1e9, reservation.tokens)
            raise
        usage = result.usage
        await self._settle(reservation, usage_cost(provider, usage), usage.total_tokens)
        return result

    async def _embed_once(self, req: EmbeddingRequest, provider: LlmProvider,
                          deadline: float) -> tuple[LlmProvider, Embeddings]:
        embedder = embedder_of(provider)
        result = await self._timed(deadline, provider, lambda: embedder.embed(req))
        return provider, result

    # ---- stream ----

    async def _open_stream(self, req: ChatRequest, provider: LlmProvider, probe: bool,
                           deadline: float) -> _StreamOpened:
        upstream = provider.stream(req)
        try:
            first = await self._timed(deadline, provider, lambda: anext(upstream))
        except StopAsyncIteration:
            await _aclose(upstream)
            raise UpstreamError(f"provider {provider.id} ended its stream without a chunk",
                                details={"provider": provider.id}) from None
        except BaseException:
            await _aclose(upstream)
            raise
        return _StreamOpened(provider, upstream, first, probe)

    async def stream(self, req: ChatRequest) -> AsyncIterator[ChatChunk]:
        reservation = await self._reserve(req)
        tally = _StreamTally(estimate_prompt_tokens(req), reservation.tokens)
        req = _with_output_cap(req, self._output_cap(reservation, tally.prompt_tokens))
        opened: _StreamOpened | None = None
        end: End | None = None
        refused = False  # every deployment failed before answering
        try:
            try:
                opened = await self._cascade(
                    lambda p, probe, deadline: self._open_stream(req, p, probe, deadline))
            except TakoError:
                refused = True
                raise
            chunk = opened.first
            while True:
                if isinstance(chunk, ChunkError) and says_unhealthy(chunk.error):
                    await self.breakers.failed_after_success(opened.provider.id)
                elif isinstance(chunk, End):
                    end = chunk
                over_cap = tally.saw(chunk)  # counted before the client may close
                yield chunk
                if end is not None:
                    break
                chunk = tally.cut_off() if over_cap else await self._next_chunk(opened)
        finally:
            if opened is not None:
                await _aclose(opened.upstream)
            await self._settle_stream(reservation, opened, end, tally, refused)

    async def _next_chunk(self, opened: _StreamOpened) -> ChatChunk:
        started = time.monotonic()
        try:
            return await anext(opened.upstream)
        except StopAsyncIteration:
            return End("stop", Usage())  # the contract's closing End, made up
        finally:
            self.admission.upstream_seconds += time.monotonic() - started

    async def _settle_stream(self, reservation: Reservation, opened: _StreamOpened | None,
                             end: End | None, tally: _StreamTally, refused: bool) -> None:
        if refused:  # no deployment answered: nothing was generated
            await self._settle(reservation, 0.0, 0)
            return
        if end is not None and not tally.cut and (end.usage.total_tokens
                                                  or not tally.text_chars):
            assert opened is not None
            usd = max(usage_cost(opened.provider, end.usage), 0.0)
            await self._settle(reservation, usd, end.usage.total_tokens)
            return
        prompt, completion = tally.seen_tokens()
        if opened is None:  # cancelled while waiting for the first chunk: the prompt
            completion = 0
        usd = (opened.provider if opened else self).estimate_cost_usd(prompt, completion)
        if end is None or tally.cut:  # cut short: never more than the reservation
            usd = min(usd, reservation.usd_nano / 1e9)
            completion = max(0, min(prompt + completion, reservation.tokens) - prompt)
            prompt = min(prompt, reservation.tokens)
        self.admission.estimated.add(Usage(prompt_tokens=prompt, completion_tokens=completion,
                                           cost_usd=usd))
        await self._settle(reservation, usd, prompt + completion)


@dataclass(slots=True)
class _StreamTally:
    """What a stream produced so far, by the text it carried, against the output cap
    its reservation was sized for."""

    prompt_tokens: int
    reserved_tokens: int
    text_chars: int = 0
    cut: bool = False

    @property
    def cap(self) -> int:
        return max(1, self.reserved_tokens - self.prompt_tokens)

    def saw(self, chunk: ChatChunk) -> bool:
        """Count a chunk's text; True once the completion is past the cap."""
        if isinstance(chunk, Delta):
            self.text_chars += len(chunk.content or "")
            for call in chunk.tool_calls or ():
                self.text_chars += len(call.arguments or "") + len(call.name or "")
        # judged at LENIENT_CHARS_PER_TOKEN: an upstream keeping to the cap is never cut
        return self.text_chars > self.cap * LENIENT_CHARS_PER_TOKEN

    def cut_off(self) -> End:
        self.cut = True
        prompt, completion = self.seen_tokens()
        return End("length", Usage(prompt_tokens=prompt, completion_tokens=completion))

    def seen_tokens(self) -> tuple[int, int]:
        """Prompt and completion tokens, estimated on the safe (high) side."""
        return self.prompt_tokens, (self.text_chars + CHARS_PER_TOKEN - 1) // CHARS_PER_TOKEN


def _with_output_cap(req: ChatRequest, cap: int) -> ChatRequest:
    """The request the upstream gets: with no output limit from the client, the one its
    reservation was sized for, so a call cannot legally cost more than it reserved."""
    if req.output_limit() is not None:
        return req
    return req.model_copy(update={"max_tokens": cap})


async def _aclose(stream: AsyncIterator[ChatChunk]) -> None:
    close = getattr(stream, "aclose", None)
    if close is not None:
        try:
            await close()
        except Exception:  # noqa: BLE001 - closing a broken upstream must not mask the cause
            pass
