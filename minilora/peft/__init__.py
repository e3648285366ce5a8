"""Parameter-efficient fine-tuning: LoRA (config, layer, injection, adapter files) and QLoRA (4-bit base,
memory accounting, paged optimizers).

The names follow PEFT (``get_peft_model``, ``LoraConfig``, ``r``, ``lora_alpha``, ``target_modules``,
``modules_to_save``, ``merge_and_unload``, ``unload``, ``disable_adapter``, ``print_trainable_parameters``) so a
student who moves to the real library finds the same words.
"""

from minilora.peft.adapter_io import adapter_files, adapter_nbytes, load_adapter, read_adapter, save_adapter
from minilora.peft.config import INIT_CHOICES, LoraConfig, lora_parameter_count, lora_scaling
from minilora.peft.inject import (
    disable_adapter,
    find_targets,
    inject_lora,
    lora_modules,
    merge_and_unload,
    merge_lora,
    unload,
    unmerge_lora,
)
from minilora.peft.lora import LoRALinear, init_lora_matrices
from minilora.peft.mapping import count_parameters, get_peft_model, print_trainable_parameters, trainable_parameters
from minilora.peft.memory import MemoryBreakdown, ModelShape, estimate, format_table, measure
from minilora.peft.paged import DeviceMemory, PagedAdam, PagedAdamW
from minilora.peft.qlora import Linear4bit, QLoRALinear, QuantizedWeight, merge_rounding_error, prepare_qlora

__all__ = [
    "INIT_CHOICES",
    "LoRALinear",
    "LoraConfig",
    "adapter_files",
    "adapter_nbytes",
    "count_parameters",
    "disable_adapter",
    "find_targets",
    "get_peft_model",
    "init_lora_matrices",
    "inject_lora",
    "load_adapter",
    "lora_modules",
    "lora_parameter_count",
    "lora_scaling",
    "merge_and_unload",
    "merge_lora",
    "print_trainable_parameters",
    "read_adapter",
    "save_adapter",
    "trainable_parameters",
    "unload",
    "unmerge_lora",
    # QLoRA
    "DeviceMemory", "Linear4bit", "MemoryBreakdown", "ModelShape", "PagedAdam", "PagedAdamW", "QLoRALinear",
    "QuantizedWeight", "estimate", "format_table", "measure", "merge_rounding_error", "prepare_qlora",
]
