"""Tiny, randomly initialised TiRex / Chronos checkpoints, built offline in the packages' own formats.

Why: the adapters must be tested and benchmarked without the network and without shipping third-party
weights (TiRex's licence is not OSI; Chronos checkpoints are hundreds of MB). A tiny model exercises
exactly the code a real one does -- the same package classes, the same checkpoint files, the same
``from_pretrained`` loaders -- only with fewer, untrained weights. Their forecasts are meaningless; the
adapters' contracts (shapes, causality, stream == batch, local-only loading) are not.

Every builder is seeded and leaves the global torch RNG as it was.
"""

from __future__ import annotations

import os
from pathlib import Path

from sage.models.adapters.chronos import _quiet_transformers
from sage.models.forecaster import QUANTILE_LEVELS


def build_tiny_tirex(
    directory: str | os.PathLike[str],
    *,
    seed: int = 0,
    embedding_dim: int = 16,
    num_heads: int = 2,
    num_blocks: int = 2,
    patch_size: int = 8,
    ff_dim: int = 32,
    train_ctx_len: int = 128,
) -> Path:
    """Write ``directory/model.ckpt`` for a small ``TiRexZero`` and return the directory.

    ``TiRexZero`` allocates its sLSTM gate projections, recurrent kernel and bias with ``torch.empty``
    (the released weights overwrite them), so they are initialised here: small normal weights and a
    forget-gate bias of 3..6 across the head dimension (xLSTM's "power-law" choice), so the memory cell
    keeps information over the context, as in a trained model. The checkpoint has the released layout,
    ``{"hyper_parameters": {"model_config", "train_ctx_len"}, "state_dict"}``.
    """
    import torch
    from tirex.models.tirex import TiRexZero

    model_config = {
        "input_patch_size": patch_size,
        "output_patch_size": patch_size,
        "quantiles": list(QUANTILE_LEVELS),
        "block_kwargs": {"num_blocks": num_blocks, "embedding_dim": embedding_dim, "num_heads": num_heads},
        "input_ff_dim": ff_dim,
    }
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = TiRexZero(backend="torch", model_config=model_config, train_ctx_len=train_ctx_len)
        head_dim = embedding_dim // num_heads
        with torch.no_grad():
            for block in model.blocks:
                layer = block.slstm_layer
                for gate in (layer.fgate, layer.igate, layer.zgate, layer.ogate):
                    torch.nn.init.normal_(gate.weight, std=head_dim**-0.5)
                cell = layer.slstm_cell
                torch.nn.init.normal_(cell._recurrent_kernel_, std=0.1 * head_dim**-0.5)
                bias = torch.zeros(num_heads, 4, head_dim)  # (heads, gates i/f/z/o, head_dim)
                bias[:, 1, :] = torch.linspace(3.0, 6.0, head_dim)
                cell._bias_.copy_(bias.reshape(-1))
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    checkpoint = {
        "hyper_parameters": {"model_config": model_config, "train_ctx_len": train_ctx_len},
        "state_dict": model.state_dict(),
    }
    torch.save(checkpoint, out / "model.ckpt")
    return out


def build_tiny_chronos_bolt(
    directory: str | os.PathLike[str],
    *,
    seed: int = 0,
    d_model: int = 32,
    d_ff: int = 64,
    num_layers: int = 1,
    num_heads: int = 2,
    context_length: int = 128,
    prediction_length: int = 16,
    patch_size: int = 8,
    output_scale: float = 0.01,
) -> Path:
    """``save_pretrained`` a small Chronos-Bolt (T5 encoder-decoder with patch embeddings and a quantile
    head) to ``directory`` (``config.json`` + ``model.safetensors``) and return the directory.

    The config mirrors the released ``amazon/chronos-bolt-*`` ones at toy sizes: architecture
    ``ChronosBoltModelForForecasting``, pipeline ``ChronosBoltPipeline``, quantiles 0.1..0.9. The quantile
    head's weights are multiplied by ``output_scale`` (see below).
    """
    import torch
    from chronos.chronos_bolt import ChronosBoltModelForForecasting
    from transformers import T5Config

    config = T5Config(
        d_model=d_model,
        d_ff=d_ff,
        d_kv=d_model // num_heads,
        num_layers=num_layers,
        num_decoder_layers=num_layers,
        num_heads=num_heads,
        dropout_rate=0.0,
        feed_forward_proj="relu",
        vocab_size=2,
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
        architectures=["ChronosBoltModelForForecasting"],
        chronos_pipeline_class="ChronosBoltPipeline",
        chronos_config={
            "context_length": context_length,
            "prediction_length": prediction_length,
            "input_patch_size": patch_size,
            "input_patch_stride": patch_size,
            "quantiles": list(QUANTILE_LEVELS),
            "use_reg_token": True,
        },
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = ChronosBoltModelForForecasting(config).eval()
        with torch.no_grad():
            # Damp the quantile head: at its default init the random head emits quantiles ~100 context
            # standard deviations apart (negative prices); damped, forecasts stay near the context's level.
            head = model.output_patch_embedding
            for layer in (head.output_layer, head.residual_layer):
                layer.weight.mul_(output_scale)
    out = Path(directory)
    with _quiet_transformers():
        model.save_pretrained(out)
    return out


def build_tiny_chronos_t5(
    directory: str | os.PathLike[str],
    *,
    seed: int = 0,
    d_model: int = 32,
    d_ff: int = 64,
    num_layers: int = 1,
    num_heads: int = 2,
    n_tokens: int = 256,
    context_length: int = 128,
    prediction_length: int = 16,
    num_samples: int = 20,
    value_range: tuple[float, float] = (0.8, 1.2),
) -> Path:
    """``save_pretrained`` a small original Chronos (T5 language model over mean-scaled, binned values,
    forecasting by sampling token paths) to ``directory`` and return it.

    The config mirrors ``amazon/chronos-t5-*`` (``MeanScaleUniformBins`` tokenizer, 2 special tokens,
    seq2seq, top-k 50 sampling at temperature 1) except the tokenizer's ``value_range``: the released
    models bin mean-scaled values over [-15, 15], and an untrained model samples roughly uniformly over
    the bins, i.e. mostly negative prices; over (0.8, 1.2) of the context's mean absolute value its
    sampled paths stay positive prices.
    """
    import torch
    from transformers import T5Config, T5ForConditionalGeneration

    config = T5Config(
        d_model=d_model,
        d_ff=d_ff,
        d_kv=d_model // num_heads,
        num_layers=num_layers,
        num_decoder_layers=num_layers,
        num_heads=num_heads,
        dropout_rate=0.0,
        vocab_size=n_tokens,
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
        architectures=["T5ForConditionalGeneration"],
        chronos_pipeline_class="ChronosPipeline",
        chronos_config={
            "tokenizer_class": "MeanScaleUniformBins",
            "tokenizer_kwargs": {"low_limit": value_range[0], "high_limit": value_range[1]},
            "context_length": context_length,
            "prediction_length": prediction_length,
            "n_tokens": n_tokens,
            "n_special_tokens": 2,
            "pad_token_id": 0,
            "eos_token_id": 1,
            "use_eos_token": True,
            "model_type": "seq2seq",
            "num_samples": num_samples,
            "temperature": 1.0,
            "top_k": 50,
            "top_p": 1.0,
        },
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = T5ForConditionalGeneration(config).eval()
    out = Path(directory)
    with _quiet_transformers():
        model.save_pretrained(out)
    return out
