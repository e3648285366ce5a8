"""Command line: ``python -m minilora {figures,pretrain,finetune,quant-eval,info} ...``.

``finetune`` is :func:`minilora.experiments.recipe.finetune` with one :class:`~minilora.experiments.recipe.Recipe`
for every method (``--method lora|qlora|full|prompt|ptuning|prefix|adapter``).

Each subcommand lives in a small ``_cmd_*`` function; the library never imports this module.
"""

from __future__ import annotations

import argparse
import platform
import sys
from collections.abc import Sequence


def _cmd_figures(args: argparse.Namespace) -> int:
    import os

    if "numpy" not in sys.modules:
        # One BLAS thread (read by OpenBLAS when NumPy loads, so before the first import): the trained
        # figures' round-off then does not depend on the machine's core count. It is also the faster choice
        # for the tiny models they train.
        for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[var] = "1"
    import matplotlib

    matplotlib.use("Agg")  # files only, no windows
    from minilora import figures

    registry = figures.load_all()
    if args.list:
        width = max(map(len, registry))
        for spec in registry.values():
            blog = f"  [blog: {spec.blog_name}]" if spec.blog_name else ""
            trained = "  (trained: compared within tolerance)" if spec.trained else ""
            print(f"{spec.name:<{width}}  {spec.description}{blog}{trained}")
        return 0
    try:
        outcomes = figures.render_many(args.names, args.out, args.blog_names)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for outcome in outcomes:
        print(outcome)
    return 0


#: LoRA options whose argparse default is a value (not None): given for another method only if changed
LORA_DEFAULTS = {"r": 8, "lora_alpha": 16.0, "lora_dropout": 0.0, "use_rslora": False, "init_lora_weights": "default"}


def _cmd_info(args: argparse.Namespace) -> int:
    import matplotlib
    import numpy
    import scipy

    import minilora
    from minilora import backend

    print(f"minilora   {minilora.__version__}")
    print(f"python     {platform.python_version()} ({platform.machine()})")
    print(f"numpy      {numpy.__version__}")
    print(f"scipy      {scipy.__version__}")
    print(f"matplotlib {matplotlib.__version__}")
    try:
        import cupy  # noqa: F401

        cupy_version = cupy.__version__
    except ImportError:
        cupy_version = "not installed (pip install 'minilora[gpu]')"
    print(f"cupy       {cupy_version}")
    try:
        print(f"backend    {backend.name()}")
    except ImportError as err:
        print(f"backend    unavailable: {err}")
        return 1
    return 0


def _cmd_pretrain(args: argparse.Namespace) -> int:
    import time

    from minilora import base_model, data

    t0 = time.perf_counter()
    model, hist = base_model.pretrain(steps=args.steps, seed=args.seed, progress=not args.quiet)
    out = args.out or base_model.ASSET
    model.save(out)
    print(f"pretrained {model.num_params()} parameters in {len(hist.step)} steps, "
          f"{time.perf_counter() - t0:.1f} s; final loss {hist.loss[-1]:.4f}; wrote {out}")
    for task in data.TASKS:
        acc = data.accuracy(model, *data.task_batch(task, 512, seed=2024))
        tag = "held out" if task == data.HELDOUT_TASK else "pretrained"
        print(f"  {task:<10} ({tag:>10}) exact match {acc['exact_match']:.3f}  "
              f"token acc {acc['token_acc']:.3f}")
    return 0


#: the command-line options of each method, by the config's option names (:data:`ARG_OF` maps the few whose
#: flag is shorter to their argparse dest)
METHOD_OPTIONS = {
    "full": (),
    "lora": ("r", "lora_alpha", "target_modules", "lora_dropout", "use_rslora", "init_lora_weights"),
    "prompt": ("num_virtual_tokens", "prompt_tuning_init", "prompt_tuning_init_text"),
    "ptuning": ("num_virtual_tokens", "encoder_reparameterization_type", "encoder_hidden_size"),
    "prefix": ("num_virtual_tokens", "prefix_projection", "encoder_hidden_size"),
    "adapter": ("adapter_config", "reduction_factor", "non_linearity"),
}
METHOD_OPTIONS["qlora"] = METHOD_OPTIONS["lora"] + ("quant_type", "blocksize")
ARG_OF = {"lora_alpha": "alpha", "target_modules": "targets", "lora_dropout": "dropout", "use_rslora": "rslora",
          "init_lora_weights": "init"}


