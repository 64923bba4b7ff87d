"""Peak GPU memory and time per phase, estimated on CPU by tracing one step on fake tensors (``python -m
animate124.estimate``). Modules: ``arch`` (full-size meta builders), ``tracer`` (live bytes, FLOPs, bytes moved),
``steps`` / ``phase_steps`` (the traced steps), ``render_model`` (renderer + field byte model), ``gpus`` (roofline),
``core`` (per-phase estimates), ``levers`` (memory levers and the ``gpu_memory_gb`` planner)."""
