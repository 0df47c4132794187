"""Tiny random-weight image-to-video pipelines, saved as real diffusers model folders.

Each builder constructs the pipeline's own classes from small configs (the shapes follow
diffusers' own fast pipeline tests), builds every tokenizer from a vocabulary written here (no
hub access), and saves with save_pretrained, so DiffusersGenerator loads them exactly as it
would load downloaded weights. Each runs two denoising steps on a CPU in about a second.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

LETTERS = "abcdefghijklmnopqrstuvwxyz0123456789"


def char_tokenizer(max_length: int, specials: tuple[str, ...] = ()) -> Any:
    """A T5/Llama-style fast tokenizer whose vocabulary is the alphabet: one token per letter,
    `<pad>` 0, `</s>` 1, `<unk>` 2, then `specials` (kept whole) after the letters."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2, **{c: i + 3 for i, c in enumerate(LETTERS)}}
    for token in specials:
        vocab[token] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.add_special_tokens(list(specials))
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>",
                                   bos_token="</s>", model_max_length=max_length)


def t5_encoder(umt5: bool = False) -> Any:
    """A one-layer T5 encoder 32 wide (LTX, CogVideoX), or UMT5 (Wan's multilingual T5)."""
    from transformers import T5Config, T5EncoderModel, UMT5Config, UMT5EncoderModel

    config_cls, model_cls = (UMT5Config, UMT5EncoderModel) if umt5 else (T5Config, T5EncoderModel)
    config = config_cls(vocab_size=3 + len(LETTERS), d_model=32, d_ff=37, d_kv=8, num_heads=4, num_layers=1,
                        relative_attention_num_buckets=8, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)
    return model_cls(config).eval()  # eval: dropout off, so a seed reproduces


def clip_vision(hidden: int, image_size: int) -> tuple[Any, Any]:
    """Wan 2.1's image encoder (CLIP ViT, penultimate hidden states) and its processor."""
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel

    config = CLIPVisionConfig(hidden_size=hidden, num_hidden_layers=2, num_attention_heads=2, image_size=image_size,
                              intermediate_size=16, patch_size=1)
    return CLIPVisionModel(config).eval(), CLIPImageProcessor(crop_size=image_size, size=image_size)


def _save(pipe: Any, folder: Path) -> Path:
    pipe.save_pretrained(folder)
    return folder


# ---- Wan 2.1 / 2.2 ---------------------------------------------------------------------------


def _wan_vae(**kw: Any) -> Any:
    from diffusers import AutoencoderKLWan

    return AutoencoderKLWan(base_dim=3, dim_mult=[1, 1, 1, 1], num_res_blocks=1, temperal_downsample=[False, True, True],
                            **{"z_dim": 16, **kw})


def _wan_transformer(**kw: Any) -> Any:
    from diffusers import WanTransformer3DModel

    return WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, text_dim=32, freq_dim=256, ffn_dim=32,
        num_layers=2, cross_attn_norm=True, qk_norm="rms_norm_across_heads", rope_max_seq_len=32,
        **{"in_channels": 36, "out_channels": 16, **kw},
    )


def _wan(folder: Path, **parts: Any) -> Path:
    from diffusers import FlowMatchEulerDiscreteScheduler, WanImageToVideoPipeline

    torch.manual_seed(0)
    components = {"vae": _wan_vae(), "scheduler": FlowMatchEulerDiscreteScheduler(shift=5.0),
                  "text_encoder": t5_encoder(umt5=True), "tokenizer": char_tokenizer(512),
                  "image_encoder": None, "image_processor": None, "transformer_2": None, **parts}
    return _save(WanImageToVideoPipeline(**components), folder)


def save_tiny_wan21_i2v(folder: Path) -> Path:
    """Wan 2.1 I2V-14B's layout: a CLIP image encoder beside the UMT5 text encoder."""
    torch.manual_seed(0)
    encoder, processor = clip_vision(hidden=4, image_size=32)
    return _wan(folder, transformer=_wan_transformer(image_dim=4), image_encoder=encoder, image_processor=processor)


def save_tiny_wan_flf2v(folder: Path) -> Path:
    """Wan 2.1 FLF2V-14B's layout: as I2V, with position embeddings for a first and a last image."""
    torch.manual_seed(0)
    encoder, processor = clip_vision(hidden=4, image_size=4)
    transformer = _wan_transformer(image_dim=4, pos_embed_seq_len=2 * (4 * 4 + 1))
    return _wan(folder, transformer=transformer, image_encoder=encoder, image_processor=processor)


def save_tiny_wan22_a14b(folder: Path) -> Path:
    """Wan 2.2 I2V-A14B's layout: two experts, the high-noise one until `boundary_ratio`."""
    torch.manual_seed(0)
    return _wan(folder, transformer=_wan_transformer(), transformer_2=_wan_transformer(), boundary_ratio=0.875)


