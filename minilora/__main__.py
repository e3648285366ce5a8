"""Command line: ``python -m minilora {figures,pretrain,finetune,quant-eval,info} ...``.

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


def _cmd_finetune(args: argparse.Namespace) -> int:
    if args.base is not None:  # a Hugging Face GPT-2 checkpoint and a text file
        from minilora.experiments.gpt2 import run_finetune

        return run_finetune(args)
    from pathlib import Path

    import minilora
    from minilora.lora_experiments import finetune_gpt
    from minilora.peft import LoraConfig, adapter_nbytes, print_trainable_parameters, save_adapter

    try:
        if args.targets is None:  # QLoRA puts LoRA on every linear layer; LoRA's usual default is q and v
            args.targets = ["all-linear"] if args.method == "qlora" else ["q_proj", "v_proj"]
        one = len(args.targets) == 1 and args.targets[0] == "all-linear"
        targets = "all-linear" if one else tuple(args.targets)
        alpha = int(args.alpha) if float(args.alpha).is_integer() else args.alpha  # PEFT writes an int
        init = {"default": True, "false": False}.get(args.init, args.init)
        config = LoraConfig(r=args.r, lora_alpha=alpha, lora_dropout=args.dropout, target_modules=targets,
                            init_lora_weights=init, use_rslora=args.rslora)
        if args.save is not None and Path(args.save).is_file():
            raise ValueError(f"--save must be a directory, got the file {args.save!r}")
        base = minilora.load_base_model()
        if args.method == "qlora":
            from minilora.qlora_experiments import finetune_qlora, memory_table

            table = memory_table(base, config, batch_size=args.batch_size, seed=args.seed)
            model, _, report = finetune_qlora(base, config, steps=args.steps, lr=args.lr or 1e-2,
                                              batch_size=args.batch_size, seed=args.seed, progress=True)
        else:
            model, _, report = finetune_gpt(base, args.method, config, steps=args.steps, lr=args.lr,
                                            batch_size=args.batch_size, seed=args.seed, progress=True)
    except (ValueError, TypeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    lora_desc = f" (r={config.r}, lora_alpha={config.lora_alpha}, targets={config.target_modules})"
    print(f"method: {args.method}" + (lora_desc
                                      if args.method in ("lora", "qlora") else " (every parameter)"))
    print_trainable_parameters(model)  # PEFT's count: a 4-bit weight by its elements
    if args.method in ("lora", "qlora"):  # a QLoRA adapter is a LoRA adapter file (the base is re-quantized)
        if args.save:
            path = save_adapter(model, args.save)
            size = sum(f.stat().st_size for f in Path(path).iterdir())
            print(f"adapter: {size:,d} bytes on disk ({path})")
        else:
            print(f"adapter: {adapter_nbytes(model):,d} bytes (not written; --save DIR writes it)")
    if args.method == "qlora":
        from minilora.peft.memory import format_table
        from minilora.peft.qlora import quantized_modules

        qs = list(quantized_modules(model).values())
        n4 = sum(q.quant_state.numel for q in qs)
        bits = 8 * sum(q.packed.nbytes + q.quant_state.stats_nbytes for q in qs) / n4
        print(f"base: {len(qs)} linear layers in NF4 + double quantization (blocksize {qs[0].blocksize}), "
              f"{bits:.3f} bits per parameter measured (4.127 for tensors of a multiple of 16384), BF16 compute")
        print(f"memory after one AdamW step, batch {args.batch_size} (bytes of the real arrays):")
        print(format_table(table))
        from minilora.peft.memory import paper_comparison

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

    p = sub.add_parser("finetune",
                       help="fine-tune the shipped base GPT on the held-out task (LoRA, QLoRA or full)")
    p.add_argument("--method", choices=("lora", "qlora", "full"), default="lora",
                   help="lora, qlora (4-bit NF4 base, prints the memory table) or full")
    p.add_argument("--r", type=int, default=8, help="LoRA rank (default 8)")
    p.add_argument("--alpha", type=float, default=16, help="lora_alpha (default 16)")
    p.add_argument("--targets", nargs="+", default=None, metavar="NAME",
                   help="module names, a regex, or all-linear (default: q_proj v_proj; all-linear for qlora)")
    p.add_argument("--dropout", type=float, default=0.0, help="lora_dropout (default 0)")
    p.add_argument("--rslora", action="store_true", help="scale by alpha/sqrt(r) (rsLoRA)")
    p.add_argument("--init", default="default",
                   choices=("default", "false", "gaussian", "pissa", "olora", "zero_A", "zeros", "random"),
                   help="init_lora_weights (default: PEFT's, A Kaiming-uniform and B = 0; false: PEFT's False, "
                        "both Kaiming-uniform)")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--lr", type=float, default=None, help="AdamW lr (default 1e-2 LoRA, 1e-3 full)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--save", metavar="DIR", default=None,
                   help="lora/qlora: write the adapter (PEFT format) to DIR; full: write DIR/model.npz (GPT.save); "
                        "with --base: the adapter for GPT2LMHeadModel, or the whole checkpoint (full)")
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
