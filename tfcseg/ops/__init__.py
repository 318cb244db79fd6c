"""tfcseg's registered ops and their kernels.

library.py  the `tfcseg` op library and schemas
msda.py     multi-scale deformable attention: the op (PyTorch kernel, fake kernel, autograd)
            and the MSDeformAttn module
attention.py softmax attention op for SegFormer's encoder (compiled CPU fast path)
build.py    compiles `csrc/cpu/*.cpp` once into a cached library and loads it
"""