def save_tiny_wan22_ti2v_5b(folder: Path) -> Path:
    """Wan 2.2 TI2V-5B's layout: the 16x-compressing VAE with 48 latent channels, one expert,
    and the start image as the first latent frame (expand_timesteps)."""
    torch.manual_seed(0)
    vae = _wan_vae(z_dim=48, in_channels=12, out_channels=12, is_residual=True, patch_size=2,
                   latents_mean=[0.0] * 48, latents_std=[1.0] * 48, scale_factor_spatial=16, scale_factor_temporal=4)
    return _wan(folder, vae=vae, transformer=_wan_transformer(in_channels=48, out_channels=48), expand_timesteps=True)


# ---- LTX-Video -------------------------------------------------------------------------------


def _ltx_parts() -> dict[str, Any]:
    from diffusers import AutoencoderKLLTXVideo, FlowMatchEulerDiscreteScheduler, LTXVideoTransformer3DModel

    torch.manual_seed(0)
    transformer = LTXVideoTransformer3DModel(in_channels=8, out_channels=8, patch_size=1, patch_size_t=1,
                                             num_attention_heads=4, attention_head_dim=8, cross_attention_dim=32,
                                             num_layers=1, caption_channels=32)
    vae = AutoencoderKLLTXVideo(
        in_channels=3, out_channels=3, latent_channels=8, block_out_channels=(8, 8, 8, 8),
        decoder_block_out_channels=(8, 8, 8, 8), layers_per_block=(1, 1, 1, 1, 1),
        decoder_layers_per_block=(1, 1, 1, 1, 1), spatio_temporal_scaling=(True, True, True, False),
        decoder_spatio_temporal_scaling=(True, True, True, False), decoder_inject_noise=(False,) * 5,
        upsample_residual=(False,) * 4, upsample_factor=(1,) * 4, timestep_conditioning=False,
        patch_size=4, patch_size_t=1, encoder_causal=True, decoder_causal=False,
    )
    return {"transformer": transformer, "vae": vae, "scheduler": FlowMatchEulerDiscreteScheduler(),
            "text_encoder": t5_encoder(), "tokenizer": char_tokenizer(256)}


def save_tiny_ltx_i2v(folder: Path) -> Path:
    from diffusers import LTXImageToVideoPipeline

    return _save(LTXImageToVideoPipeline(**_ltx_parts()), folder)


def save_tiny_ltx_condition(folder: Path) -> Path:
    from diffusers import LTXConditionPipeline

    return _save(LTXConditionPipeline(**_ltx_parts()), folder)


# ---- CogVideoX -------------------------------------------------------------------------------


def save_tiny_cogvideox_i2v(folder: Path) -> Path:
    from diffusers import AutoencoderKLCogVideoX, CogVideoXImageToVideoPipeline, CogVideoXTransformer3DModel, DDIMScheduler

    torch.manual_seed(0)
    # 3D RoPE needs a head dim divisible by 16; heads x dim must equal the text encoder's width.
    transformer = CogVideoXTransformer3DModel(
        num_attention_heads=2, attention_head_dim=16, in_channels=8, out_channels=4, time_embed_dim=2,
        text_embed_dim=32, num_layers=1, sample_width=2, sample_height=2, sample_frames=9, patch_size=2,
        temporal_compression_ratio=4, max_text_seq_length=226, use_rotary_positional_embeddings=True,
        use_learned_positional_embeddings=True,
    )
    vae = AutoencoderKLCogVideoX(
        in_channels=3, out_channels=3, down_block_types=("CogVideoXDownBlock3D",) * 4,
        up_block_types=("CogVideoXUpBlock3D",) * 4, block_out_channels=(8, 8, 8, 8), latent_channels=4,
        layers_per_block=1, norm_num_groups=2, temporal_compression_ratio=4,
    )
    pipe = CogVideoXImageToVideoPipeline(transformer=transformer, vae=vae, scheduler=DDIMScheduler(),
                                         text_encoder=t5_encoder(), tokenizer=char_tokenizer(226))
    return _save(pipe, folder)


# ---- HunyuanVideo-I2V ------------------------------------------------------------------------

HUNYUAN_SPECIALS = ("<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>", "<image>")


