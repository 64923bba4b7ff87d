"""animate124.metrics: PSNR (image.py), CLIP-T, R-precision, CLIP-I, temporal consistency (clip.py), LPIPS flicker
(lpips.py) and the run evaluation behind ``python -m animate124.metrics`` (report.py)."""