def _arg(args: argparse.Namespace, option: str):
    return getattr(args, ARG_OF.get(option, option))


def _method_options(args: argparse.Namespace) -> dict:
    """The options given for ``args.method`` (None: its default); an option of another method is an error."""
    options = {k: _arg(args, k) for k in METHOD_OPTIONS[args.method]}
    if args.method in ("lora", "qlora"):
        if options["target_modules"] is None:  # QLoRA puts LoRA on every linear layer; LoRA's usual default: q, v
            options["target_modules"] = ["all-linear"] if args.method == "qlora" else ["q_proj", "v_proj"]
        tm = options["target_modules"]
        options["target_modules"] = "all-linear" if tm == ["all-linear"] else tuple(tm)
        alpha = options["lora_alpha"]
        options["lora_alpha"] = int(alpha) if float(alpha).is_integer() else alpha  # PEFT writes an int
        options["init_lora_weights"] = {"default": True, "false": False}.get(options["init_lora_weights"],
                                                                            options["init_lora_weights"])
    if args.method == "prompt" and options["prompt_tuning_init"] is not None:
        options["prompt_tuning_init"] = options["prompt_tuning_init"].upper()
    if args.method == "prompt" and options["prompt_tuning_init_text"] is not None:  # digits: this task's tokens
        options["prompt_tuning_init_text"] = tuple(int(c) for c in options["prompt_tuning_init_text"])
    rf = options.get("reduction_factor")
    if rf is not None and float(rf).is_integer():  # AdapterHub writes reduction_factor=16, not 16.0
        options["reduction_factor"] = int(rf)
    if args.method == "ptuning" and options["encoder_reparameterization_type"] is not None:
        options["encoder_reparameterization_type"] = options["encoder_reparameterization_type"].upper()
    others = sorted({o for opts in METHOD_OPTIONS.values() for o in opts} - set(METHOD_OPTIONS[args.method]))
    stray = [o for o in others if _arg(args, o) not in (None, False) and o not in LORA_DEFAULTS]
    stray += [o for o in others if o in LORA_DEFAULTS and _arg(args, o) != LORA_DEFAULTS[o]]
    if stray:
        flags = ", ".join("--" + ARG_OF.get(o, o).replace("_", "-") for o in sorted(stray))
        raise ValueError(f"{flags} do not apply to --method {args.method}")
    return options


def _cmd_finetune(args: argparse.Namespace) -> int:
    if args.base is not None:  # a Hugging Face GPT-2 checkpoint and a text file
        from minilora.experiments.gpt2 import METHODS, run_finetune

        if args.method not in METHODS:
            print(f"error: --base fine-tunes with --method {' | '.join(METHODS)}, got {args.method!r}",
                  file=sys.stderr)
            return 2
        return run_finetune(args)
    from pathlib import Path

    import minilora
    from minilora.experiments.recipe import Recipe, finetune, method_config
    from minilora.peft import adapter_nbytes, print_trainable_parameters, save_adapter

    try:
        peft_config, quantization = method_config(args.method, **_method_options(args))
        recipe = Recipe(steps=args.steps, batch_size=args.batch_size, lr=args.lr, schedule=args.schedule,
                        warmup_steps=args.warmup_steps, weight_decay=args.weight_decay, seed=args.seed)
        if args.save is not None and Path(args.save).is_file():
            raise ValueError(f"--save must be a directory, got the file {args.save!r}")
        base = minilora.load_base_model()
        if args.method == "qlora":  # measured on copies of the base before it is trained
            from minilora.experiments.qlora import memory_table

            table = memory_table(base, peft_config, batch_size=args.batch_size, seed=args.seed)
        model, _, report = finetune(base, peft_config, recipe, quantization=quantization, progress=True)
    except (ValueError, TypeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.method in ("lora", "qlora"):
        desc = f"r={peft_config.r}, lora_alpha={peft_config.lora_alpha}, targets={peft_config.target_modules}"
    else:
        desc = "every parameter" if peft_config is None else repr(peft_config)
    print(f"method: {args.method} ({desc}); {recipe.describe(args.method)}")
    print_trainable_parameters(model)  # PEFT's count: a 4-bit weight by its elements
    if args.method != "full":  # a QLoRA adapter is a LoRA adapter file (the base is quantized again on loading)
        if args.save:
            path = save_adapter(model, args.save)
            size = sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())
            print(f"adapter: {size:,d} bytes on disk ({path})")
        else:
            print(f"adapter: {adapter_nbytes(model):,d} bytes (not written; --save DIR writes it)")
    if args.method == "qlora":
        from minilora.peft.memory import format_table, paper_comparison
        from minilora.peft.qlora import quantized_modules

        qs = list(quantized_modules(model).values())
        n4 = sum(q.quant_state.numel for q in qs)
        bits = 8 * sum(q.packed.nbytes + q.quant_state.stats_nbytes for q in qs) / n4
        print(f"base: {len(qs)} linear layers in {quantization.quant_type.upper()} + double quantization "
              f"(blocksize {qs[0].blocksize}), {bits:.3f} bits per parameter measured (4.127 for tensors of a "
              f"multiple of 16384), BF16 compute")
        print(f"memory after one AdamW step, batch {args.batch_size} (bytes of the real arrays):")
        print(format_table(table))
        print("the same formulas on LLaMA-65B (16-bit weights, 32-bit Adam; QLoRA r=64 all-linear, batch 1 x 512, "
              "checkpointing); QLoRA paper: > 780 GB full vs < 48 GB QLoRA:")
        print(format_table(paper_comparison("65B")))
    elif args.method == "full":
        size = sum(v.nbytes for v in model.params.values())
        print(f"fine-tuned copy: {size:,d} bytes of float32 weights (the whole model)")
        if args.save:
            path = Path(args.save)
            path.mkdir(parents=True, exist_ok=True)
            file = path / "model.npz"
            model.save(file)  # GPT.save: config + state_dict, no pickle
            print(f"model: {file.stat().st_size:,d} bytes on disk ({file}; minilora.load_base_model({str(file)!r}) "
                  "reads it)")
    print(f"held-out task exact match: {report['exact_match_before']:.3f} before -> "
          f"{report['exact_match_after']:.3f} after  (token accuracy {report['token_acc_before']:.3f} -> "
          f"{report['token_acc_after']:.3f})")
    return 0


