"""Parameter-efficient fine-tuning: LoRA (config, layer, injection, adapter files) and QLoRA (4-bit base,
memory accounting, paged optimizers); prompt tuning, p-tuning, prefix tuning / p-tuning v2 (PEFT's prompt
learning, :mod:`minilora.peft.prompt_learning`) and bottleneck adapters (:mod:`minilora.peft.adapters`). Each of
these methods has a config class and ``apply(model, config, seed)`` in its own module.

The names follow PEFT (``get_peft_model``, ``LoraConfig``, ``r``, ``lora_alpha``, ``target_modules``,
``modules_to_save``, ``merge_and_unload``, ``unload``, ``disable_adapter``, ``print_trainable_parameters``) so a
student who moves to the real library finds the same words.
"""

from minilora.peft.adapter_io import adapter_files, adapter_nbytes, load_adapter, read_adapter, save_adapter
from minilora.peft.adapters import (
    BlockWithAdapters,
    BnConfig,
    BottleneckAdapter,
    DoubleSeqBnConfig,
    SeqBnConfig,
    adapter_parameter_count,
    unload_adapters,
)
from minilora.peft.adapters_io import load_adapters, save_adapters
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
from minilora.peft.p_tuning import PromptEncoder, PromptEncoderConfig, p_tuning_parameter_count
from minilora.peft.paged import DeviceMemory, PagedAdam, PagedAdamW
from minilora.peft.prefix_tuning import (
    PrefixEncoder,
    PrefixTuningConfig,
    PrefixTuningModel,
    prefix_tuning_parameter_count,
)
from minilora.peft.prompt_io import load_prompt_adapter, save_prompt_adapter
from minilora.peft.prompt_learning import PromptLearningConfig, PromptLearningModel
from minilora.peft.prompt_tuning import PromptEmbedding, PromptTuningConfig, prompt_tuning_parameter_count
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
    # prompt learning
    "PrefixEncoder", "PrefixTuningConfig", "PrefixTuningModel", "PromptEmbedding", "PromptEncoder",
    "PromptEncoderConfig", "PromptLearningConfig", "PromptLearningModel", "PromptTuningConfig", "load_prompt_adapter",
    "p_tuning_parameter_count", "prefix_tuning_parameter_count", "prompt_tuning_parameter_count",
    "save_prompt_adapter",
    # bottleneck adapters
    "BlockWithAdapters", "BnConfig", "BottleneckAdapter", "DoubleSeqBnConfig", "SeqBnConfig",
    "adapter_parameter_count", "load_adapters", "save_adapters", "unload_adapters",
]
