"""Fine-tuning a real GPT-2 checkpoint on a text file: LoRA, QLoRA or full, all in NumPy.

``python -m minilora finetune --base DIR --text FILE --method lora|qlora|full`` runs :func:`finetune_text`:

1. the checkpoint (:meth:`GPT.from_pretrained <minilora.nn.gpt.GPT.from_pretrained>`) and its tokenizer
   (:class:`~minilora.tokenizer.GPT2Tokenizer`) are read from DIR;
2. the text is tokenized once and cut into consecutive blocks (:func:`text_blocks`): block i predicts tokens
   ``ids[iT+1 .. (i+1)T]`` from ``ids[iT .. (i+1)T-1]`` (causal language modelling, every token scored
   once); the last 10% of the blocks (at least one) are held out (:func:`split_blocks`);
3. AdamW trains the chosen parameters on random batches of training blocks (seeded), with a progress bar;
4. the report holds the trainable parameters, held-out loss and perplexity before and after, tokens per
   second and the peak resident memory of the process; ``--save DIR`` writes the LoRA/QLoRA adapter in the
   layout PEFT loads onto ``GPT2LMHeadModel`` (:func:`minilora.hf.adapter.save_hf_adapter`), or the whole
   model for full fine-tuning (``save_pretrained`` + the tokenizer files).

``python -m minilora quant-eval --base DIR --text FILE`` runs :func:`quant_eval_text`: the same held-out
blocks through :func:`minilora.experiments.quant_eval.quant_eval` (QLoRA's Table 2 on the user's model).
"""

from __future__ import annotations

import os
import resource
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from minilora.experiments.quant_eval import heldout_loss, quant_eval
from minilora.nn.gpt import GPT
from minilora.optim import AdamW
from minilora.peft import LoraConfig, inject_lora
from minilora.tokenizer import GPT2Tokenizer
from minilora.train import train

METHODS = ("lora", "qlora", "full")
#: AdamW learning rates when none is given (LoRA's are larger: few parameters, B starts at zero)
DEFAULT_LR = {"lora": 1e-3, "qlora": 1e-3, "full": 1e-4}
HELDOUT_FRACTION = 0.1


@dataclass(frozen=True)
class TextData:
    """Token blocks of one text file: training and held-out ``(inputs, targets)``, each (n, T) int64."""

    train_x: np.ndarray
    train_y: np.ndarray
    heldout_x: np.ndarray
    heldout_y: np.ndarray
    n_tokens: int
    source: str

    @property
    def block_size(self) -> int:
        return int(self.train_x.shape[1])

    def batches(self, batch_size: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """The held-out blocks in batches of ``batch_size`` (the last may be smaller)."""
        return [(self.heldout_x[i:i + batch_size], self.heldout_y[i:i + batch_size])
                for i in range(0, len(self.heldout_x), batch_size)]

    def __repr__(self) -> str:
        return (f"TextData({self.n_tokens:,d} tokens from {self.source}: {len(self.train_x)} training + "
                f"{len(self.heldout_x)} held-out blocks of {self.block_size})")


def text_blocks(ids: np.ndarray, block_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Consecutive blocks: inputs ``ids[iT:(i+1)T]``, targets ``ids[iT+1:(i+1)T+1]``; (n, T) each.

    >>> x, y = text_blocks(np.arange(7), 3)
    >>> x.tolist(), y.tolist()
    ([[0, 1, 2], [3, 4, 5]], [[1, 2, 3], [4, 5, 6]])
    """
    ids = np.asarray(ids, dtype=np.int64)
    n = (len(ids) - 1) // block_size
    return ids[:n * block_size].reshape(n, block_size), ids[1:n * block_size + 1].reshape(n, block_size)


def split_blocks(x: np.ndarray, y: np.ndarray, heldout_fraction: float = HELDOUT_FRACTION):
    """The last ``ceil(fraction · n)`` blocks (at least one) are held out: ``(train_x, train_y, ho_x, ho_y)``."""
    n_ho = max(1, int(np.ceil(heldout_fraction * len(x))))
    return x[:-n_ho], y[:-n_ho], x[-n_ho:], y[-n_ho:]


def load_text(path: str | os.PathLike, tokenizer: GPT2Tokenizer, block_size: int,
              heldout_fraction: float = HELDOUT_FRACTION) -> TextData:
    """Tokenize a UTF-8 text file and cut it into training and held-out blocks of ``block_size`` tokens.

    Raises ValueError naming the file when it yields fewer than two blocks (one to train on, one held out).
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"--text {path}: no such file")
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"--text {path}: not UTF-8 text ({err})") from None
    ids = tokenizer.encode(text)
    need = 2 * block_size + 1
    if len(ids) < need:
        raise ValueError(f"--text {path} encodes to {len(ids)} tokens, fewer than the {need} that two blocks of "
                         f"--block-size {block_size} need (one to train on, one held out); give more text or a "
                         f"smaller --block-size")
    x, y = text_blocks(np.array(ids), block_size)
    return TextData(*split_blocks(x, y, heldout_fraction), n_tokens=len(ids), source=str(path))


