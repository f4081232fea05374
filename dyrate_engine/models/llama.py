"""The Llama-family text decoder (Llama / Vicuna, Mistral, Qwen2) that the engine runs itself.

gpt-fast style: plain tensors and functions, the weights shared with the transformers model that
loaded them. Layers are run in ranges so the engine can stop after the monitor layer K-1, prune,
and go on (docs/DESIGN.md, data flow). Numerics follow transformers: RMSNorm in fp32 then cast, RoPE
angles in fp32, softmax attention through SDPA.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import torch
import torch.nn.functional as F

from .. import ops as _ops  # registers torch.ops.dyrate.*
from ..ops.packed_linear import PackedWeights
from ..ops.prefill_linear import DECODE_ROWS, PrefillWeights
from .rope import mrope_layout, rope_cos_sin, rope_parameters

# The Qwen2-VL / Qwen2.5-VL text models are Qwen2 layers with M-RoPE (rope.py); Qwen3-VL's are
# Qwen3 layers (RMSNorm on each head's query and key) with interleaved M-RoPE.
SUPPORTED_TEXT_MODELS = ("llama", "mistral", "qwen2", "qwen2_vl_text", "qwen2_5_vl_text",
                         "qwen3_vl_text")


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None):
    """The decoder's linears and LM head: on the CPU ``dyrate.decode_linear`` (a decode step's
    few rows at weight bandwidth, where BLAS is 2-3x slower; see its docstring), else F.linear."""
    if not _has_cpu_kernels(x):
        return F.linear(x, weight, bias)
    return torch.ops.dyrate.decode_linear.default(x, weight, bias)


#: Whether the prefill's causal attention uses ``dyrate.causal_attention`` on the CPU (fp32 only:
#: in bf16 / fp16 SDPA multiplies in the half type, with AMX where the CPU has it). A switch for
#: measuring the kernel against SDPA in one process.
CPU_CAUSAL_ATTENTION = True


def _has_cpu_kernels(x: torch.Tensor) -> bool:
    """The C++ kernels serve CPU tensors. Elsewhere the decoder calls the references directly,
    so torch.compile sees (and fuses) their ops instead of an opaque custom op."""
    return x.device.type == "cpu" and _ops.EXTENSION_LOADED


@dataclass
class LayerWeights:
    """q/k/v and gate/up live in one fused matrix each (``qkv``, ``gate_up``): one matmul instead
    of three or two, which matters for the few-row matmuls of a decode step. ``q``, ``k``, ``v``
    and ``up`` are views of them, kept for their shapes."""

    qkv: torch.Tensor
    qkv_bias: torch.Tensor | None
    gate_up: torch.Tensor
    gate_up_bias: torch.Tensor | None
    input_norm: torch.Tensor
    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    o: torch.Tensor
    post_norm: torch.Tensor
    up: torch.Tensor
    down: torch.Tensor
    o_bias: torch.Tensor | None = None
    down_bias: torch.Tensor | None = None
    sliding_window: int | None = None
    q_norm: torch.Tensor | None = None  # Qwen3: RMSNorm over each head's query, before RoPE
    k_norm: torch.Tensor | None = None

    @cached_property
    def kv(self) -> torch.Tensor:
        """The key and value rows of ``qkv`` (one view, the same object on every call: the
        prefill's packed copies are keyed by it)."""
        return self.qkv[self.q.shape[0]:]


class LlamaDecoder:
    """Weights and forward functions of the text model. Shapes: ``d`` hidden size, ``H``/``Hkv``
    query/key heads, ``hd`` head dim."""

    def __init__(self, text_config, language_model: torch.nn.Module, lm_head: torch.Tensor):
        model_type = text_config.model_type
        if model_type not in SUPPORTED_TEXT_MODELS:
            raise ValueError(f"text model {model_type!r} is not supported; supported: "
                             f"{', '.join(SUPPORTED_TEXT_MODELS)}")
        act = getattr(text_config, "hidden_act", "silu")
        if act != "silu":
            raise ValueError(f"hidden_act {act!r} is not supported (only silu)")
        self.config = text_config
        self.n_layers = text_config.num_hidden_layers
        self.n_heads = text_config.num_attention_heads
        self.n_kv_heads = text_config.num_key_value_heads or self.n_heads
        self.head_dim = getattr(text_config, "head_dim", None) or (
            text_config.hidden_size // self.n_heads)
        self.eps = text_config.rms_norm_eps
        self.inv_freq, self.rope_scaling = rope_parameters(text_config)
        self.mrope = mrope_layout(text_config)
        self.embed_tokens = language_model.embed_tokens.weight.detach()
        self.norm = language_model.norm.weight.detach()
        self.lm_head = lm_head.detach()
        self.vocab_size = self.lm_head.shape[0]
        self.parallel = None  # a TensorParallel once sharded (sharding.py): its layers all-reduce
        self.packed = PackedWeights()  # filled by the engine for a decode's row count
        self.prefill_packed = PrefillWeights()  # filled by the engine at load
        self.intermediate_size = text_config.intermediate_size
        windows = sliding_windows(text_config)
        self.layers = [_layer_weights(layer, windows[i])
                       for i, layer in enumerate(language_model.layers)]
        self.dtype = self.embed_tokens.dtype
        self.device = self.embed_tokens.device
        self.inv_freq = self.inv_freq.to(self.device)

    def linear(self, x, weight, bias=None):
        """:func:`linear`, through the weight's packed copy where it has one for x's rows:
        oneDNN's for a prefill's many rows, MKL's for a decode step's row count."""
        if x.numel() > DECODE_ROWS * x.shape[-1]:
            return self.prefill_packed.linear(x, weight, bias, linear)
        return self.packed.linear(x, weight, bias, linear)

    def prefill_weights(self) -> list[torch.Tensor]:
        """The matrices a prefill multiplies by every prompt row: each layer's four, and the last
        layer's key and value rows, which are all it needs for every row (``qkv``'s
        ``last_query_only``; the LM head sees only the last row)."""
        return [w for layer in self.layers for w in (layer.qkv, layer.o, layer.gate_up,
                                                     layer.down)] + [self.layers[-1].kv]

    def linear_weights(self) -> list[torch.Tensor]:
        """Every matrix :meth:`linear` multiplies: each layer's four and the LM head."""
        return self.prefill_weights() + [self.lm_head]

    def rms_norm(self, x, weight):
        if _has_cpu_kernels(x):
            return torch.ops.dyrate.rms_norm.default(x, weight, self.eps)
        return _ops.rms_norm_reference(x, weight, self.eps)

    def add_rms_norm(self, x, residual, weight):
        """``(x + residual, rms_norm(x + residual))``."""
        if _has_cpu_kernels(x):
            return torch.ops.dyrate.add_rms_norm.default(x, residual, weight, self.eps)
        return _ops.add_rms_norm_reference(x, residual, weight, self.eps)

    @staticmethod
    def rope_heads(x, cos, sin):
        """RoPE of ``x [B, T, heads, hd]`` into ``[B, heads, T, hd]``."""
        if _has_cpu_kernels(x):
            return torch.ops.dyrate.rope.default(x, cos, sin)
        return _ops.rope_reference(x, cos, sin)

    @staticmethod
    def causal_attention(q, k, v):
        """A prompt's causal attention, ``q [B, H, T, hd]`` over ``k``, ``v [B, Hkv, T, hd]``."""
        if CPU_CAUSAL_ATTENTION and _has_cpu_kernels(q) and q.dtype == torch.float32 \
                and not (torch.is_grad_enabled() and q.requires_grad):
            return torch.ops.dyrate.causal_attention.default(q, k, v, None)
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)

    @staticmethod
    def silu_mul(gate_up):
        # fp32 only: in bf16 / fp16 PyTorch's own AVX-512 SiLU was faster than the kernel's AVX2
        # one (dyrate bench ops, python_bench/RESULTS.md).
        if _has_cpu_kernels(gate_up) and gate_up.dtype == torch.float32:
            return torch.ops.dyrate.silu_mul.default(gate_up)
        return _ops.silu_mul_reference(gate_up)

    def rope(self, positions):
        """cos, sin ``[B, T, hd]`` for positions ``[B, T]``, or for M-RoPE ``[3, B, T]``
        (``[B, T]`` then means text: the same position on the three axes)."""
        if self.mrope is not None and positions.dim() == 2:
            positions = positions[None].expand(3, -1, -1)
        return rope_cos_sin(positions, self.inv_freq, self.rope_scaling, self.dtype, self.mrope)

    def qkv(self, layer: LayerWeights, h, cos, sin, last_query_only: bool = False):
        """Normed projections with RoPE: q ``[B, H, T, hd]``, k and v ``[B, Hkv, T, hd]`` (v a
        view of the projection; its consumers copy it or read it strided). With
        ``last_query_only``, q is the last token's only (``[B, H, 1, hd]``): the model's last
        layer reads no other query."""
        x = self.rms_norm(h, layer.input_norm)
        B, T, _ = x.shape
        n_q, n_k = layer.q.shape[0], layer.k.shape[0]
        bias = layer.qkv_bias
        if last_query_only and T > 1:
            q = self.linear(x[:, -1:], layer.q, None if bias is None else bias[:n_q])
            k, v = self.linear(x, layer.kv, None if bias is None else bias[n_q:]).split(
                [n_k, layer.v.shape[0]], dim=-1)
            q_cos, q_sin = cos[..., -1:, :], sin[..., -1:, :]
        else:
            q, k, v = self.linear(x, layer.qkv, bias).split([n_q, n_k, layer.v.shape[0]], dim=-1)
            q_cos, q_sin = cos, sin
        q = q.reshape(B, q.shape[1], self.n_heads, self.head_dim)
        k = k.reshape(B, T, self.n_kv_heads, self.head_dim)
        if layer.q_norm is not None:
            q, k = self.rms_norm(q, layer.q_norm), self.rms_norm(k, layer.k_norm)
        v = v.reshape(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)
        return self.rope_heads(q, q_cos, q_sin), self.rope_heads(k, cos, sin), v

    def finish_layer(self, layer: LayerWeights, h, attn):
        """Output projection and MLP around attention output ``attn [B, H, T, hd]``."""
        B, _, T, _ = attn.shape
        o = self.linear(attn.transpose(1, 2).reshape(B, T, -1), layer.o, layer.o_bias)
        h, x = self.add_rms_norm(self._summed(o), h, layer.post_norm)
        gate_up = self.linear(x, layer.gate_up, layer.gate_up_bias)
        return h + self._summed(self.linear(self.silu_mul(gate_up), layer.down, layer.down_bias))

    def _summed(self, partial):
        """A row-parallel linear's output: each rank's partial sum, summed over the ranks."""
        return partial if self.parallel is None else self.parallel.all_reduce(partial)

    def logits(self, h):
        logits = self.linear(self.rms_norm(h, self.norm), self.lm_head)
        if self.parallel is not None:  # each rank's vocabulary rows, gathered; padding cut
            logits = self.parallel.all_gather(logits, -1)[..., :self.vocab_size]
        return logits.float()


def sliding_windows(cfg) -> list[int | None]:
    """Each layer's sliding attention window (None: full attention)."""
    window = getattr(cfg, "sliding_window", None)
    if cfg.model_type.startswith("qwen2"):  # Qwen2 and its VL text models name each layer's kind
        types = getattr(cfg, "layer_types", None) or ["full_attention"] * cfg.num_hidden_layers
        return [window if t == "sliding_attention" else None for t in types]
    return [window] * cfg.num_hidden_layers


def fused_rows(parts):
    """One matrix (and bias) of several ``(weight, bias)`` parts stacked by rows, and a view of
    each part into it (biases all present or all None)."""
    weight = torch.cat([w for w, _ in parts])
    bias = None if parts[0][1] is None else torch.cat([b for _, b in parts])
    views, start = [], 0
    for w, _ in parts:
        views.append(weight[start:start + w.shape[0]])
        start += w.shape[0]
    return weight, bias, views


def _fuse(modules):
    """:func:`fused_rows` of several linears; each module's weight becomes its view, so the
    fused copy costs no memory."""
    weight, bias, views = fused_rows([(m.weight.detach(), None if m.bias is None
                                       else m.bias.detach()) for m in modules])
    for m, view in zip(modules, views):
        m.weight.data = view
    return weight, bias, views


def _layer_weights(layer, window) -> LayerWeights:
    attn, mlp = layer.self_attn, layer.mlp
    bias = lambda m: None if m.bias is None else m.bias.detach()  # noqa: E731

    def norm(name):
        return getattr(attn, name).weight.detach() if hasattr(attn, name) else None

    qkv, qkv_bias, (q, k, v) = _fuse([attn.q_proj, attn.k_proj, attn.v_proj])
    gate_up, gate_up_bias, (_, up) = _fuse([mlp.gate_proj, mlp.up_proj])
    return LayerWeights(
        qkv=qkv, qkv_bias=qkv_bias, gate_up=gate_up, gate_up_bias=gate_up_bias,
        input_norm=layer.input_layernorm.weight.detach(),
        q=q, k=k, v=v, o=attn.o_proj.weight.detach(),
        post_norm=layer.post_attention_layernorm.weight.detach(),
        up=up, down=mlp.down_proj.weight.detach(),
        o_bias=bias(attn.o_proj), down_bias=bias(mlp.down_proj), sliding_window=window,
        q_norm=norm("q_norm"), k_norm=norm("k_norm"),
    )
