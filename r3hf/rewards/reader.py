"""The reader: a frozen causal LM that reads a question with passages in context, for the reward (log-probabilities of
gold answers) and for evaluation (greedy generations)."""

from __future__ import annotations

import hashlib
import os
import weakref
from collections.abc import Callable, Sequence
from typing import TypeVar

import torch
from accelerate.utils import find_executable_batch_size
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel
from transformers.utils import logging

from ..utils import iter_batches
from .prompts import CHAT_PROMPT, OPENQA_PROMPT, format_paragraphs

logger = logging.get_logger(__name__)
T = TypeVar("T")


def weights_sha256(model: torch.nn.Module) -> str:
    """SHA-256 of a model's weights: every entry of its state dict, with its name, dtype and shape. The same weights
    give the same digest wherever they were loaded from; other weights, or the same in another precision, another."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        flat = tensor.detach().to("cpu").contiguous().reshape(-1)
        digest.update(f"{name}:{flat.dtype}:{tuple(tensor.shape)};".encode())
        digest.update(flat.view(torch.uint8).numpy())
    return digest.hexdigest()


class Reader:
    """A frozen causal LM with its prompt: builds and truncates prompts, scores answer log-probabilities, generates.

    Args:
        model: A causal LM, or the Hub id / local folder of one (a PEFT adapter folder works too).
        tokenizer: Its tokenizer; defaults to the model's.
        prompt_template: A template with `{paragraphs}` and `{question}`. Defaults to the OpenRAG open-QA prompt, or,
            for tokenizers with a chat template, the same content as a user turn.
        use_chat_template: Wrap the prompt with the tokenizer's chat template; defaults to whether it has one.
        batch_size: Sequences per forward pass. After an out-of-memory error a call is retried with smaller batches,
            and the size that fits is kept.
        generation_batch_size: Sequences per batch of `generate`; unset, it follows `batch_size`. Decoding reads
            every weight once per new token for the whole batch, so it gains from larger batches than scoring does,
            whose padding grows with the batch. Greedy outputs can differ between batch sizes only where two tokens
            nearly tie (float rounding), so keep one size for runs that must repeat.
        max_length: Longest prompt + answer, in tokens; the passages are cut to fit, never the question or the answer.
        max_new_tokens: Length of greedy generations unless a call says otherwise: 100, the paper's setting for
            free-form answers. A chatty small reader often states its answer after a sentence of preamble, so much
            shorter generations cut answers off (`benchmarks/bench_reader.py`).
        device, dtype: Where and in which precision to run the model (default: CUDA if available; a model loaded
            from a path in fp32 on CPU and bf16 on GPU, a model object in its own precision unless `dtype` is given).
    """

    def __init__(
        self,
        model: str | os.PathLike | PreTrainedModel,
        tokenizer=None,
        prompt_template: str | None = None,
        use_chat_template: bool | None = None,
        batch_size: int = 8,
        generation_batch_size: int | None = None,
        max_length: int = 1024,
        max_new_tokens: int = 100,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
    ):
        device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        if isinstance(model, str | os.PathLike):
            dtype = dtype or (torch.bfloat16 if device.type == "cuda" else torch.float32)
            path = str(model)
            if os.path.exists(os.path.join(path, "adapter_config.json")):
                from peft import AutoPeftModelForCausalLM

                model = AutoPeftModelForCausalLM.from_pretrained(path, dtype=dtype)
            else:
                model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
            tokenizer = tokenizer or AutoTokenizer.from_pretrained(path)
        else:
            if dtype is not None:  # only then: quantized models refuse any dtype argument to `to`
                model = model.to(dtype=dtype)
            if tokenizer is None:
                tokenizer = AutoTokenizer.from_pretrained(model.config._name_or_path)
        self.model = model.to(device).eval()
        self.model.requires_grad_(False)
        self.tokenizer = tokenizer
        self.device = device
        self.use_chat_template = (
            tokenizer.chat_template is not None if use_chat_template is None else use_chat_template
        )
        self.prompt_template = prompt_template or (CHAT_PROMPT if self.use_chat_template else OPENQA_PROMPT)
        self.batch_size = batch_size
        self.generation_batch_size = generation_batch_size
        self.max_length = max_length
        self.max_new_tokens = max_new_tokens
        self._fingerprint: tuple[weakref.ref, str] | None = None

    @property
    def fingerprint(self) -> str:
        """[`weights_sha256`] of the model, computed once per model object (the reader is frozen). The reward's score
        store and reused offline labels are keyed on it, so that other weights at the same path or Hub id, or the same
        weights in another precision, never reuse their scores."""
        if self._fingerprint is None or self._fingerprint[0]() is not self.model:
            self._fingerprint = (weakref.ref(self.model), weights_sha256(self.model))
        return self._fingerprint[1]

    @property
    def batch_size(self) -> int:
        """Sequences per forward pass of scoring (and of `generate`, unless `generation_batch_size` is set)."""
        return self._batch_size

    @batch_size.setter
    def batch_size(self, value: int) -> None:
        if value < 1:
            raise ValueError(f"batch_size must be at least 1, got {value}.")
        self._batch_size = value

    @property
    def generation_batch_size(self) -> int:
        """Sequences per batch of `generate`: `batch_size` unless set."""
        return self.batch_size if self._generation_batch_size is None else self._generation_batch_size

    @generation_batch_size.setter
    def generation_batch_size(self, value: int | None) -> None:
        if value is not None and value < 1:
            raise ValueError(f"generation_batch_size must be at least 1 (or None to follow batch_size), got {value}.")
        self._generation_batch_size = value

    def build_prompt(self, query: str, passages: Sequence) -> str:
        """The prompt text for a query with its passages in context, chat template applied when in use."""
        text = self.prompt_template.format(paragraphs=format_paragraphs(passages), question=query)
        if self.use_chat_template:
            text = self.tokenizer.apply_chat_template(
                [{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True
            )
        return text

    def prompt_ids(self, query: str, passages: Sequence, budget: int) -> list[int]:
        """Token ids of the prompt, the passages cut from the end until it fits in `budget` tokens."""
        add_special = not self.use_chat_template  # a chat template already writes its special tokens
        ids = self.tokenizer(self.build_prompt(query, passages), add_special_tokens=add_special)["input_ids"]
        if len(ids) <= budget:
            return ids
        empty = [{"title": "", "text": ""} for _ in passages]
        overhead = len(self.tokenizer(self.build_prompt(query, empty), add_special_tokens=add_special)["input_ids"])
        if overhead >= budget:
            raise ValueError(
                f"The prompt without passages takes {overhead} tokens, over max_length: raise max_length."
            )
        per_passage = max(1, (budget - overhead) // max(1, len(passages)))
        while True:
            cut = []
            for p in passages:
                text = p if isinstance(p, str) else p["text"]
                tokens = self.tokenizer(text, add_special_tokens=False)["input_ids"][:per_passage]
                short = self.tokenizer.decode(tokens)
                cut.append(short if isinstance(p, str) else {**p, "text": short})
            ids = self.tokenizer(self.build_prompt(query, cut), add_special_tokens=add_special)["input_ids"]
            if len(ids) <= budget or per_passage == 1:
                return ids[:budget]
            per_passage = max(1, per_passage - (len(ids) - budget))

    # ------------------------------------------------------------------ log-probabilities

    def _with_batch_size(self, run: Callable[[int], T], attribute: str = "batch_size") -> T:
        """`run(batch_size)` with the batch size held in `attribute`, retried with smaller batches after an
        out-of-memory error (accelerate's `find_executable_batch_size`), so a long run slows down instead of
        crashing; the size that fits is kept."""
        start = getattr(self, attribute)

        @find_executable_batch_size(starting_batch_size=start)
        def attempt(batch_size: int) -> T:
            result = run(batch_size)
            if batch_size < start:
                logger.warning(f"Out of memory with {attribute}={start}: the reader now uses {batch_size}.")
                setattr(self, attribute, batch_size)
            return result

        return attempt()

    def log_probs(
        self,
        sequences: list[tuple[list[int], list[list[int]]]],
        length_normalize: bool = False,
        show_progress_bar: bool | None = False,
    ) -> list[list[float]]:
        """Sum of log P(alias tokens | prompt) for each alias of each `(prompt_ids, [alias_ids, ...])` item (the mean
        per token with `length_normalize`). `show_progress_bar=None` shows one when there are more than 4 batches;
        the default shows none, for the few pairs of a training step."""
        return self._with_batch_size(
            lambda batch_size: self._log_probs_in_batches(sequences, batch_size, length_normalize, show_progress_bar)
        )

    @torch.no_grad()
    def _log_probs_in_batches(
        self,
        sequences: list[tuple[list[int], list[list[int]]]],
        batch_size: int,
        length_normalize: bool,
        show_progress_bar: bool | None = False,
    ) -> list[list[float]]:
        """[`Reader.log_probs`] with `batch_size` sequences per forward pass.

        The aliases of an item share one forward pass: the row is the prompt followed by every alias, each alias
        attending to the prompt and to itself only (a 4D mask) and positioned right after the prompt, so it scores
        exactly as `prompt + alias` alone would. Rows are right-padded by hand, so results depend neither on the
        tokenizer's padding side nor on what else is in the batch."""
        order = sorted(range(len(sequences)), key=lambda i: -len(sequences[i][0]) - sum(map(len, sequences[i][1])))
        out: list[list[float]] = [[] for _ in sequences]
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        dtype = next(self.model.parameters()).dtype
        for chunk in iter_batches(order, batch_size, show_progress_bar, "Scoring"):
            width = max(len(sequences[i][0]) + sum(map(len, sequences[i][1])) for i in chunk)
            input_ids = torch.full((len(chunk), width), pad, dtype=torch.long)
            position_ids = torch.zeros((len(chunk), width), dtype=torch.long)
            allowed = torch.zeros((len(chunk), width, width), dtype=torch.bool)
            allowed[:, :, 0] = True  # padding rows attend somewhere, so no row of the softmax is empty
            targets = []  # per row: (logit position, target token, alias number) for every alias token
            for row, i in enumerate(chunk):
                prompt, aliases = sequences[i]
                n = len(prompt)
                input_ids[row, :n] = torch.tensor(prompt)
                position_ids[row, :n] = torch.arange(n)
                allowed[row, :n, :n] = torch.ones(n, n, dtype=torch.bool).tril()
                offset, row_targets = n, []
                for a, alias in enumerate(aliases):
                    m = len(alias)
                    seg = slice(offset, offset + m)
                    input_ids[row, seg] = torch.tensor(alias)
                    position_ids[row, seg] = torch.arange(n, n + m)
                    allowed[row, seg, :n] = True
                    allowed[row, seg, seg] = torch.ones(m, m, dtype=torch.bool).tril()
                    # token t of the alias is predicted at the prompt's last position (t = 0) or at alias token t-1
                    row_targets += [(n - 1 if t == 0 else offset + t - 1, tok, a) for t, tok in enumerate(alias)]
                    offset += m
                targets.append(row_targets)
            mask = torch.zeros((len(chunk), 1, width, width), dtype=dtype)
            mask.masked_fill_(~allowed[:, None], torch.finfo(dtype).min)
            first = min(len(sequences[i][0]) for i in chunk) - 1
            logits = self.model(
                input_ids=input_ids.to(self.device),
                attention_mask=mask.to(self.device),
                position_ids=position_ids.to(self.device),
                logits_to_keep=width - first,
            ).logits.float()
            for row, i in enumerate(chunk):
                pos, tok, alias = (torch.tensor(x) for x in zip(*targets[row]))
                log_probs = logits[row, pos.to(self.device) - first].log_softmax(-1)
                token_lp = log_probs.gather(1, tok[:, None].to(self.device))[:, 0].double().cpu()
                sums = torch.zeros(len(sequences[i][1]), dtype=torch.float64).index_add_(0, alias, token_lp)
                lengths = torch.tensor([len(a) for a in sequences[i][1]], dtype=torch.float64)
                out[i] = (sums / lengths if length_normalize else sums).tolist()
        return out

    # ------------------------------------------------------------------ generation

    @torch.no_grad()
    def generate(
        self,
        queries: Sequence[str],
        passages: Sequence[Sequence],
        max_new_tokens: int | None = None,
        show_progress_bar: bool | None = None,
    ) -> list[str]:
        """Greedy generations, one per query, with its list of passages in context (batched, left-padded), of at most
        `max_new_tokens` tokens (default: the reader's)."""
        max_new_tokens = self.max_new_tokens if max_new_tokens is None else max_new_tokens
        if not 1 <= max_new_tokens < self.max_length:
            raise ValueError(
                f"max_new_tokens must be at least 1 and below max_length ({self.max_length}), got {max_new_tokens}: "
                "lower max_new_tokens or raise max_length."
            )
        prompts = [self.prompt_ids(q, ps, self.max_length - max_new_tokens) for q, ps in zip(queries, passages)]
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))

        def run(batch_size: int) -> list[str]:
            outputs: list[str] = [""] * len(prompts)
            for chunk in iter_batches(order, batch_size, show_progress_bar, "Generating"):
                width = max(len(prompts[i]) for i in chunk)
                input_ids = torch.full((len(chunk), width), pad, dtype=torch.long)
                mask = torch.zeros((len(chunk), width), dtype=torch.long)
                for row, i in enumerate(chunk):
                    input_ids[row, width - len(prompts[i]) :] = torch.tensor(prompts[i])
                    mask[row, width - len(prompts[i]) :] = 1
                generated = self.model.generate(
                    input_ids=input_ids.to(self.device),
                    attention_mask=mask.to(self.device),
                    max_new_tokens=max_new_tokens,
                    do_sample=False,
                    pad_token_id=pad,
                    temperature=None,
                    top_p=None,
                    top_k=None,
                )
                for row, i in enumerate(chunk):
                    outputs[i] = self.tokenizer.decode(generated[row, width:], skip_special_tokens=True)
            return outputs

        # An unset generation batch size follows batch_size, so an out-of-memory error shrinks batch_size itself.
        return self._with_batch_size(
            run, "batch_size" if self._generation_batch_size is None else "generation_batch_size"
        )
