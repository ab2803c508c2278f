"""One model, many callers: threads and asyncio tasks share a LocalModel and its scorers,
get what sequential calls get, never fire each other's hooks, and are served in batches."""

from __future__ import annotations

import asyncio
import random
import threading
from collections.abc import Callable
from typing import Any

import pytest
import torch

from semgrad_guard import GradientAccessError, LocalModel, SemGradScorer, UncertaintyScore
from semgrad_guard.errors import EmptyResponseError, ModelClosedError, NonFiniteScoreError

from .tiny import rule_out_while_scoring, tiny_local_model

PROMPTS = ["what is the color of the sky ?", "who wrote the moon ?",
           "how many cat and dog in the city of paris ?", "where is the river ?",
           "why is the sun warm ?", "when is the night cold ?"]
SETTINGS = [{"max_new_tokens": 5}, {"max_new_tokens": 3}]


def close(got: UncertaintyScore, want: UncertaintyScore) -> None:
    assert got.response_ids == want.response_ids
    for key, value in want.scores.items():
        assert got.scores[key] == pytest.approx(value, rel=1e-4, abs=1e-9), key


def hooked_modules(lm: LocalModel) -> list[str]:
    return [name for name, m in lm.model.named_modules() if m._forward_hooks]


def hold_until_queued(lm: LocalModel, calls: list[Callable[[], Any]]) -> list[Any]:
    """Run ``calls`` in threads while the model's batching worker is kept busy, and let it
    go once every call waits in the queue: the worker's next take holds them all. Results
    (or errors) in order."""
    results: list[Any] = [None] * len(calls)
    release, busy = threading.Event(), threading.Event()

    def occupy(items: list[Any]) -> list[Any]:
        busy.set()
        assert release.wait(60)
        return items

    def run(i: int) -> None:
        try:
            results[i] = calls[i]()
        except Exception as exc:  # checked by the caller
            results[i] = exc

    blocker = lm.batcher.submit(occupy, None)
    assert busy.wait(60)
    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    while lm.batcher.queued < len(calls):
        threading.Event().wait(0.005)
    release.set()
    blocker.result(60)
    for t in threads:
        t.join(120)
    return results


def test_threads_hammering_one_model_get_what_sequential_calls_get() -> None:
    lm = tiny_local_model()
    scorer = SemGradScorer(lm)
    # Sequential references, one call at a time.
    generations = {(p, i): lm.generate(p, **s) for p in PROMPTS for i, s in enumerate(SETTINGS)}
    scores = {key: scorer.score_generation(g, release=False) for key, g in generations.items()}
    texts = {p: scorer.score_text(p, "blue sky") for p in PROMPTS}

    work: list[tuple[str, Any]] = []
    for p in PROMPTS:
        for i in range(len(SETTINGS)):
            work += [("generate", (p, i)), ("score", (p, i)), ("both", (p, i))]
        work.append(("text", p))
    random.Random(0).shuffle(work)
    work = work * 2
    before = lm.batcher.batches, lm.batcher.rows

    def call(kind: str, key: Any) -> Callable[[], Any]:
        if kind == "generate":
            return lambda: lm.generate(key[0], **SETTINGS[key[1]])
        if kind == "score":
            return lambda: scorer.score_generation(generations[key], release=False)
        if kind == "both":
            return lambda: scorer.generate_and_score(key[0], **SETTINGS[key[1]])
        return lambda: scorer.score_text(key, "blue sky")

    results: list[Any] = [None] * len(work)
    barrier = threading.Barrier(8)

    def worker(offset: int) -> None:
        barrier.wait()
        for i in range(offset, len(work), 8):
            try:
                results[i] = call(*work[i])()
            except Exception as exc:  # checked below
                results[i] = exc

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    for (kind, key), got in zip(work, results, strict=True):
        assert not isinstance(got, BaseException), f"{kind} {key}: {got!r}"
        if kind == "generate":
            assert got.response_ids == generations[key].response_ids
        elif kind == "score":
            close(got, scores[key])
        elif kind == "both":
            assert got[0].response_ids == generations[key].response_ids
            close(got[1], scores[key])
        else:
            close(got, texts[key])
            assert got.retokenized
    assert hooked_modules(lm) == []
    batches, rows = lm.batcher.batches - before[0], lm.batcher.rows - before[1]
    assert rows >= len(work) and batches <= rows  # every request ran


