"""The ``fpga`` target: int8 layers compiled to VTA programs, simulated bit-exactly, timed by a cycle model."""
