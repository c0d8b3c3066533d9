"""Did it learn? Held-out prompts answered greedily by the base model and by the fine-tune, side by side.

Used at the end of every run (the ``comparison`` event; a ``sample`` reply to one fixed prompt during
training) and on demand by ``backprop compare RUN``. Prompts come from ``--prompt``/``compare_prompts`` (a
text file, one prompt per line), else from the held-out rows: a row's prompt is everything before its first
trained token, exactly what the model saw, and its reference is the reply it was held out with.
"""

from __future__ import annotations

import json
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

from .data.tokenize import IGNORE_INDEX, TokenizedExample
from .errors import ConfigError
from .events import Comparison, Event, SampleReply
from .progress import tracked

COMPARE_MAX_TOKENS = 48
COMPARISON_FILE = "comparison.json"  # the latest `backprop compare RUN`
SAMPLE_MAX_TOKENS = 32
_MARKS = ("\x1fPROMPT\x1f", "\x1fREPLY\x1f", "\x1fNEXT\x1f")  # never in real text


@dataclass
class Prompt:
    text: str  # what the user asked (the last user turn)
    ids: list[int]  # the conversation rendered up to where the reply starts
    reference: str = ""  # the reply the row was held out with ("" for a typed prompt)


@dataclass
class Answers:
    prompts: list[Prompt]
    source: str  # where the prompts came from, in words


def read_prompt_file(path: str | Path) -> list[str]:
    path = Path(path).expanduser()
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(
            f"{path}: cannot read the comparison prompts ({exc})", "a UTF-8 text file, one prompt per line"
        ) from None
    prompts = [line.strip() for line in lines if line.strip()]
    if not prompts:
        raise ConfigError(f"{path}: no prompts in this file", "write one prompt per line")
    return prompts


def prompts_from_texts(tokenizer, texts: list[str]) -> list[Prompt]:
    from .data.tokenize import render

    rendered = [
        render(tokenizer, [{"role": "user", "content": text}], add_generation_prompt=True) for text in texts
    ]
    return [
        Prompt(text, tokenizer(r, add_special_tokens=False)["input_ids"]) for text, r in zip(texts, rendered)
    ]


def prompts_from_examples(tokenizer, examples: list[TokenizedExample], count: int) -> list[Prompt]:
    """The first ``count`` conversations' prompts (up to the first trained token) and their replies."""
    template = _UserTurn(tokenizer)
    prompts = []
    for example in examples:
        start = next((i for i, label in enumerate(example.labels) if label != IGNORE_INDEX), 0)
        if start == 0:  # raw text: no prompt to answer
            continue
        end = next(
            (i for i in range(start, len(example.labels)) if example.labels[i] == IGNORE_INDEX),
            len(example.labels),
        )
        ids = example.input_ids[:start]
        reference = tokenizer.decode(example.input_ids[start:end], skip_special_tokens=True).strip()
        prompts.append(Prompt(template.user_text(ids), ids, reference))
        if len(prompts) == count:
            break
    return prompts


def choose_prompts(
    config, tokenizer, held_out: list[TokenizedExample], trained: list[TokenizedExample]
) -> Answers:
    """``config.compare_prompts`` (a file), else held-out rows, else (no rows held out) training rows (of
    preference pairs: the prompt, with the chosen reply as the reference)."""
    from .data.pairs import chats

    held_out, trained = chats(held_out), chats(trained)
    if not config.compare_count:
        return Answers([], "")
    if config.compare_prompts:
        texts = read_prompt_file(config.compare_prompts)[: config.compare_count]
        return Answers(prompts_from_texts(tokenizer, texts), Path(config.compare_prompts).name)
    if held_out and (prompts := prompts_from_examples(tokenizer, held_out, config.compare_count)):
        return Answers(prompts, "held-out rows, never trained")
    return Answers(
        prompts_from_examples(tokenizer, trained, config.compare_count),
        "training rows: no rows were held out",
    )


