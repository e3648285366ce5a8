"""One training recipe and one function that fine-tunes the shipped base GPT with any PEFT method.

Every fine-tuning run of the notebooks, the figures, the CLI and the comparison chapter is::

    model, history, report = finetune(load_base_model(), peft_config, Recipe(...), quantization=None)

The config decides the method, through :func:`minilora.peft.get_peft_model`:

=====================================================  =========  ==========================================
``peft_config``                                        method     what trains
=====================================================  =========  ==========================================
``None`` or ``"full"``                                 full       every parameter
:class:`~minilora.peft.LoraConfig`                     lora       ``B A`` on the targets
``LoraConfig`` + ``quantization=QuantizationConfig()``  qlora      the same, on a 4-bit base
                                                                  (:func:`~minilora.peft.quantize_base` first)
a prompt-learning or adapter config                    its name   what the method adds (:data:`METHODS`)
=====================================================  =========  ==========================================

The :class:`Recipe` is the same for every method: the data stream (micro-batch ``i`` of
:func:`minilora.data.heldout_train_data` with the recipe's seed), the optimizer, the schedule, the evaluation on
:func:`minilora.data.heldout_eval_batch` (512 sequences the stream never draws). Only the learning rate has a
per-method default (:data:`DEFAULT_LR`), because the methods train very different parameters: a LoRA ``B``
that starts at 0 or a soft prompt moves further per step than a pretrained weight should.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from minilora import data, schedules
from minilora.nn.module import Module
from minilora.optim import SGD, Adam, AdamW, Optimizer
from minilora.peft import LoraConfig, QuantizationConfig, count_parameters, get_peft_model, quantize_base
from minilora.train import History, evaluate, train

#: the methods by their CLI names, in the order the comparison shows them
METHODS = ("full", "lora", "qlora", "prompt", "ptuning", "prefix", "adapter")
#: the config's ``peft_type`` → method name (LoRA is "qlora" when the base is quantized)
PEFT_TYPE_METHOD = {"LORA": "lora", "PROMPT_TUNING": "prompt", "P_TUNING": "ptuning", "PREFIX_TUNING": "prefix"}
#: AdamW learning rate per method when ``Recipe.lr`` is None: the lowest held-out loss of
#: :func:`minilora.experiments.compare.lr_sweep` (grid :data:`~minilora.experiments.compare.LR_GRID`, the chapter-14
#: recipe, seed 0, the shipped base). ``full``, ``lora`` and ``qlora`` come out at the rates chapters 02 and 10 use.
DEFAULT_LR = {"full": 1e-3, "lora": 1e-2, "qlora": 1e-2, "prompt": 1e-1, "ptuning": 1e-3, "prefix": 1e-1,
              "adapter": 3e-2}
OPTIMIZERS = ("adamw", "adam", "sgd")


def _check_int(name: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)


def _check_real(name: str, value: Any, low: float, strict: bool) -> float:
    ok = isinstance(value, (int, float, np.floating, np.integer)) and not isinstance(value, bool)
    if not ok or not np.isfinite(value) or (value <= low if strict else value < low):
        raise ValueError(f"{name} must be a finite number {'>' if strict else '>='} {low}, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class Recipe:
    """How a fine-tuning run trains, the same for every method (only the default ``lr`` depends on it).

    Parameters
    ----------
    steps : int
        Optimizer steps (each of ``grad_accum`` micro-batches).
    batch_size : int
        Sequences per micro-batch.
    lr : float or None
        Peak learning rate; None takes the method's :data:`DEFAULT_LR`.
    schedule : ``"constant"``, ``"cosine"`` or ``"linear"``
        :mod:`minilora.schedules`, after ``warmup_steps`` of linear warmup; cosine and linear decay to ``lr_min``.
    warmup_steps, lr_min : int, float
        Warmup length (``<= steps``) and the floor of the decaying schedules.
    weight_decay : float
        Decoupled (AdamW) or L2 (Adam, SGD) weight decay.
    optimizer : ``"adamw"``, ``"adam"`` or ``"sgd"``
        :mod:`minilora.optim`: Adam and AdamW with their default betas, SGD with ``momentum``.
    max_grad_norm : float or None
        Clip the global gradient norm (None: no clipping).
    grad_accum : int
        Micro-batches per optimizer step (micro-batch ``i = step · grad_accum + micro`` of the stream).
    seed : int
        Seeds the data stream and the method's initialization (and so the whole run).
    eval_every : int
        Evaluate every this many steps and after the last (0: only after the last).
    momentum : float
        SGD's momentum, in [0, 1) (PyTorch's rule; 0 keeps no state). Only SGD has one: a non-zero momentum with
        Adam or AdamW (which keep their betas) is refused.

    >>> Recipe()
    Recipe(steps=150, batch_size=32, lr=None, schedule='constant', warmup_steps=0, lr_min=0.0, weight_decay=0.0, \
optimizer='adamw', max_grad_norm=None, grad_accum=1, seed=0, eval_every=0, momentum=0.0)
    >>> Recipe().describe("lora")
    '150 steps of AdamW (weight decay 0), constant learning rate 0.01, batches of 32, seed 0'
    >>> Recipe(optimizer="sgd", momentum=0.9, lr=0.1, schedule="cosine", warmup_steps=100).describe("lora")
    '150 steps of SGD (momentum 0.9, weight decay 0), cosine learning rate 0.1 after 100 warmup steps, batches of \
32, seed 0'
    """

    steps: int = 150
    batch_size: int = 32
    lr: float | None = None
    schedule: str = "constant"
    warmup_steps: int = 0
    lr_min: float = 0.0
    weight_decay: float = 0.0
    optimizer: str = "adamw"
    max_grad_norm: float | None = None
    grad_accum: int = 1
    seed: int = 0
    eval_every: int = 0
    momentum: float = 0.0

    def __post_init__(self) -> None:
        _check_int("steps", self.steps, 0)
        _check_int("batch_size", self.batch_size, 1)
        if self.lr is not None:
            _check_real("lr", self.lr, 0.0, strict=True)
        if self.schedule not in schedules.SCHEDULES:
            raise ValueError(f"schedule must be one of {sorted(schedules.SCHEDULES)}, got {self.schedule!r}")
        _check_int("warmup_steps", self.warmup_steps, 0)
        if self.warmup_steps > self.steps:
            raise ValueError(f"warmup_steps must be <= steps={self.steps}, got {self.warmup_steps}")
        _check_real("lr_min", self.lr_min, 0.0, strict=False)
        _check_real("weight_decay", self.weight_decay, 0.0, strict=False)
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.max_grad_norm is not None:
            _check_real("max_grad_norm", self.max_grad_norm, 0.0, strict=True)
        _check_int("grad_accum", self.grad_accum, 1)
        _check_int("seed", self.seed, 0)
        _check_int("eval_every", self.eval_every, 0)
        if _check_real("momentum", self.momentum, 0.0, strict=False) >= 1:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum!r}")
        if self.momentum and self.optimizer != "sgd":
            raise ValueError(f"momentum is SGD's (Adam and AdamW keep their betas): got momentum={self.momentum!r} "
                             f"with optimizer={self.optimizer!r}")

    def replace(self, **changes: Any) -> Recipe:
        """A copy with some fields changed (checked again): ``Recipe().replace(steps=20)``."""
        unknown = sorted(set(changes) - {f.name for f in dataclasses.fields(self)})
        if unknown:
            raise TypeError(f"Recipe has no field(s) {unknown}; its fields are "
                            f"{[f.name for f in dataclasses.fields(self)]}")
        return dataclasses.replace(self, **changes)

    def lr_for(self, method: str) -> float:
        """The learning rate a run of ``method`` uses: ``lr``, or the method's :data:`DEFAULT_LR`."""
        if method not in DEFAULT_LR:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        return DEFAULT_LR[method] if self.lr is None else self.lr

    def make_optimizer(self, model: Module, method: str) -> Optimizer:
        """The recipe's optimizer over ``model``'s trainable parameters, at :meth:`lr_for` ``(method)``."""
        lr = self.lr_for(method)
        if self.optimizer == "adamw":
            return AdamW(model, lr=lr, weight_decay=self.weight_decay)
        if self.optimizer == "adam":
            return Adam(model, lr=lr, weight_decay=self.weight_decay)
        return SGD(model, lr=lr, momentum=self.momentum, weight_decay=self.weight_decay)

    def make_schedule(self, method: str):
        """``step -> lr`` for :func:`minilora.train.train`, or None (the optimizer's constant ``lr``)."""
        lr = self.lr_for(method)
        if self.steps == 0 or (self.schedule == "constant" and self.warmup_steps == 0):
            return None
        if self.schedule == "constant":
            return schedules.make("constant", lr=lr, warmup=self.warmup_steps)
        if self.schedule == "cosine":
            return schedules.make("cosine", total=self.steps, warmup=self.warmup_steps, lr_max=lr, lr_min=self.lr_min)
        return schedules.make("linear", total=self.steps, lr_max=lr, warmup=self.warmup_steps, lr_min=self.lr_min)

    def describe(self, method: str = "lora") -> str:
        """One sentence saying what the recipe does for ``method`` (for notebooks that print it)."""
        opt = {"adamw": "AdamW", "adam": "Adam", "sgd": "SGD"}[self.optimizer]
        momentum = f"momentum {self.momentum:g}, " if self.momentum else ""
        warm = f" after {self.warmup_steps} warmup steps" if self.warmup_steps else ""
        accum = f" x {self.grad_accum} accumulated" if self.grad_accum > 1 else ""
        clip = f", gradients clipped to norm {self.max_grad_norm:g}" if self.max_grad_norm else ""
        return (f"{self.steps} steps of {opt} ({momentum}weight decay {self.weight_decay:g}), {self.schedule} "
                f"learning rate {self.lr_for(method):g}{warm}, batches of {self.batch_size}{accum}{clip}, "
                f"seed {self.seed}")


