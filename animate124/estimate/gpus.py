"""Peak rates of the GPUs the time model knows, and the per-op roofline.

Dense (no sparsity) tensor-core FP16/BF16 rates with FP32 accumulation, non-tensor FP32 rates and HBM/GDDR bandwidth,
from the vendors' data sheets:

- H100 SXM5 80 GB: 989 TFLOP/s fp16, 67 TFLOP/s fp32, 3.35 TB/s (NVIDIA H100 Tensor Core GPU datasheet);
- H200 SXM 141 GB: 989 / 67 TFLOP/s, 4.8 TB/s (NVIDIA H200 datasheet);
- A100 SXM 80 GB: 312 / 19.5 TFLOP/s, 2.039 TB/s (NVIDIA A100 datasheet);
- RTX 4090 24 GB: 165.2 TFLOP/s fp16 with fp32 accumulate, 82.6 TFLOP/s fp32, 1.008 TB/s (Ada whitepaper, table 2);
- L4 24 GB: 121 TFLOP/s fp16 (dense), 30.3 TFLOP/s fp32, 300 GB/s (NVIDIA L4 datasheet).

``pcie`` is the host↔device copy rate used for offload costs (PCIe Gen5 x16 ≈ 50 GB/s for H100/H200, Gen4 ≈ 25 GB/s
for the others; pinned memory, about 80 % of the link's rate).
"""

from __future__ import annotations

from dataclasses import dataclass

from animate124.errors import ConfigError


@dataclass(frozen=True)
class GPU:
    name: str
    fp16_flops: float
    fp32_flops: float
    bandwidth: float
    memory_gb: float
    pcie: float


GPUS: dict[str, GPU] = {
    "h100": GPU("H100 SXM", 989e12, 67e12, 3.35e12, 80, 50e9),
    "h200": GPU("H200", 989e12, 67e12, 4.8e12, 141, 50e9),
    "a100": GPU("A100-80G", 312e12, 19.5e12, 2.039e12, 80, 25e9),
    "rtx4090": GPU("RTX 4090", 165.2e12, 82.6e12, 1.008e12, 24, 25e9),
    "l4": GPU("L4", 121e12, 30.3e12, 0.300e12, 24, 25e9),
}
EFFICIENCIES = (1.0, 0.4)
"""The time model is reported at 100 % and at 40 % of the peak rates."""


def gpu(name: str) -> GPU:
    try:
        return GPUS[name.lower().replace("-", "").replace("_", "").replace(" ", "")]
    except KeyError as exc:
        raise ConfigError(f"unknown GPU '{name}'; use one of {', '.join(GPUS)}") from exc


def op_time(flops: float, nbytes: float, elem_size: int, g: GPU) -> float:
    """Roofline time of one op: max(FLOPs / peak rate of its dtype, bytes / bandwidth), seconds."""
    rate = g.fp16_flops if elem_size <= 2 else g.fp32_flops
    return max(flops / rate, nbytes / g.bandwidth)


def ops_time(ops: list[tuple[float, float, int]], g: GPU) -> float:
    """Sum of the per-op rooflines of ``ops`` [(flops, bytes, element size)]."""
    return sum(op_time(f, b, s, g) for f, b, s in ops)
