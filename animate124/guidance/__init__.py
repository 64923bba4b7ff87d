"""animate124.guidance: SDS guidance terms (``term(images [B,F,3,H,W], ctx) -> GuidanceOutput``).

- ``base.GuidanceTerm``: the protocol, ``base.TermInputs``: what every term is built from (``Term(cfg, inputs)``);
- ``factory.TERMS`` / ``build_terms``: the one table of terms; ``sds``: pure SDS math; ``models.load``: the one
  loading path;
- the terms: ``stable_diffusion.StableDiffusionGuidance``, ``zero123.Zero123Guidance``, ``video.VideoSDS``,
  ``image_video.ImageVideoGuidance``, ``controlnet.ControlNetTileGuidance``; ``analytic.AnalyticGuidance`` (tests).
"""
