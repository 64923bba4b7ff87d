"""animate124.guidance: SDS guidance terms (``term(images [B,F,3,H,W], ctx) -> GuidanceOutput``).

- ``base.GuidanceTerm``: the protocol; ``sds``: pure SDS math; ``models.load``: the one loading path;
- ``stable_diffusion.StableDiffusionGuidance``, ``zero123.Zero123Guidance``, ``analytic.AnalyticGuidance``.
"""