def method_of(peft_config: Any, quantization: QuantizationConfig | None = None) -> str:
    """The method name (:data:`METHODS`) of a run: ``"full"``, ``"lora"``, ``"qlora"``, ``"prompt"``, ...

    >>> method_of(None), method_of(LoraConfig()), method_of(LoraConfig(), QuantizationConfig())
    ('full', 'lora', 'qlora')
    """
    if peft_config is None or (isinstance(peft_config, str) and peft_config == "full"):
        return "full"
    cls = type(peft_config)
    method = PEFT_TYPE_METHOD.get(getattr(cls, "peft_type", None))
    if method is None and getattr(cls, "architecture", None) == "bottleneck":  # AdapterHub's bottleneck configs
        method = "adapter"
    if method is None:
        raise TypeError("peft_config must be None, 'full' or a PEFT config (LoraConfig, PromptTuningConfig, "
                        "PromptEncoderConfig, PrefixTuningConfig, DoubleSeqBnConfig, SeqBnConfig), "
                        f"got {peft_config!r}")
    return "qlora" if method == "lora" and quantization is not None else method


#: each method's configuration when none is given: the one the CLI and the comparison start from
METHOD_DEFAULTS: dict[str, dict[str, Any]] = {
    "full": {},
    "lora": {"r": 8, "lora_alpha": 16, "target_modules": ("q_proj", "v_proj")},
    "qlora": {"r": 8, "lora_alpha": 16, "target_modules": "all-linear"},
    "prompt": {"num_virtual_tokens": 8},
    "ptuning": {"num_virtual_tokens": 8},
    "prefix": {"num_virtual_tokens": 8},
    "adapter": {},
}
#: the config options of QLoRA that go to :class:`~minilora.peft.QuantizationConfig` rather than LoraConfig
QUANT_OPTIONS = ("blocksize", "quant_type", "compress_statistics", "compute_format")
#: AdapterHub's short names of the adapter configurations (``config="double_seq_bn"``)
ADAPTER_CONFIGS = ("double_seq_bn", "seq_bn")