def peak_rss_bytes() -> int:
    """The peak resident memory of this process so far (``getrusage``: KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def prepare(model: GPT, method: str, config: LoraConfig | None = None, seed: int = 0, **quant) -> GPT:
    """``model`` ready to train with ``method`` (in place): LoRA injected, QLoRA prepared, or all unfrozen."""
    if method == "lora":
        return inject_lora(model, config or LoraConfig(), seed=seed)
    if method == "qlora":
        from minilora.peft.qlora import prepare_qlora

        return prepare_qlora(model, config or LoraConfig(target_modules="all-linear"), seed=seed, **quant)
    if method == "full":
        return model.unfreeze()
    raise ValueError(f"method must be one of {METHODS}, got {method!r}")


def finetune_text(model: GPT, data: TextData, method: str = "lora", config: LoraConfig | None = None,
                  steps: int = 100, lr: float | None = None, batch_size: int = 8, seed: int = 0,
                  progress: bool = False, eval_batch_size: int = 16, **quant) -> tuple[GPT, dict]:
    """Fine-tune ``model`` (changed in place) on ``data``'s training blocks; return ``(model, report)``.

    ``report``: ``trainable``, ``total`` (parameters), ``loss_before``/``loss_after`` (held-out mean
    cross-entropy), ``ppl_before``/``ppl_after``, ``tokens_per_s`` (training), ``seconds``, ``peak_rss``
    (bytes) and ``history`` (:class:`~minilora.train.History`).
    """
    if data.block_size > model.config.block_size:
        raise ValueError(f"block size {data.block_size} exceeds the model's n_positions {model.config.block_size}")
    if steps < 0 or batch_size < 1:
        raise ValueError(f"steps must be >= 0 and batch_size >= 1, got {steps}, {batch_size}")
    held = data.batches(eval_batch_size)
    loss_before = heldout_loss(model, held)
    model = prepare(model, method, config, seed, **quant)
    lr = DEFAULT_LR[method] if lr is None else lr
    n_train = len(data.train_x)

    def batch(i: int):
        rows = np.random.default_rng([seed, i]).integers(0, n_train, min(batch_size, n_train))
        return data.train_x[rows], data.train_y[rows]

    t0 = time.perf_counter()
    hist = train(model, batch, AdamW(model, lr=lr, weight_decay=0.0), steps=steps, progress=progress,
                 desc=f"finetune ({method})")
    seconds = time.perf_counter() - t0
    loss_after = heldout_loss(model, held)
    tokens = steps * min(batch_size, n_train) * data.block_size
    return model, {
        "trainable": model.num_params(trainable_only=True), "total": model.num_params(),
        "loss_before": loss_before, "loss_after": loss_after,
        "ppl_before": float(np.exp(loss_before)), "ppl_after": float(np.exp(loss_after)),
        "tokens_per_s": tokens / seconds if seconds > 0 else float("nan"), "seconds": seconds,
        "peak_rss": peak_rss_bytes(), "history": hist,
    }


def default_block_size(model: GPT, block_size: int | None) -> int:
    """``block_size`` checked against the model, or ``min(128, n_positions)``."""
    if block_size is None:
        return min(128, model.config.block_size)
    if not 1 <= block_size <= model.config.block_size:
        raise ValueError(f"--block-size must be in [1, n_positions={model.config.block_size}], got {block_size}")
    return block_size


# ----------------------------------------------------------------------------- the CLI's two subcommands
def run_finetune(args) -> int:
    """``python -m minilora finetune --base DIR --text FILE ...``: print the report; exit status."""
    from minilora.hf.adapter import save_hf_adapter
    from minilora.peft import print_trainable_parameters

    if args.text is None:
        print("error: --base needs --text FILE (the text to fine-tune on)", file=sys.stderr)
        return 2
    try:
        model = GPT.from_pretrained(args.base)
        tokenizer = GPT2Tokenizer.from_pretrained(args.base)
        data = load_text(args.text, tokenizer, default_block_size(model, args.block_size))
        config = None
        if args.method != "full":
            targets = args.targets or (["all-linear"] if args.method == "qlora" else ["q_proj", "v_proj"])
            alpha = int(args.alpha) if float(args.alpha).is_integer() else args.alpha
            config = LoraConfig(r=args.r, lora_alpha=alpha, lora_dropout=args.dropout,
                                target_modules="all-linear" if targets == ["all-linear"] else tuple(targets),
                                init_lora_weights={"default": True, "false": False}.get(args.init, args.init),
                                use_rslora=args.rslora)
        print(f"base: {args.base} ({model.num_params():,d} parameters, {model.config.n_layer} layers, "
              f"n_embd {model.config.n_embd}); {data}")
        model, report = finetune_text(model, data, args.method, config, steps=args.steps, lr=args.lr,
                                      batch_size=args.batch_size, seed=args.seed, progress=True)
    except (ValueError, TypeError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"method: {args.method}" + (f" (r={config.r}, lora_alpha={config.lora_alpha}, "
                                      f"targets={config.target_modules})" if config else " (every parameter)"))
    print_trainable_parameters(model)
    if args.method == "qlora":
        from minilora.peft.qlora import quantized_modules

        qs = list(quantized_modules(model).values())
        n4 = sum(q.quant_state.numel for q in qs)
        bits = 8 * sum(q.packed.nbytes + q.quant_state.stats_nbytes for q in qs) / n4
        print(f"4-bit base: {n4:,d} more parameters in {len(qs)} linear layers ({qs[0].quant_type}, "
              f"{bits:.3f} bits per parameter measured); all params counting them: {model.num_params() + n4:,d}")
    print(f"held-out loss {report['loss_before']:.4f} -> {report['loss_after']:.4f}   perplexity "
          f"{report['ppl_before']:.3f} -> {report['ppl_after']:.3f}")
    print(f"training: {args.steps} steps in {report['seconds']:.1f} s, {report['tokens_per_s']:,.0f} tokens/s; "
          f"peak memory (RSS) {report['peak_rss'] / 2**20:,.0f} MiB")
    if args.save:
        if args.method == "full":
            model.save_pretrained(args.save)
            path = tokenizer.save_pretrained(args.save)
            print(f"saved the fine-tuned model (GPT2LMHeadModel layout) and tokenizer to {path}")
        else:
            path = save_hf_adapter(model, args.save)
            print(f"saved the adapter to {path}: peft.PeftModel.from_pretrained(GPT2LMHeadModel.from_pretrained("
                  f"{str(args.base)!r}), {str(path)!r}) loads it")
    return 0


def quant_eval_text(model: GPT, data: TextData, blocksize: int = 64, batch_size: int = 16, progress: bool = False):
    """:func:`~minilora.experiments.quant_eval.quant_eval` on the held-out blocks of ``data``."""
    return quant_eval(model, data.batches(batch_size), blocksize=blocksize, progress=progress)


def run_quant_eval(args) -> int:
    """``python -m minilora quant-eval --base DIR --text FILE [--blocksize 64]``: print the table."""
    try:
        model = GPT.from_pretrained(args.base)
        data = load_text(args.text, GPT2Tokenizer.from_pretrained(args.base),
                         default_block_size(model, args.block_size))
        print(f"base: {args.base} ({model.num_params():,d} parameters); {data}")
        table = quant_eval_text(model, data, blocksize=args.blocksize, progress=True)
    except (ValueError, TypeError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(table)
    verdict = table.paper_ordering()
    print(f"QLoRA's ordering NF4 < FP4 < Int4 (perplexity) {'holds' if verdict else 'does not hold'} here")
    return 0


__all__ = ["DEFAULT_LR", "METHODS", "TextData", "finetune_text", "load_text", "peak_rss_bytes", "prepare",
           "quant_eval_text", "run_finetune", "run_quant_eval", "split_blocks", "text_blocks"]