def test_requests_waiting_together_share_one_padded_batch() -> None:
    lm = tiny_local_model()
    scorer = SemGradScorer(lm)
    alone = [lm.generate(p, max_new_tokens=5) for p in PROMPTS]
    before = lm.batcher.batches
    together = hold_until_queued(lm, [
        (lambda p=p: lm.generate(p, max_new_tokens=5)) for p in PROMPTS])
    assert [g.response_ids for g in together] == [g.response_ids for g in alone]
    # The worker's busy call, then one padded batch of every prompt.
    assert lm.batcher.batches - before == 2
    want = [scorer.score_generation(g, release=False) for g in alone]
    before = lm.batcher.batches
    got = hold_until_queued(lm, [(lambda g=g: scorer.score_generation(g)) for g in together])
    for g, w in zip(got, want, strict=True):
        close(g, w)
    assert lm.batcher.batches - before == 2


def test_different_settings_are_never_batched_together() -> None:
    lm = tiny_local_model()
    alone = [lm.generate(PROMPTS[0], max_new_tokens=n) for n in (2, 6)]
    second = lm.generate(PROMPTS[1], max_new_tokens=2)
    before = lm.batcher.batches
    got = hold_until_queued(lm, [
        lambda: lm.generate(PROMPTS[0], max_new_tokens=2),
        lambda: lm.generate(PROMPTS[0], max_new_tokens=6),
        lambda: lm.generate(PROMPTS[1], max_new_tokens=2),
        lambda: lm.generate(PROMPTS[0], max_new_tokens=6, do_sample=True, top_k=1)])
    assert len(got[0].response_ids) <= 2 and got[0].response_ids == alone[0].response_ids
    assert got[1].response_ids == alone[1].response_ids
    # Greedy in all but name: top-1 sampling, in a batch of its own.
    assert got[3].response_ids == alone[1].response_ids
    assert got[2].response_ids == second.response_ids
    # The busy call; the two prompts with 2 tokens; the greedy 6 tokens; the sampled.
    assert lm.batcher.batches - before == 4


def test_a_row_that_cannot_be_scored_fails_alone() -> None:
    lm = tiny_local_model()
    scorer = SemGradScorer(lm)
    good = lm.generate(PROMPTS[0], max_new_tokens=4)
    want = scorer.score_generation(good, release=False)
    empty = type(good)(good.prompt_ids, (), "", "length")
    got = hold_until_queued(lm, [lambda: scorer.score_generation(good, release=False),
                                    lambda: scorer.score_generation(empty),
                                    lambda: scorer.score_generation(good, release=False)])
    close(got[0], want)
    close(got[2], want)
    assert isinstance(got[1], EmptyResponseError)


def test_an_answer_that_cannot_be_scored_fails_its_caller_without_generating_again() -> None:
    lm = tiny_local_model()
    scorer = SemGradScorer(lm)
    prompts = [PROMPTS[0], PROMPTS[2], PROMPTS[3]]
    answers = [g.response_ids for g in lm.generate_batch(prompts, max_new_tokens=4)]
    token = next(t for t in answers[0] if all(t not in a for a in answers[1:]))
    handle = rule_out_while_scoring(lm, token)  # the first answer's score is non-finite
    try:
        want = scorer.score_batch([(lm.prompt_ids(p), a)
                                   for p, a in zip(prompts[1:], answers[1:], strict=True)])
        before = lm.batcher.batches
        got = hold_until_queued(lm, [(lambda p=p: scorer.generate_and_score(p, max_new_tokens=4))
                                     for p in prompts])
    finally:
        handle.remove()
    assert isinstance(got[0], NonFiniteScoreError)
    for (generation, score), answer, w in zip(got[1:], answers[1:], want, strict=True):
        assert generation.response_ids == answer
        close(score, w)
    # The worker's busy call, then one batch: the answers were generated once, and only
    # their scoring ran again, one answer at a time.
    assert lm.batcher.batches - before == 2


def test_a_call_fires_only_its_own_hooks() -> None:
    lm = tiny_local_model()
    block = lm.layout.blocks[1]
    ids = torch.tensor([lm.prompt_ids(PROMPTS[0])])
    fired: list[str] = []
    inside, other_done = threading.Event(), threading.Event()

    def other_caller() -> None:
        # A forward pass that bypasses the model's lock, run while the hooks are on.
        assert inside.wait(30)
        with torch.no_grad():
            lm.model(input_ids=ids)
        other_done.set()

    thread = threading.Thread(target=other_caller)
    thread.start()
    with lm.forward_hooks([(block, lambda *_: fired.append("mine"))]):
        inside.set()
        assert other_done.wait(30)
        assert fired == []
        with torch.no_grad():
            lm.model(input_ids=ids)
        assert fired == ["mine"]
    thread.join(30)
    assert hooked_modules(lm) == []