def _config_class(method: str, adapter_config: str = "double_seq_bn") -> type:
    """The config class of ``method`` (imported when first needed)."""
    try:
        if method in ("lora", "qlora"):
            return LoraConfig
        if method == "prompt":
            from minilora.peft.prompt_tuning import PromptTuningConfig as cls
        elif method == "ptuning":
            from minilora.peft.p_tuning import PromptEncoderConfig as cls
        elif method == "prefix":
            from minilora.peft.prefix_tuning import PrefixTuningConfig as cls
        else:
            from minilora.peft.adapters import DoubleSeqBnConfig, SeqBnConfig

            if adapter_config not in ADAPTER_CONFIGS:
                raise ValueError(f"adapter_config must be one of {ADAPTER_CONFIGS}, got {adapter_config!r}")
            cls = DoubleSeqBnConfig if adapter_config == "double_seq_bn" else SeqBnConfig
    except ImportError as err:  # a method module missing from this installation
        raise ValueError(f"method {method!r} is not available: {err}") from err
    return cls


def method_config(method: str, **options: Any) -> tuple[Any, QuantizationConfig | None]:
    """``(peft_config, quantization)`` of ``method`` with PEFT's / AdapterHub's option names.

    Options left None take :data:`METHOD_DEFAULTS`, then the config's own defaults. For ``"qlora"`` the options
    in :data:`QUANT_OPTIONS` build the :class:`~minilora.peft.QuantizationConfig`; for ``"adapter"``,
    ``adapter_config`` picks ``"double_seq_bn"`` (Houlsby, the default) or ``"seq_bn"`` (Pfeiffer).

    >>> config, quantization = method_config("lora", r=4)
    >>> config.r, config.lora_alpha, config.target_modules, quantization
    (4, 16, ('q_proj', 'v_proj'), None)
    >>> method_config("full")
    (None, None)
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    given = {k: v for k, v in options.items() if v is not None}
    adapter_config = given.pop("adapter_config", "double_seq_bn")
    quant = {k: given.pop(k) for k in QUANT_OPTIONS if k in given}
    if quant and method != "qlora":
        raise ValueError(f"{sorted(quant)} configure QLoRA's 4-bit base, not method {method!r}")
    if method == "full":
        if given:
            raise ValueError(f"full fine-tuning takes no method options, got {sorted(given)}")
        return None, None
    cls = _config_class(method, adapter_config)
    allowed = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(given) - set(allowed))
    if unknown:
        raise ValueError(f"{cls.__name__} has no option(s) {unknown}; its options are {allowed}")
    config = cls(**{**METHOD_DEFAULTS[method], **given})
    return config, (QuantizationConfig(**quant) if method == "qlora" else None)


def prepare(base: Module, peft_config: Any = None, quantization: QuantizationConfig | None = None,
            seed: int = 0) -> Module:
    """``base`` ready to train (in place, or the method's wrapper around it): every parameter trainable
    (full), or quantized (with ``quantization``) and then :func:`~minilora.peft.get_peft_model`."""
    method = method_of(peft_config, quantization)
    if method == "full":
        if quantization is not None:
            raise ValueError("quantization needs a PEFT config: a 4-bit base cannot be fully fine-tuned "
                             "(QLoRA trains LoRA adapters on it)")
        return base.unfreeze()
    if quantization is not None:
        if not isinstance(quantization, QuantizationConfig):
            raise TypeError(f"quantization must be a QuantizationConfig or None, got {type(quantization).__name__}")
        if isinstance(peft_config, LoraConfig) and peft_config.modules_to_save:
            quantization = dataclasses.replace(  # trained in full, so kept in float (as prepare_qlora)
                quantization, skip_modules=quantization.skip_modules + tuple(peft_config.modules_to_save))
        quantize_base(base, quantization)
    return get_peft_model(base, peft_config, seed=seed)


def step_seconds(history: History, batch_tokens: int) -> np.ndarray:
    """Wall-clock seconds of each optimizer step of ``history`` (from its tokens per second)."""
    return batch_tokens / np.asarray(history.tokens_per_s, float)


def finetune(base: Module, peft_config: Any = None, recipe: Recipe | None = None, *,
             quantization: QuantizationConfig | None = None, include_step0: bool = False, pretrained: bool = False,
             progress: bool = False, train_data: Callable[[int], tuple[np.ndarray, np.ndarray]] | None = None,
             eval_at: Sequence[int] = ()) -> tuple[Module, History, dict]:
    """Fine-tune ``base`` (the shipped GPT or a copy; changed in place) on :data:`minilora.data.HELDOUT_TASK`.

    Parameters
    ----------
    base : GPT
        The model to start from, e.g. ``minilora.load_base_model()``.
    peft_config : None, ``"full"``, LoraConfig or another registered PEFT config
        The method (see the module docstring); ``quantization`` with a LoraConfig is QLoRA.
    recipe : Recipe
        How to train (default ``Recipe()``).
    quantization : QuantizationConfig or None
        Store the base in 4 bits first (:func:`~minilora.peft.quantize_base`), as PEFT's QLoRA does.
    include_step0 : bool
        Put the evaluation of the model as training starts (after the method is applied, before any step) at
        the front of the history as step 0: the base model's output unless the method changes it at init.
    pretrained : bool
        Also measure the mean exact match over :data:`minilora.data.PRETRAIN_TASKS` before and after (what
        fine-tuning does to the skills the base model had); eight extra 512-sequence forwards.
    train_data : callable or None
        ``train_data(i) -> (idx, targets)``, micro-batch ``i`` of ``recipe.batch_size`` sequences, instead of the
        recipe's stream (e.g. epochs over a fixed set of examples); None: :func:`minilora.data.heldout_train_data`
        with the recipe's batch size and seed.
    eval_at : sequence of int
        Also evaluate after these steps (each in 1 … ``recipe.steps``), besides ``recipe.eval_every``'s.

    Returns
    -------
    model : Module
        The trained model (``base`` itself, or the method's wrapper around it).
    history : History
        Per-step loss, learning rate, gradient norm, tokens per second; held-out loss and accuracies at each
        evaluation (``eval_metrics``: ``exact_match``, ``token_acc``).
    report : dict
        ``method``, ``lr``, ``trainable`` and ``total`` (PEFT's counts,
        :func:`~minilora.peft.count_parameters`: 4-bit weights by their elements), ``exact_match_before`` /
        ``_after``, ``token_acc_before`` / ``_after``, ``loss_before`` / ``_after`` (held-out cross-entropy of
        the base and of the trained model), ``seconds`` (training wall clock) and, with ``pretrained``,
        ``pretrained_before`` / ``pretrained_after``.
    """
    recipe = Recipe() if recipe is None else recipe
    if not isinstance(recipe, Recipe):
        raise TypeError(f"recipe must be a Recipe or None, got {type(recipe).__name__}")
    method = method_of(peft_config, quantization)
    if train_data is None:
        train_data = data.heldout_train_data(recipe.batch_size, seed=recipe.seed)
    elif not callable(train_data):
        raise TypeError(f"train_data must be a callable i -> (idx, targets) or None, got {type(train_data).__name__}")
    elif recipe.steps and (n := len(train_data(0)[0])) != recipe.batch_size:
        raise ValueError(f"train_data(0) has {n} sequences, recipe.batch_size is {recipe.batch_size}")
    eval_batch = data.heldout_eval_batch()
    before = data.accuracy(base, *eval_batch)
    report: dict = {"method": method, "lr": recipe.lr_for(method)}
    loss_before = evaluate(base, eval_batch)
    if pretrained:
        report["pretrained_before"] = pretrained_skill(base)
    model = prepare(base, peft_config, quantization, seed=recipe.seed)
    if include_step0:  # the model as training starts
        start = (evaluate(model, eval_batch), data.accuracy(model, *eval_batch))
    t0 = time.perf_counter()
    hist = train(
        model,
        train_data,
        recipe.make_optimizer(model, method),
        recipe.make_schedule(method),
        steps=recipe.steps,
        grad_accum=recipe.grad_accum,
        eval_every=recipe.eval_every,
        eval_data=eval_batch,
        eval_fn=lambda m: data.accuracy(m, *eval_batch),
        max_grad_norm=recipe.max_grad_norm,
        progress=progress,
        desc=f"finetune ({method})",
        eval_at=eval_at,
    )
    seconds = time.perf_counter() - t0
    if recipe.steps:
        loss_after, after = hist.eval_loss[-1], hist.eval_metrics[-1]
    else:
        loss_after, after = evaluate(model, eval_batch), data.accuracy(model, *eval_batch)
    if include_step0:
        hist.eval_step.insert(0, 0)
        hist.eval_loss.insert(0, start[0])
        hist.eval_metrics.insert(0, start[1])
    trainable, total = count_parameters(model)
    report.update(
        trainable=trainable,
        total=total,
        exact_match_before=before["exact_match"],
        exact_match_after=after["exact_match"],
        token_acc_before=before["token_acc"],
        token_acc_after=after["token_acc"],
        loss_before=loss_before,
        loss_after=loss_after,
        seconds=seconds,
    )
    if pretrained:
        report["pretrained_after"] = pretrained_skill(model)
    return model, hist, report


def pretrained_skill(model: Module) -> float:
    """Mean exact match of ``model`` over the pretraining tasks (:data:`minilora.data.PRETRAIN_TASKS`)."""
    return float(np.mean([data.exact_match(model, task) for task in data.PRETRAIN_TASKS]))


__all__ = ["ADAPTER_CONFIGS", "DEFAULT_LR", "METHODS", "METHOD_DEFAULTS", "OPTIMIZERS", "PEFT_TYPE_METHOD",
           "QUANT_OPTIONS", "Recipe", "finetune", "method_config", "method_of", "prepare", "pretrained_skill",
           "step_seconds"]
