"""The ``cpu`` target: TVM Relax for x86 with accelopt's own schedules (``kernels/``: the heavy ops)."""
