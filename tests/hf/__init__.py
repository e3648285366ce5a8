"""Hugging Face layouts: GPT-2 checkpoints, the tokenizer, adapters PEFT loads, quant-eval."""
