"""accelopt."""
