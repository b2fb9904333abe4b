"""The embedded default "tiny world": a small but real Stable Diffusion stack on scikit-learn's digits.

Public API (see README and ARCHITECTURE.md):
  data      - ``load_world()``: images by split / style / digit, captions, shard sources
  tokenizer - ``clip_tokenizer()``: SD1.x-compatible CLIPTokenizer built offline
  store     - ``load_clip()``, ``load_vae()``, ``load_unet(name)``, ``load_judges()``, ``load_text_encoder()``
  pipeline  - ``load_pipeline(unet="paragon")``: a diffusers StableDiffusionPipeline
  export    - ``ldm_checkpoint(...)``: single-file LDM-layout state dicts for ComfyUI / the webui
"""
