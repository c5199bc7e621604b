"""A steady load for the GPU: square matrix products, synchronised every ~``chunk_s`` of work,
so that a window's host clock brackets the device's work."""

from __future__ import annotations

import time

MATMUL_N = 8192
CHUNK_S = 0.05


class MatmulLoad:
    def __init__(self, device_index: int = 0, n: int = MATMUL_N) -> None:
        import torch

        self.torch, self.device, self.n = torch, torch.device("cuda", device_index), n
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        self.dtype_name = str(dtype).removeprefix("torch.")
        self.a, self.b = (torch.randn(n, n, device=self.device, dtype=dtype) for _ in range(2))
        self.c = torch.empty_like(self.a)
        self.chunk = 1
        torch.cuda.synchronize(self.device)

    def products(self, count: int) -> None:
        for _ in range(count):
            self.torch.matmul(self.a, self.b, out=self.c)
        self.torch.cuda.synchronize(self.device)

    def calibrate(self, chunk_s: float = CHUNK_S) -> None:
        """Warm up (cuBLAS handle, kernel selection, clocks) and size a chunk to ``chunk_s``."""
        self.products(3)
        began = time.perf_counter()
        self.products(10)
        self.chunk = max(1, round(chunk_s / ((time.perf_counter() - began) / 10)))

    def run_for(self, seconds: float) -> int:
        """Products until ``seconds`` have passed (to within one chunk); how many ran."""
        began, done = time.perf_counter(), 0
        while time.perf_counter() - began < seconds:
            self.products(self.chunk)
            done += self.chunk
        return done

    def tflops(self, products: int, seconds: float) -> float:
        return 2 * self.n**3 * products / seconds / 1e12

    def release(self) -> None:
        del self.a, self.b, self.c
        self.torch.cuda.empty_cache()