def test_a_call_made_inside_another_keeps_the_outer_calls_hooks() -> None:
    """A generation run inside a scoring call (it keeps hidden states with hooks of its
    own) must not silence the scoring call's hooks."""
    lm = tiny_local_model()
    SemGradScorer(lm, profile=None, anchor_offset=-2, layers=(2, 3))  # generation hooks too
    fired: list[str] = []
    with lm.forward_hooks([(lm.layout.blocks[1], lambda *_: fired.append("outer"))]):
        lm.generate_batch([PROMPTS[0]], max_new_tokens=3)
    assert len(fired) == 3  # the prompt, then each token fed back
    assert hooked_modules(lm) == []


def test_no_module_stays_hooked_when_a_scoring_pass_fails(monkeypatch) -> None:
    lm = tiny_local_model()
    scorer = SemGradScorer(lm)

    def broken(*args: Any, **kwargs: Any) -> Any:
        assert hooked_modules(lm), "the pass runs with its hooks on"
        raise RuntimeError("the forward pass broke")

    monkeypatch.setattr(scorer, "_forward", broken)
    with pytest.raises(RuntimeError, match="the forward pass broke"):
        scorer.score_batch([(lm.prompt_ids(PROMPTS[0]), [44, 2])])
    assert hooked_modules(lm) == []


def test_asyncio_tasks_share_batches_and_get_sequential_results() -> None:
    lm = tiny_local_model()
    scorer = SemGradScorer(lm)
    want = [scorer.generate_and_score(p, max_new_tokens=4) for p in PROMPTS]

    async def held_until_queued(calls: list[Any]) -> list[Any]:
        """Gather ``calls`` while the batching worker is kept busy; let it go once every
        call waits in the queue, so that its next take holds them all."""
        release, busy = threading.Event(), threading.Event()

        def occupy(items: list[Any]) -> list[Any]:
            busy.set()
            assert release.wait(60)
            return items

        blocker = lm.batcher.submit(occupy, None)
        assert await asyncio.to_thread(busy.wait, 60)
        gathered = asyncio.gather(*calls)
        for _ in range(6000):
            if lm.batcher.queued == len(calls):
                break
            await asyncio.sleep(0.005)  # the loop runs on while the callers wait
        release.set()
        await asyncio.wrap_future(blocker)
        return await gathered

    before = lm.batcher.batches, lm.batcher.rows
    got = asyncio.run(held_until_queued(
        [scorer.agenerate_and_score(p, max_new_tokens=4) for p in PROMPTS]
        + [lm.agenerate(p, max_new_tokens=4) for p in PROMPTS]))
    for (g, s), (wg, ws), alone in zip(got, want, got[len(PROMPTS):], strict=False):
        assert g.response_ids == wg.response_ids == alone.response_ids
        close(s, ws)
    # The busy call, then one batch of generate_and_score and one of generate.
    assert (lm.batcher.batches - before[0], lm.batcher.rows - before[1]) == (3, 13)

    before = lm.batcher.batches, lm.batcher.rows
    scored = asyncio.run(held_until_queued([scorer.ascore_generation(g)
                                            for g, _ in got[:len(PROMPTS)]]))
    for s, (_, ws) in zip(scored, want, strict=True):
        close(s, ws)
    assert (lm.batcher.batches - before[0], lm.batcher.rows - before[1]) == (2, 7)


def test_scoring_in_inference_mode_still_refuses() -> None:
    lm = tiny_local_model()
    scorer = SemGradScorer(lm)
    generation = lm.generate(PROMPTS[0], max_new_tokens=3)
    with torch.inference_mode(), pytest.raises(GradientAccessError, match="inference_mode"):
        scorer.score_generation(generation)


def test_a_closed_model_refuses_batched_calls() -> None:
    with tiny_local_model() as lm:
        lm.generate(PROMPTS[0], max_new_tokens=2)
    with pytest.raises(ModelClosedError, match="closed"):
        lm.generate(PROMPTS[0], max_new_tokens=2)
