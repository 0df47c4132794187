"""Tiny FunASR models with random weights, saved the way ModelScope ships the real ones
(config.yaml, model.pt, tokens.json, am.mvn), so FunAsrTranscriber loads them through
funasr.AutoModel from local directories exactly as it loads paraformer-zh, fsmn-vad and ct-punc.

The recogniser is a real BiCifParaformer (the class behind paraformer-zh's timestamps) a few
thousand parameters big. Two weights are set by hand so the output has a known shape: the VAD
calls every frame speech, and the punctuation model adds no marks inside a sentence (FunASR then
ends it with 。).
"""

from __future__ import annotations

import json
from pathlib import Path

VOCAB = list("今天气很好我们去公园")
FEATURES = 80  # mel bins, as in the real models
ASR_LFR = 7  # frames stacked per step: 80 x 7 = 560 inputs
VAD_LFR = 5
SANM_ENCODER = {
    "output_size": 16, "attention_heads": 2, "linear_units": 32, "num_blocks": 1, "dropout_rate": 0.0,
    "positional_dropout_rate": 0.0, "attention_dropout_rate": 0.0, "input_layer": "pe",
    "pos_enc_class": "SinusoidalPositionEncoder", "normalize_before": True, "kernel_size": 11, "sanm_shfit": 0,
    "selfattention_layer_type": "sanm",
}


def build(root: Path) -> dict[str, Path]:
    """Write the three model directories under `root`; returns {"asr", "vad", "punc"} -> dir."""
    import funasr.models.bicif_paraformer.model  # noqa: F401  (registers the classes)
    import funasr.models.ct_transformer.model  # noqa: F401
    import funasr.models.fsmn_vad_streaming.model  # noqa: F401
    import torch
    from funasr.register import tables

    torch.manual_seed(0)
    dirs = {name: root / name for name in ("asr", "vad", "punc")}
    for d in dirs.values():
        d.mkdir(parents=True, exist_ok=True)

    tokens = ["<blank>", "<s>", "</s>", *VOCAB, "<unk>"]
    asr = {
        "model": "BiCifParaformer",
        "model_conf": {"ctc_weight": 0.0, "predictor_weight": 1.0, "predictor_bias": 1, "sampling_ratio": 0.75},
        "encoder": "SANMEncoder", "encoder_conf": SANM_ENCODER,
        "decoder": "ParaformerSANMDecoder",
        "decoder_conf": {"attention_heads": 2, "linear_units": 32, "num_blocks": 1, "dropout_rate": 0.0,
                         "positional_dropout_rate": 0.0, "self_attention_dropout_rate": 0.0,
                         "src_attention_dropout_rate": 0.0, "att_layer_num": 1, "kernel_size": 11, "sanm_shfit": 0},
        "predictor": "CifPredictorV3",
        "predictor_conf": {"idim": 16, "threshold": 1.0, "l_order": 1, "r_order": 1, "tail_threshold": 0.45,
                           "smooth_factor2": 0.25, "noise_threshold2": 0.01, "upsample_times": 3,
                           "use_cif1_cnn": False, "upsample_type": "cnn_blstm"},
        "frontend": "WavFrontend",
        "frontend_conf": {"fs": 16000, "window": "hamming", "n_mels": FEATURES, "frame_length": 25,
                          "frame_shift": 10, "lfr_m": ASR_LFR, "lfr_n": 6},
        "input_size": FEATURES * ASR_LFR,
        "tokenizer": "CharTokenizer", "tokenizer_conf": {"unk_symbol": "<unk>", "split_with_space": True},
        "ctc_conf": {"dropout_rate": 0.0},
    }
    model = tables.model_classes[asr["model"]](
        **{k: asr[k] for k in ("encoder", "encoder_conf", "decoder", "decoder_conf", "predictor", "predictor_conf",
                               "ctc_conf", "input_size")},
        **asr["model_conf"], vocab_size=len(tokens),
    )
    _save(dirs["asr"], asr, model.state_dict(), tokens, FEATURES * ASR_LFR)

    vad = {
        "model": "FsmnVADStreaming", "model_conf": {"sample_rate": 16000, "max_end_silence_time": 800},
        "encoder": "FSMN",
        "encoder_conf": {"input_dim": FEATURES * VAD_LFR, "input_affine_dim": 8, "fsmn_layers": 1, "linear_dim": 8,
                         "proj_dim": 8, "lorder": 2, "rorder": 0, "lstride": 1, "rstride": 0,
                         "output_affine_dim": 8, "output_dim": 4},
        "frontend": "WavFrontendOnline",
        "frontend_conf": {"fs": 16000, "window": "hamming", "n_mels": FEATURES, "frame_length": 25,
                          "frame_shift": 10, "dither": 0.0, "lfr_m": VAD_LFR, "lfr_n": 1},
    }
    weights = tables.model_classes[vad["model"]](
        encoder=vad["encoder"], encoder_conf=vad["encoder_conf"], **vad["model_conf"]).state_dict()
    # Output 0 is the silence class: zero weights and a very low bias make every frame speech.
    weights["encoder.out_linear2.linear.weight"].zero_()
    weights["encoder.out_linear2.linear.bias"].copy_(torch.tensor([-20.0, 0.0, 0.0, 0.0]))
    _save(dirs["vad"], vad, weights, None, FEATURES * VAD_LFR)

    punc_tokens = ["<unk>", "<s>", "</s>", *VOCAB]
    marks = ["<unk>", "_", "，", "。", "？", "、"]  # "_": no mark after this token
    punc = {
        "model": "CTTransformer",
        "model_conf": {"ignore_id": 0, "embed_unit": 16, "att_unit": 16, "dropout_rate": 0.0, "punc_list": marks,
                       "sentence_end_id": 3},
        "encoder": "SANMEncoder", "encoder_conf": {**SANM_ENCODER, "input_size": 16, "padding_idx": 0},
        "tokenizer": "CharTokenizer", "tokenizer_conf": {"unk_symbol": "<unk>"},
    }
    weights = tables.model_classes[punc["model"]](
        encoder=punc["encoder"], encoder_conf=punc["encoder_conf"], vocab_size=len(punc_tokens),
        **punc["model_conf"]).state_dict()
    weights["decoder.weight"].zero_()
    weights["decoder.bias"].copy_(torch.tensor([0.0, 10.0, 0.0, 0.0, 0.0, 0.0]))
    _save(dirs["punc"], punc, weights, punc_tokens, None)
    return dirs


def _save(folder: Path, config: dict, weights: dict, tokens: list[str] | None, cmvn_dim: int | None) -> None:
    import torch
    import yaml  # comes with funasr

    (folder / "config.yaml").write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    torch.save(weights, folder / "model.pt")
    if tokens is not None:
        (folder / "tokens.json").write_text(json.dumps(tokens, ensure_ascii=False), encoding="utf-8")
    if cmvn_dim is not None:  # Kaldi nnet text: a shift of 0 and a scale of 0.1 per input
        zeros, scales = " ".join(["0"] * cmvn_dim), " ".join(["0.1"] * cmvn_dim)
        (folder / "am.mvn").write_text(
            f"<Nnet>\n<Splice> {cmvn_dim} {cmvn_dim}\n[ 0 ]\n"
            f"<AddShift> {cmvn_dim} {cmvn_dim}\n<LearnRateCoef> 0 [ {zeros} ]\n"
            f"<Rescale> {cmvn_dim} {cmvn_dim}\n<LearnRateCoef> 0 [ {scales} ]\n</Nnet>\n",
            encoding="utf-8",
        )