def greedy_replies(
    model, tokenizer, prompts: list[Prompt], max_new_tokens: int = COMPARE_MAX_TOKENS, base: bool = False
) -> list[str]:
    """Each prompt's greedy reply; ``base``: with the LoRA adapter switched off (peft's disable_adapter)."""
    import torch
    from transformers import GenerationConfig

    device = next(model.parameters()).device
    settings = GenerationConfig(
        max_new_tokens=max_new_tokens,
        do_sample=False,
        eos_token_id=end_of_reply_ids(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
    )
    was_training = model.training
    model.eval()
    replies = []
    with torch.no_grad(), model.disable_adapter() if base else nullcontext():
        try:
            for prompt in tracked("answer", prompts):  # a stop ends it before the next reply
                ids = torch.tensor([prompt.ids], device=device)
                out = model.generate(
                    input_ids=ids, attention_mask=torch.ones_like(ids), generation_config=settings
                )
                replies.append(tokenizer.decode(out[0, len(prompt.ids) :], skip_special_tokens=True).strip())
        finally:
            model.train(was_training)
    return replies


def end_of_reply_ids(tokenizer) -> list[int]:
    """EOS and the special token the chat template closes an assistant turn with (ChatML's <|im_end|>, ...)."""
    from .data.tokenize import render

    ids = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    text = render(tokenizer, [{"role": "user", "content": "a"}, {"role": "assistant", "content": _MARKS[1]}])
    after = tokenizer(text.split(_MARKS[1], 1)[-1], add_special_tokens=False)["input_ids"]
    if after and after[0] in tokenizer.all_special_ids and after[0] not in ids:
        ids.append(after[0])
    return ids


class _UserTurn:
    """Finds the last user turn's text in a rendered prompt, from two probe renderings of the template."""

    def __init__(self, tokenizer) -> None:
        from .data.tokenize import render

        prompt, reply, following = _MARKS
        self.tokenizer = tokenizer
        self.header = self.after = (
            ""  # a template the probes cannot read (e.g. one that drops earlier replies)
        )
        one = render(tokenizer, [{"role": "user", "content": prompt}], add_generation_prompt=True)
        two = render(
            tokenizer,
            [
                {"role": "user", "content": prompt},
                {"role": "assistant", "content": reply},
                {"role": "user", "content": following},
            ],
            add_generation_prompt=True,
        )
        if prompt not in one or reply not in two or following not in two.split(reply, 1)[1]:
            return  # then user_text decodes the whole prompt without special tokens
        before, self.after = one.split(prompt, 1)
        between = two.split(reply, 1)[1].split(following, 1)[0]
        self.header = _common_suffix(before, between)  # what opens a user turn, whatever came before it

    def user_text(self, ids: list[int]) -> str:
        text = self.tokenizer.decode(ids, skip_special_tokens=False)
        if self.header and self.after and text.endswith(self.after) and self.header in text:
            return text[text.rindex(self.header) + len(self.header) : len(text) - len(self.after)].strip()
        return self.tokenizer.decode(ids, skip_special_tokens=True).strip()


def _common_suffix(a: str, b: str) -> str:
    size = 0
    while size < min(len(a), len(b)) and a[-1 - size] == b[-1 - size]:
        size += 1
    return a[len(a) - size :]


class LearningCheck:
    """A run's own comparison: the base model's answers before the first step (the LoRA update starts at
    zero, so the model is still the base), a sample reply to the first prompt along the way, and the
    fine-tune's answers at the end. Only the reporting process generates."""

    def __init__(
        self, model, tokenizer, answers: Answers, bus, sample_steps: set[int], speaks: bool = True
    ) -> None:
        self.model, self.tokenizer, self.answers, self.bus = model, tokenizer, answers, bus
        self.sample_steps = sample_steps
        self.speaks = speaks and bool(answers.prompts)
        self.base: list[str] = []
        self.base_loss: float | None = None

    def start(self, base_loss: float | None) -> None:
        from .events import SampleReply

        self.base_loss = base_loss
        if self.speaks:
            self.base = greedy_replies(self.model, self.tokenizer, self.answers.prompts)
            self.bus.emit(SampleReply(step=0, prompt=self.answers.prompts[0].text, reply=self.base[0]))

    def sample(self, step: int) -> None:
        from .events import SampleReply

        if self.speaks and step in self.sample_steps:
            prompt = self.answers.prompts[0]
            self.bus.emit(
                SampleReply(
                    step=step,
                    prompt=prompt.text,
                    reply=greedy_replies(self.model, self.tokenizer, [prompt], SAMPLE_MAX_TOKENS)[0],
                )
            )

    def finish(self, step: int, tuned_loss: float | None) -> None:
        from .events import Comparison

        if not self.speaks:
            return
        prompts = self.answers.prompts
        tuned = greedy_replies(self.model, self.tokenizer, prompts)
        self.bus.emit(
            Comparison(
                step=step,
                source=self.answers.source,
                prompts=[p.text for p in prompts],
                base=self.base,
                tuned=tuned,
                references=[p.reference for p in prompts],
                base_loss=self.base_loss,
                tuned_loss=tuned_loss,
            )
        )


def sample_steps(config, has_eval: bool) -> set[int]:
    """When the sample reply is generated: every ``sample_steps``, else at every eval, else 4 times a run."""
    every = config.sample_steps or (config.eval_steps if has_eval else 0)
    if every:
        return set(range(every, config.steps, every))
    return {round(config.steps * k / 4) for k in (1, 2, 3)} - {0, config.steps}


def compare_run(
    run_dir: str | Path,
    prompts: list[str] | None = None,
    prompts_file: str | Path | None = None,
    gguf: str | Path | None = None,
    max_new_tokens: int = COMPARE_MAX_TOKENS,
):
    """``backprop compare``: the run's base model (HF) vs its adapter (or ``gguf``, through llama.cpp) on
    ``prompts``, the prompts in ``prompts_file``, or the run's held-out rows (with their held-out loss).
    The comparison is saved as the run's comparison.json and returned."""
    from dataclasses import replace

    from .data import load_chat_tokenizer
    from .events import Comparison
    from .fsutil import atomic_write_text
    from .presets import resolve_model
    from .rundir import RunDir
    from .runs import read_events
    from .train.loop import prepare_dataset

    run = RunDir.open(Path(run_dir))
    config = run.read_config()
    tuned_path = run.merged if run.full_fine_tuned else run.adapter
    if not tuned_path.is_dir():
        raise ConfigError(
            f"{run.path}: this run has no trained adapter yet", "compare a finished (or stopped) run"
        )
    model = resolve_model(
        config.model, allow_pickle=config.allow_pickle, trust_remote_code=config.trust_remote_code
    )
    tokenizer = load_chat_tokenizer(model.path)
    if prompts:
        answers, held_out = Answers(prompts_from_texts(tokenizer, prompts), "--prompt"), []
    else:
        settings = (
            replace(config, compare_prompts=str(prompts_file), compare_count=max(config.compare_count, 1))
            if prompts_file
            else config
        )
        data = None if settings.compare_prompts else prepare_dataset(settings, model)
        held_out = data.eval if data else []
        answers = choose_prompts(settings, tokenizer, held_out, data.train if data else [])
    if not answers.prompts:
        raise ConfigError(
            f"{run.path}: no prompts to compare on (the data has no conversations)", "pass --prompt TEXT"
        )
    sides = _Sides(model.path, tuned_path, run.full_fine_tuned, tokenizer)
    base, base_loss = sides.base(answers.prompts, held_out, max_new_tokens)
    if gguf is not None:
        from .export.chat import find_gguf

        path = find_gguf(Path(gguf))
        tuned, tuned_loss, label = _gguf_replies(path, answers.prompts, max_new_tokens), None, path.name
    else:
        (tuned, tuned_loss), label = sides.tuned(answers.prompts, held_out, max_new_tokens), "fine-tune"
    step = next(
        (e.get("steps", 0) for e in reversed(read_events(run.events_path)) if e.get("event") == "finished"), 0
    )
    event = Comparison(
        step=step,
        source=answers.source,
        prompts=[p.text for p in answers.prompts],
        base=base,
        tuned=tuned,
        references=[p.reference for p in answers.prompts],
        base_loss=base_loss,
        tuned_loss=tuned_loss,
        tuned_label=label,
    )
    atomic_write_text(
        run.path / COMPARISON_FILE, json.dumps(event.to_dict())
    )  # events.jsonl ends with the run
    return event


def saved_comparisons(run_dir: Path) -> list[SampleReply | Comparison]:
    """A run's sample and comparison events (from training), then its latest `backprop compare`, oldest first."""
    from .runs import EventFollower

    events = [
        e
        for e in EventFollower(Path(run_dir) / "events.jsonl").poll_events()
        if isinstance(e, (SampleReply, Comparison))
    ]
    latest = Path(run_dir) / COMPARISON_FILE
    if latest.is_file():
        try:
            event = Event.from_dict(json.loads(latest.read_text(encoding="utf-8")))
        except (OSError, ValueError):
            event = None  # a damaged file is ignored; `backprop compare` writes it again
        if isinstance(event, Comparison):
            events.append(event)
    return events


class _Sides:
    """The base model and the fine-tune, in one peft model (its adapter switched off for the base) or, after
    full fine-tuning, in two."""

    def __init__(self, base_path: Path, tuned_path: Path, full: bool, tokenizer) -> None:
        from .modeling import load_adapted_model, load_base_model, pick_device, pick_dtype

        self.device = pick_device()
        dtype = pick_dtype(self.device)
        self.tokenizer, self.full = tokenizer, full
        self.model = (
            load_base_model(base_path, self.device, dtype)
            if full
            else load_adapted_model(base_path, tuned_path, self.device, dtype)
        )
        self.tuned_path, self.dtype = tuned_path, dtype

    def base(self, prompts, held_out, max_new_tokens):
        return self._answer(self.model, prompts, held_out, max_new_tokens, base=not self.full)

    def tuned(self, prompts, held_out, max_new_tokens):
        from .modeling import load_base_model

        if self.full:
            self.model = load_base_model(self.tuned_path, self.device, self.dtype)
        return self._answer(self.model, prompts, held_out, max_new_tokens, base=False)

    def _answer(self, model, prompts, held_out, max_new_tokens, base: bool):
        from .train.loop import evaluate

        replies = greedy_replies(model, self.tokenizer, prompts, max_new_tokens, base=base)
        if not held_out:
            return replies, None
        with model.disable_adapter() if base else nullcontext():
            return replies, evaluate(model, held_out, 8, self.tokenizer.pad_token_id, self.device)


def _gguf_replies(path: Path, prompts: list[Prompt], max_new_tokens: int) -> list[str]:
    """Greedy completions of the very same prompt tokens, through llama.cpp."""
    from .export.chat import open_gguf

    llm = open_gguf(path)
    try:
        return [
            llm.create_completion(prompt=p.ids, max_tokens=max_new_tokens, temperature=0.0)["choices"][0][
                "text"
            ].strip()
            for p in prompts
        ]
    finally:
        llm.close()
