"""The autograd-free engine: layers with hand-written backward passes, a tiny GPT, gradient checks.

``functional`` holds the forward/backward pairs, ``module`` the protocol every layer follows,
``modules`` the layers, ``gpt`` the model, ``mlp`` the small regression model and ``gradcheck``
the finite-difference checks.
"""

from minilora.nn.gpt import GPT, GPTConfig
from minilora.nn.module import Module, ModuleList
from minilora.nn.modules import MLP, Block, CausalSelfAttention, Dropout, Embedding, LayerNorm, Linear

__all__ = ["Module", "ModuleList", "Linear", "Embedding", "LayerNorm", "Dropout", "MLP",
           "CausalSelfAttention", "Block", "GPT", "GPTConfig"]