def _cmd_quant_eval(args: argparse.Namespace) -> int:
    from minilora.experiments.gpt2 import run_quant_eval

    return run_quant_eval(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m minilora", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("figures", help="regenerate figures into figures/ (all, or the named ones)")
    p.add_argument("names", nargs="*", metavar="NAME", help="figure names (default: all; see --list)")
    p.add_argument("--list", action="store_true", help="list the figures and exit")
    p.add_argument("--out", default="figures", metavar="DIR", help="output directory (default: figures)")
    p.add_argument("--blog-names", action=argparse.BooleanOptionalAction, default=True,
                   help="also write each blog figure under the blog's own file name and format (default: yes)")
    p.set_defaults(func=_cmd_figures)

    p = sub.add_parser("pretrain", help="train the shipped base GPT (minilora/assets/base_gpt.npz)")
    p.add_argument("--steps", type=int, default=4000, help="optimizer steps (default: 4000, the shipped recipe)")
    p.add_argument("--seed", type=int, default=0, help="seed (default: 0)")
    p.add_argument("--out", default=None, metavar="PATH", help="output .npz (default: the package asset)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_pretrain)

    p = sub.add_parser("finetune", help="fine-tune the shipped base GPT on the held-out task with one PEFT method "
                                          "(or all its parameters)")
    p.add_argument("--method", choices=("lora", "qlora", "full", "prompt", "ptuning", "prefix", "adapter"),
                   default="lora", help="lora, qlora (4-bit NF4 base, prints the memory table), full, prompt "
                                        "(prompt tuning), ptuning (p-tuning), prefix (prefix tuning / p-tuning v2), "
                                        "adapter (bottleneck adapters)")
    g = p.add_argument_group("lora / qlora")
    g.add_argument("--r", dest="r", type=int, default=LORA_DEFAULTS["r"], help="LoRA rank (default 8)")
    g.add_argument("--alpha", type=float, default=LORA_DEFAULTS["lora_alpha"],
                   help="lora_alpha (default 16)")
    g.add_argument("--targets", nargs="+", default=None, metavar="NAME",
                   help="module names, a regex, or all-linear (default: q_proj v_proj; all-linear for qlora)")
    g.add_argument("--dropout", type=float, default=LORA_DEFAULTS["lora_dropout"],
                   help="lora_dropout (default 0)")
    g.add_argument("--rslora", action="store_true", help="scale by alpha/sqrt(r) (rsLoRA)")
    g.add_argument("--init", default=LORA_DEFAULTS["init_lora_weights"],
                   choices=("default", "false", "gaussian", "pissa", "olora", "zero_A", "zeros", "random"),
                   help="init_lora_weights (default: PEFT's, A Kaiming-uniform and B = 0; false: PEFT's False, "
                        "both Kaiming-uniform)")
    g.add_argument("--quant-type", choices=("nf4", "fp4"), default=None, help="qlora: 4-bit type (default nf4)")
    g.add_argument("--blocksize", type=int, default=None, help="qlora: 4-bit block size (default 64)")
    g = p.add_argument_group("prompt / ptuning / prefix")
    g.add_argument("--num-virtual-tokens", type=int, default=None, metavar="P",
                   help="virtual tokens (default 8; P + 17 must fit the block size 32)")
    g.add_argument("--prompt-init", dest="prompt_tuning_init", choices=("random", "sample_vocab", "text"),
                   default=None, help="prompt: prompt_tuning_init (default random)")
    g.add_argument("--prompt-init-text", dest="prompt_tuning_init_text", default=None, metavar="DIGITS",
                   help="prompt, with --prompt-init text: the digits whose embeddings start the prompt, e.g. 9876")
    g.add_argument("--encoder", dest="encoder_reparameterization_type", choices=("mlp", "lstm"), default=None,
                   help="ptuning: the prompt encoder (default mlp)")
    g.add_argument("--encoder-hidden-size", type=int, default=None, metavar="H",
                   help="ptuning / prefix with --prefix-projection: encoder width (default n_embd)")
    g.add_argument("--prefix-projection", action="store_true",
                   help="prefix: produce the prefix with Embedding -> Linear -> Tanh -> Linear")
    g = p.add_argument_group("adapter")
    g.add_argument("--adapter-config", choices=("double_seq_bn", "seq_bn"), default=None,
                   help="double_seq_bn (Houlsby, two per block; default) or seq_bn (Pfeiffer, one per block)")
    g.add_argument("--reduction-factor", type=float, default=None, help="bottleneck m = n_embd // this (default 16)")
    g.add_argument("--non-linearity", default=None, help="adapter activation (default swish; seq_bn: relu)")
    g = p.add_argument_group("recipe (minilora.experiments.recipe.Recipe)")
    g.add_argument("--steps", type=int, default=300)
    g.add_argument("--lr", type=float, default=None,
                   help="peak learning rate (default per method: minilora.experiments.recipe.DEFAULT_LR)")
    g.add_argument("--batch-size", type=int, default=32)
    g.add_argument("--schedule", choices=("constant", "cosine", "linear"), default="constant")
    g.add_argument("--warmup-steps", type=int, default=0)
    g.add_argument("--weight-decay", type=float, default=0.0)
    g.add_argument("--seed", type=int, default=0)
    p.add_argument("--save", metavar="DIR", default=None,
                   help="write the adapter to DIR (PEFT's layout for lora, qlora, prompt, ptuning, prefix); full: "
                        "write DIR/model.npz (GPT.save); with --base: the adapter for GPT2LMHeadModel, or the whole "
                        "checkpoint (full)")
    p.add_argument("--base", metavar="DIR", default=None,
                   help="a Hugging Face GPT-2 checkpoint directory to fine-tune instead of the shipped base GPT")
    p.add_argument("--text", metavar="FILE", default=None, help="with --base: the UTF-8 text to train on")
    p.add_argument("--block-size", type=int, default=None, metavar="N",
                   help="with --base: tokens per training block (default min(128, n_positions))")
    p.set_defaults(func=_cmd_finetune)

    p = sub.add_parser("quant-eval", help="QLoRA's Table 2 on a GPT-2 checkpoint: held-out perplexity per format")
    p.add_argument("--base", metavar="DIR", required=True, help="a Hugging Face GPT-2 checkpoint directory")
    p.add_argument("--text", metavar="FILE", required=True, help="UTF-8 text; its last 10%% of blocks is scored")
    p.add_argument("--blocksize", type=int, default=64, help="block size of the 4-bit formats (default 64)")
    p.add_argument("--block-size", type=int, default=None, metavar="N",
                   help="tokens per evaluation block (default min(128, n_positions))")
    p.set_defaults(func=_cmd_quant_eval)

    p = sub.add_parser("info", help="print versions and the array backend")
    p.set_defaults(func=_cmd_info)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from minilora import perf

    perf.tune_allocator()  # training steps reuse freed memory instead of faulting it in again (no result changes)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
