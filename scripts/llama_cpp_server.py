#!/usr/bin/env python3
"""llama-cpp-python's OpenAI-compatible server (`python -m llama_cpp.server`), the peer of
`tessera serve` in scripts/bench_serve.sh, with llama.cpp's extra buffer types off.

On Intel Xeons with AMX running as a KVM guest, llama.cpp's AMX matmul path segfaults on the first
decode (upstream llama.cpp issue #20824; ../shared/bench/README.md). Setting
`llama_model_params.use_extra_bufts = False` keeps the weights in the plain CPU buffer (the
AVX-512/VNNI kernels run); for SmolLM2's Q4_1 weights that turns off AMX and nothing else. Pass
--extra-bufts to keep llama.cpp's defaults. Every other argument goes to llama_cpp.server.
"""
import sys

import llama_cpp.llama_cpp as lib

if "--extra-bufts" in sys.argv:
    sys.argv.remove("--extra-bufts")
else:
    _default = lib.llama_model_default_params

    def _without_extra_bufts():
        p = _default()
        p.use_extra_bufts = False
        return p

    lib.llama_model_default_params = _without_extra_bufts

from llama_cpp.server.__main__ import main  # noqa: E402 (after the patch)

sys.exit(main())