def save_tiny_hunyuan_i2v(folder: Path) -> Path:
    """HunyuanVideo-I2V: a LLaVA text encoder that also sees the start image (24x24 = 576 image
    tokens, as the pipeline's prompt template expects), a CLIP text encoder, latent-concat image
    conditioning."""
    from diffusers import (
        AutoencoderKLHunyuanVideo,
        FlowMatchEulerDiscreteScheduler,
        HunyuanVideoImageToVideoPipeline,
        HunyuanVideoTransformer3DModel,
    )
    from transformers import (
        CLIPImageProcessor,
        CLIPTextConfig,
        CLIPTextModel,
        CLIPTokenizer,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
    )

    torch.manual_seed(0)
    transformer = HunyuanVideoTransformer3DModel(
        in_channels=2 * 4 + 1, out_channels=4, num_attention_heads=2, attention_head_dim=10, num_layers=1,
        num_single_layers=1, num_refiner_layers=1, patch_size=2, patch_size_t=1, guidance_embeds=False,
        text_embed_dim=16, pooled_projection_dim=8, rope_axes_dim=(2, 4, 4), image_condition_type="latent_concat",
    )
    vae = AutoencoderKLHunyuanVideo(
        in_channels=3, out_channels=3, latent_channels=4, down_block_types=("HunyuanVideoDownBlock3D",) * 4,
        up_block_types=("HunyuanVideoUpBlock3D",) * 4, block_out_channels=(8, 8, 8, 8), layers_per_block=1,
        act_fn="silu", norm_num_groups=4, scaling_factor=0.476986, spatial_compression_ratio=8,
        temporal_compression_ratio=4, mid_block_add_attention=True,
    )
    tokenizer = char_tokenizer(1024, HUNYUAN_SPECIALS)
    image_token = tokenizer.convert_tokens_to_ids("<image>")
    text = LlamaConfig(hidden_size=16, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2,
                       vocab_size=len(tokenizer), bos_token_id=1, eos_token_id=1, pad_token_id=0)
    vision = CLIPVisionConfig(hidden_size=8, intermediate_size=37, projection_dim=32, num_attention_heads=4,
                              num_hidden_layers=2, image_size=336, patch_size=14)
    llava = LlavaForConditionalGeneration(LlavaConfig(vision_config=vision, text_config=text, pad_token_id=0,
                                                      image_token_index=image_token)).eval()
    clip_vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in LETTERS:
        clip_vocab[c], clip_vocab[c + "</w>"] = len(clip_vocab), len(clip_vocab) + 1
    words = folder.parent / f"{folder.name}-clip-words"
    words.mkdir(parents=True, exist_ok=True)
    (words / "vocab.json").write_text(json.dumps(clip_vocab), encoding="utf-8")
    (words / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
    clip_text = CLIPTextModel(CLIPTextConfig(vocab_size=len(clip_vocab), hidden_size=8, intermediate_size=37,
                                             num_attention_heads=4, num_hidden_layers=1, projection_dim=32,
                                             max_position_embeddings=77, bos_token_id=0, eos_token_id=1,
                                             pad_token_id=1)).eval()
    pipe = HunyuanVideoImageToVideoPipeline(
        transformer=transformer, vae=vae, scheduler=FlowMatchEulerDiscreteScheduler(shift=7.0),
        text_encoder=llava, tokenizer=tokenizer, text_encoder_2=clip_text,
        tokenizer_2=CLIPTokenizer(str(words / "vocab.json"), str(words / "merges.txt"), model_max_length=77),
        image_processor=CLIPImageProcessor(crop_size=336, size=336),
    )
    return _save(pipe, folder)


BUILDERS = {
    "wan21_i2v": save_tiny_wan21_i2v,
    "wan_flf2v": save_tiny_wan_flf2v,
    "wan22_a14b": save_tiny_wan22_a14b,
    "wan22_ti2v_5b": save_tiny_wan22_ti2v_5b,
    "ltx_i2v": save_tiny_ltx_i2v,
    "ltx_condition": save_tiny_ltx_condition,
    "cogvideox_i2v": save_tiny_cogvideox_i2v,
    "hunyuan_i2v": save_tiny_hunyuan_i2v,
}


def save_tiny_wan_lora(model_dir: Path, out: Path, seed: int = 1) -> Path:
    """A random LoRA for the tiny Wan transformer, in the diffusers LoRA file format (as a
    lightx2v or style LoRA is shipped); random B matrices so it visibly changes the output."""
    from diffusers import WanImageToVideoPipeline, WanTransformer3DModel
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    transformer = WanTransformer3DModel.from_pretrained(model_dir / "transformer", local_files_only=True)
    torch.manual_seed(seed)
    transformer.add_adapter(LoraConfig(r=4, lora_alpha=4, init_lora_weights=False,
                                       target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    out.mkdir(parents=True, exist_ok=True)
    WanImageToVideoPipeline.save_lora_weights(out, transformer_lora_layers=get_peft_model_state_dict(transformer))
    return out / "pytorch_lora_weights.safetensors"
